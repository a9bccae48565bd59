"""Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching (DATM) — Guo,
Wang, Chen, Wang, Zhou & You, ICLR 2024, arXiv 2310.05773 (catalog D6).

MTT's matching, with the *difficulty* of the matched patterns aligned to the size of the
synthetic set, and learnable soft labels:

1. **Matching-range window** (sec. 4.1). Early expert epochs carry easy patterns, late epochs
   hard ones; small sets can only learn easy ones. The start epoch is drawn from
   [``min_start_epoch``, U) where the upper bound grows during distillation (sequential
   generation, as in the authors' code):
       U(it) = min(U_0 + floor((T+ - U_0) * it / ``expansion_end``), T+)
   with U_0 = ``current_max_start_epoch`` and T+ = ``max_start_epoch``. Small IPC -> an early,
   fixed window; large IPC -> a later one that widens (CIFAR-10: IPC 1 [0, 4); IPC 10 [0, 10 -> 20)
   over 1000 iterations; IPC 50 [0, 20 -> 40) over 2000).
2. **Soft labels initialised from the experts** (sec. 4.2). The synthetic images are real images
   that expert 0 at its last epoch (``label_epoch``) classifies correctly; each image's label is
   a learnable logit vector initialised to the mean raw logits of the experts that classify it
   correctly (if none does - a class with fewer correct images than IPC - the mean over all
   experts with the true class's logit swapped in as the largest). The student's inner loss is the soft cross-entropy
       - sum_k softmax(y_i)_k log softmax(f(x_i))_k
   and the logits y are learned with the images (SGD, lr ``lr_y``, momentum 0.9 there: group
   ``labels``). The exported set carries softmax(y) as soft labels (soft-label track, N x K
   floats of label storage).
3. Optionally (``threshold > 0``) an iteration whose matching loss exceeds the threshold moves
   nothing (the authors skip the optimizer step; here its gradients are zero, so momentum still
   carries the previous direction).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.registry import METHODS
from .mtt import MTT, MTTConfig


@dataclass
class DATMConfig(MTTConfig):
    current_max_start_epoch: int = 0   # U_0; 0 = no growth (the window is [min, max) throughout)
    expansion_end: int = 0             # iterations over which U grows from U_0 to max_start_epoch
    soft_labels: bool = True
    label_epoch: int = -1              # expert epoch whose logits select images and initialise labels
    threshold: float = 0.0             # > 0: iterations with a larger matching loss move nothing

    def __post_init__(self):
        super().__post_init__()
        if self.current_max_start_epoch and not self.min_start_epoch < self.current_max_start_epoch <= self.max_start_epoch:
            raise ValueError("current_max_start_epoch must lie in (min_start_epoch, max_start_epoch]")
        if self.expansion_end < 0 or self.threshold < 0:
            raise ValueError("expansion_end and threshold must be >= 0")


@METHODS.register("datm")
class DATM(MTT):
    """Difficulty-aligned trajectory matching: an IPC-dependent, growing window and soft labels."""

    Config = DATMConfig
    name = "datm"
    catalog_ids = ("D6",)
    paper = "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching"
    arxiv = "2310.05773"

    def __init__(self, cfg: DATMConfig, data):
        super().__init__(cfg, data)
        images, logits = self.expert_initialisation(data)
        with torch.no_grad():
            self.images.copy_(images)
        self.label_logits = nn.Parameter(logits) if cfg.soft_labels else None

    # --- 2. images and labels from the experts -------------------------------------------------
    def expert_logits(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        epoch = self.cfg.label_epoch % (self.buffer.epochs + 1)
        with torch.no_grad():
            return self.fnet(self.buffer.snapshot(expert, epoch), x)

    def expert_initialisation(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        ipc, chosen = self.cfg.ipc, []
        for c in range(self.num_classes):
            rows = self.real.rows[c][torch.randperm(len(self.real.rows[c]))]
            x = data.train.x[rows]
            if self.zca is not None:
                x = self.zca.apply(x)
            correct = self.expert_logits(0, x).argmax(1) == c
            order = torch.cat([correct.nonzero().flatten(), (~correct).nonzero().flatten()])  # correct first
            chosen.append(x[order[:ipc]])
        images = torch.cat(chosen).to(self.images)
        logits = torch.stack([self.expert_logits(e, images) for e in range(len(self.buffer))])   # (E, N, K)
        right = (logits.argmax(2) == self.labels.unsqueeze(0)).float()                           # (E, N)
        weight = right / right.sum(0).clamp_min(1)      # mean over the experts that are right ...
        mean = (weight.unsqueeze(2) * logits).sum(0)
        # ... or, for an image no expert gets right (a class with too few correct images), the mean
        # over all experts with the true class's logit swapped with the largest, so the label
        # still names the image's class
        fallback = logits.mean(0)
        top = fallback.argmax(1)
        rows = torch.arange(len(fallback))
        own, best = fallback[rows, self.labels].clone(), fallback[rows, top].clone()
        fallback[rows, top], fallback[rows, self.labels] = own, best
        return images, torch.where(right.sum(0, keepdim=True).T > 0, mean, fallback)

    def extra_groups(self):
        return {"labels": [self.label_logits]} if self.label_logits is not None else {}

    def inner_loss(self, logits, idx):
        if self.label_logits is None:
            return super().inner_loss(logits, idx)
        target = F.softmax(self.label_logits[idx], dim=1)
        return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()

    # --- 1. the window -------------------------------------------------------------------------
    def start_window(self, step):
        cfg = self.cfg
        if not cfg.current_max_start_epoch or not cfg.expansion_end:
            return cfg.min_start_epoch, cfg.max_start_epoch
        grown = cfg.current_max_start_epoch + (cfg.max_start_epoch - cfg.current_max_start_epoch) * step // cfg.expansion_end
        return cfg.min_start_epoch, min(grown, cfg.max_start_epoch)

    # --- 3. the gate ---------------------------------------------------------------------------
    def unrolled_gradients(self, theta0, plan, expert, start):
        value, grads = super().unrolled_gradients(theta0, plan, expert, start)
        if self.cfg.threshold and value.item() > self.cfg.threshold:
            grads = [torch.zeros_like(g) for g in grads]
        return value, grads

    def exported_labels(self):
        if self.label_logits is None:
            return super().exported_labels()
        return F.softmax(self.label_logits.detach(), dim=1)
