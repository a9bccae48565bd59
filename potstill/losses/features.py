"""Feature-matching losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hint_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """FitNets hint loss (Romero et al., arXiv 1412.6550): squared L2 distance between the
    (projected) student feature and the teacher feature, averaged over all elements.

    FitNets writes 1/2 ||u_h - r(v_g)||^2; averaging over elements instead of summing makes the
    weight independent of the feature size. Shapes must match (project first).
    """
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(f"hint_loss: student feature {tuple(student_feat.shape)} != teacher {tuple(teacher_feat.shape)}; project first")
    return F.mse_loss(student_feat.float(), teacher_feat.float())


def masked_patch_mse(pred: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """MAE's reconstruction loss (He et al., arXiv 2111.06377): mean squared error per patch, averaged
    over the *masked* patches only.

    ``pred`` and ``patches`` are (B, N, P) (pixels per patch), ``mask`` (B, N) with True where a patch
    was hidden from the encoder. With ``norm_pix`` each target patch is normalised by its own mean
    and standard deviation first (MAE's "normalized pixels" target).
    """
    target = patches.float()
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = (pred.float() - target).pow(2).mean(-1)
    m = mask.to(per_patch.dtype)
    return (per_patch * m).sum() / m.sum().clamp_min(1.0)


def normalized_l1(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """DMAE's feature alignment (Bai et al., arXiv 2208.12256): L1 between the L2-normalised (over the
    channel dimension) student and teacher features, averaged over all elements. Shapes must match."""
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(f"normalized_l1: student feature {tuple(student_feat.shape)} != teacher "
                         f"{tuple(teacher_feat.shape)}; project first")
    return F.l1_loss(F.normalize(student_feat.float(), dim=-1), F.normalize(teacher_feat.float(), dim=-1))


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float = 5e-3,
                      eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins redundancy-reduction loss (Zbontar et al., arXiv 2103.03230, eq. 1-2).

    Each of the D embedding dimensions of the two views (N, D) is standardised over the batch
    (zero mean, unit *biased* variance, as BatchNorm without affine does; ``eps`` is added to the
    variance), and the cross-correlation matrix is ``C = z1_n^T z2_n / N`` (entries in [-1, 1]):

        L = sum_i (1 - C_ii)^2  +  lambda_offdiag * sum_i sum_{j != i} C_ij^2

    It is zero when the views agree perfectly and the dimensions are decorrelated (C = I).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"barlow_twins_loss: need two (N, D) embeddings of one shape, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    if len(z1) < 2:
        raise ValueError("barlow_twins_loss: the batch must hold at least 2 rows (statistics are over the batch)")
    z1, z2 = z1.float(), z2.float()

    def standardise(z):
        return (z - z.mean(0)) / (z.var(0, unbiased=False) + eps).sqrt()

    c = standardise(z1).t() @ standardise(z2) / len(z1)
    diag = torch.diagonal(c)
    on = (1 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + lambda_offdiag * off
