"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction — Zbontar, Jing, Misra, LeCun &
Deny, ICML 2021, arXiv 2103.03230.

Not a distillation method: it trains the *self-supervised teacher* whose representations KRR-ST
(``potstill/methods/dataset/krr_st.py``, catalog D9) distils - as ``supervised`` trains the
teachers of the other methods. No label is ever read (every training row's label is replaced
by -1; the dataset's unlabeled split is added to the pool).

Two random views of each image, ``A(x)`` and ``A'(x)``, go through the backbone ``f`` (the
student network's ``embed``: the representation that is exported) and a projector ``g``
(Linear -> BatchNorm -> ReLU -> ... -> Linear). With ``z = g(f(A(x)))`` and ``z' = g(f(A'(x)))``
standardised per dimension over the batch, ``C = z^T z' / N`` (eq. 2) and (eq. 1)

    L_BT = sum_i (1 - C_ii)^2 + lambda_BT * sum_i sum_{j != i} C_ij^2

(``potstill.losses.barlow_twins_loss``). Views (written in torch ops, from torch's global RNG so
a resumed run draws the same ones): RandomResizedCrop with area in ``crop_scale``, optional
horizontal flip, brightness / contrast jitter with probability ``jitter_p``, additive Gaussian
noise of std ``noise`` (in normalised units) and optionally a random erased square (``cutout``).

Export: the backbone (a classifier whose linear head is untrained and unused); its ``embed(x)``
is the representation ``t(x)``. Validation reports leave-one-out k-NN accuracy of those
representations within the split (labels read only for that number; ``acc`` is a fraction) and
the mean per-dimension std of the L2-normalised representation (near zero = collapse).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.method import Method
from ...core.registry import METHODS
from ...data import ArrayData
from ...data.augment import random_resized_crop
from ...losses import barlow_twins_loss


@dataclass
class BarlowTwinsConfig:
    projector: list[int] = field(default_factory=lambda: [1024, 1024])  # sizes of the projector's layers
    lambda_bt: float = 5e-3              # weight of the off-diagonal (redundancy) term (paper: 5e-3)
    crop_scale: list[float] = field(default_factory=lambda: [0.3, 1.0])  # RandomResizedCrop area range
    flip: bool = True                    # random horizontal flips (off for digits)
    jitter: float = 0.4                  # brightness shift ~ U(-j, j) and contrast factor ~ U(1-j, 1+j)
    jitter_p: float = 0.8                # probability that an image is jittered
    noise: float = 0.1                   # std of additive Gaussian noise (normalised pixel units)
    cutout: float = 0.0                  # side fraction of a randomly erased square (0: off)
    use_unlabeled: bool = True           # add the dataset's unlabeled split to the training pool
    knn_k: int = 10                      # k of the validation k-NN monitor

    def __post_init__(self):
        if not self.projector or min(self.projector) < 1:
            raise ValueError(f"projector must list >= 1 positive layer sizes, got {self.projector}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be [min, max] with 0 < min <= max <= 1, got {self.crop_scale}")
        if self.lambda_bt < 0 or self.jitter < 0 or self.noise < 0 or not 0 <= self.jitter_p <= 1:
            raise ValueError("need lambda_bt, jitter, noise >= 0 and jitter_p in [0, 1]")
        if not 0 <= self.cutout < 1 or self.knn_k < 1:
            raise ValueError("need cutout in [0, 1) and knn_k >= 1")


def ssl_view(x: torch.Tensor, cfg: BarlowTwinsConfig) -> torch.Tensor:
    """One random view of every image of ``x`` (N, C, H, W)."""
    n = len(x)
    v = random_resized_crop(x, tuple(cfg.crop_scale), flip=cfg.flip)
    if cfg.jitter > 0 and cfg.jitter_p > 0:
        on = (torch.rand(n) < cfg.jitter_p).float().view(-1, 1, 1, 1).to(x.device)
        b = ((torch.rand(n) * 2 - 1) * cfg.jitter).view(-1, 1, 1, 1).to(x.device)
        c = (1 + (torch.rand(n) * 2 - 1) * cfg.jitter).view(-1, 1, 1, 1).to(x.device)
        mean = v.mean(dim=(1, 2, 3), keepdim=True)
        v = on * ((v - mean) * c + mean + b) + (1 - on) * v
    if cfg.noise > 0:
        v = v + cfg.noise * torch.randn(v.shape).to(x.device)
    if cfg.cutout > 0:
        h, w = v.shape[-2:]
        sh, sw = max(1, round(cfg.cutout * h)), max(1, round(cfg.cutout * w))
        cy, cx = torch.randint(0, h, (n,)), torch.randint(0, w, (n,))
        ys, xs = torch.arange(h).view(1, -1, 1), torch.arange(w).view(1, 1, -1)
        inside = ((ys - cy.view(-1, 1, 1)).abs() <= sh // 2) & ((xs - cx.view(-1, 1, 1)).abs() <= sw // 2)
        v = v.masked_fill(inside.unsqueeze(1).to(x.device), 0.0)
    return v


def projector(in_dim: int, sizes: list[int]) -> nn.Sequential:
    """Linear -> BatchNorm1d -> ReLU for every layer but the last, which is a plain Linear."""
    layers: list[nn.Module] = []
    dims = [in_dim, *sizes]
    for i in range(len(sizes)):
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=i == len(sizes) - 1))
        if i < len(sizes) - 1:
            layers += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def representation(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The backbone representation ``t(x)``: ``net.embed(x)`` (flattened) where the net has one."""
    return (net.embed(x) if hasattr(net, "embed") else net(x)).flatten(1)


@torch.no_grad()
def knn_accuracy(feats: torch.Tensor, labels: torch.Tensor, k: int, chunk: int = 1000) -> float:
    """Leave-one-out k-NN accuracy (cosine similarity, majority vote) of labelled rows, as a fraction."""
    keep = labels >= 0
    f, y = F.normalize(feats[keep].float(), dim=1), labels[keep]
    n = len(f)
    if n < 2:
        return float("nan")
    k = min(k, n - 1)
    classes = int(y.max()) + 1
    correct = 0
    for i in range(0, n, chunk):
        sim = f[i:i + chunk] @ f.t()
        rows = torch.arange(i, min(i + chunk, n))
        sim[torch.arange(len(rows)), rows] = -float("inf")          # leave the row itself out
        idx = sim.topk(k, dim=1).indices
        votes = F.one_hot(y[idx], classes).sum(1).float()
        votes += 1e-3 * F.one_hot(y[idx[:, 0]], classes)            # ties go to the nearest neighbour
        correct += int((votes.argmax(1) == y[rows]).sum())
    return correct / n


@METHODS.register("barlow_twins")
class BarlowTwins(Method):
    """Barlow Twins self-supervised training of a backbone (the SSL teacher of KRR-ST); labels never read."""

    Config = BarlowTwinsConfig
    name = "barlow_twins"
    pillar = "kd"
    catalog_ids = ()
    paper = "Barlow Twins: Self-Supervised Learning via Redundancy Reduction (teacher training for KRR-ST)"
    arxiv = "2103.03230"

    def __init__(self, cfg: BarlowTwinsConfig, student: nn.Module, in_shape: tuple[int, ...]):
        super().__init__(cfg)
        self.student = student
        with torch.no_grad():
            was = student.training
            student.eval()
            dim = representation(student, torch.zeros(2, *in_shape)).shape[1]
            student.train(was)
        self.projector = projector(dim, list(cfg.projector))

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, ctx.student(), tuple(ctx.data.in_shape))

    def train_data(self, bundle):
        parts = [bundle.train] + ([bundle.unlabeled] if self.cfg.use_unlabeled and bundle.unlabeled is not None else [])
        x = torch.cat([p.x for p in parts])
        return ArrayData(x, torch.full((len(x),), -1, dtype=torch.long))   # labels are never read

    def param_groups(self):
        return {"encoder": list(self.student.parameters()) + list(self.projector.parameters())}

    def loss(self, batch, step):
        x = batch["x"]
        z1 = self.projector(representation(self.student, ssl_view(x, self.cfg)))
        z2 = self.projector(representation(self.student, ssl_view(x, self.cfg)))
        loss = barlow_twins_loss(z1, z2, self.cfg.lambda_bt)
        return {"encoder": loss}

    @torch.no_grad()
    def evaluate(self, data, batch_size: int = 512):
        device = next(self.student.parameters()).device
        was = self.student.training
        self.student.eval()
        feats = torch.cat([representation(self.student, data.x[i:i + batch_size].to(device)).float().cpu()
                           for i in range(0, len(data), batch_size)])
        self.student.train(was)
        out = {"repr_std": float(F.normalize(feats, dim=1).std(0).mean())}
        if (data.y >= 0).sum() >= 2:
            out["acc"] = knn_accuracy(feats, data.y, self.cfg.knn_k)
        return out

    def export(self):
        return self.student


__all__ = ["BarlowTwins", "BarlowTwinsConfig", "ssl_view", "projector", "representation", "knn_accuracy"]
