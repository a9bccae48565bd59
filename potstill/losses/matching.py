"""Matching distances of dataset distillation (pure functions).

* :func:`gradient_match_distance` – DC's layer-wise distance between the gradients a network
  gets from a real and from a synthetic batch (Zhao, Mopuri & Bilen, arXiv 2006.05929, eq. 10):
  each weight gradient is reshaped to (output units, rest) and
  ``d(A, B) = sum_i (1 - <A_i, B_i> / (|A_i| |B_i|))``; bias and norm vectors are left out
  (as in the paper's code).
* :func:`mean_embedding_distance` – DM's empirical MMD with a linear kernel: the squared
  distance between the mean embeddings (Zhao & Bilen, arXiv 2110.04181, eq. 4).
* :func:`attention_map` – DataDAM's spatial attention ``sum_c |f_c|^p`` per position, flattened
  and L2-normalised per sample (Sajedi et al., arXiv 2310.00093, eq. 2).
* :func:`trajectory_distance` – MTT's normalised parameter distance (Cazenavette et al.,
  arXiv 2203.11932, eq. 2): ``||theta_hat_{t+N} - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2``
  over all parameters flattened into one vector.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _layer_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    if a.dim() == 1:  # biases and norm scales: not matched
        return a.new_zeros(())
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)
    return (1 - cos).sum()


def gradient_match_distance(g_real: list[torch.Tensor], g_syn: list[torch.Tensor], kind: str = "layerwise") -> torch.Tensor:
    """Distance between two lists of per-parameter gradients (same order and shapes).

    ``kind="layerwise"`` is DC's distance; ``"mse"`` the squared L2 of the concatenated
    gradients; ``"cos"`` one minus the cosine of the concatenated gradients.
    """
    if len(g_real) != len(g_syn):
        raise ValueError(f"{len(g_real)} real gradients but {len(g_syn)} synthetic ones")
    if kind == "layerwise":
        return torch.stack([_layer_distance(a, b) for a, b in zip(g_real, g_syn)]).sum()
    a = torch.cat([g.flatten() for g in g_real])
    b = torch.cat([g.flatten() for g in g_syn])
    if kind == "mse":
        return ((a - b) ** 2).sum()
    if kind == "cos":
        return 1 - (a * b).sum() / (a.norm() * b.norm() + 1e-6)
    raise ValueError(f"unknown gradient distance {kind!r}; choose layerwise, mse or cos")


def mean_embedding_distance(real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
    """``|mean(real) - mean(syn)|^2`` over the batch dimension (rows are samples)."""
    return ((real.flatten(1).mean(0) - syn.flatten(1).mean(0)) ** 2).sum()


def attention_map(features: torch.Tensor, power: float = 4.0) -> torch.Tensor:
    """(B, C, H, W) feature maps -> (B, H*W) unit-norm spatial attention ``sum_c |f|^p``."""
    a = features.abs().pow(power).sum(1).flatten(1)
    return F.normalize(a, p=2, dim=1)


__all__ = ["gradient_match_distance", "mean_embedding_distance", "attention_map"]


def trajectory_distance(student_end: torch.Tensor, expert_start: torch.Tensor, expert_target: torch.Tensor,
                        eps: float = 0.0) -> torch.Tensor:
    """MTT eq. 2 on flat parameter vectors: the student's squared distance to the target expert
    snapshot, divided by how far the expert itself moved (so every start epoch weighs the same)."""
    num = (student_end - expert_target).pow(2).sum()
    den = (expert_start - expert_target).pow(2).sum()
    return num / (den + eps)


def bn_statistic_loss(features: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                      groups: int = 1) -> torch.Tensor:
    """The BN-statistic term of SRe2L (Yin, Xing & Shen, arXiv 2306.13092, eq. 4-5; from DeepInversion):

        R_BN(x) = sum_g ( ||mu(f_g) - running_mean||_2 + ||sigma^2(f_g) - running_var||_2 )

    ``features`` is the input of a BatchNorm layer, (N, C, ...); ``mu``/``sigma^2`` are the per-channel
    mean and biased variance over the batch and every spatial position (what BN itself computes).
    ``groups`` > 1 splits the batch into that many equal consecutive groups, each matched on its own
    (one recovery batch per group, computed in one forward pass); the terms are summed.
    """
    n, c = features.shape[:2]
    if groups < 1 or n % groups:
        raise ValueError(f"a batch of {n} rows cannot be split into {groups} equal groups")
    f = features.reshape(groups, n // groups, c, -1).transpose(1, 2).reshape(groups, c, -1)
    mu = f.mean(-1)
    var = f.var(-1, unbiased=False)
    return ((mu - running_mean).norm(dim=1) + (var - running_var).norm(dim=1)).sum()


__all__ += ["bn_statistic_loss"]
