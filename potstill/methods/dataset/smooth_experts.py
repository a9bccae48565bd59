"""Efficient Dataset Distillation through Alignment with Smooth and High-Quality Expert
Trajectories (AST) — Shen, Yang & Lam, arXiv 2310.10541 (catalog D8).

MTT with five changes, each switchable for the ablation:

* ``smooth_experts`` (sec. 3.2): experts trained so their parameters change slowly - the
  "clipping loss" (the CE scaled by 0.5, 0.55, ..., 0.95 over the first 10 epochs) and a
  gradient penalty on the input, 2 * mean((||d sum f(x) / dx|| - 1)^2); SGD momentum 0.9,
  weight decay 1e-3, lr 0.003, x0.6 after half the epochs (the authors' code; see
  :mod:`.experts`). Off: MTT's plain experts.
* ``representative_init`` (sec. 3.3): per class, k-means (k = IPC) on the logits that one expert
  at its last epoch gives the class's real images; each synthetic image starts as the real image
  nearest a centre. (The authors' code clusters into 10 and takes IPC/10 images per centre,
  which selects nothing below IPC 10; k = IPC is the paper's description.) Off: random real.
* ``balanced_loss`` (sec. 3.3): the student's inner CE is weighted by the start epoch s, with
  h = floor(T+/2):  w(s) = log_5(s - h + 8) if s >= h, else 1 / log_5(h - s + 8)  - later,
  slower parts of the trajectory get larger steps.
* ``intermediate_matching`` (sec. 3.4): besides the end point, student step n_i = floor(N/M) i
  is matched to expert epoch s + i for i = 1..M-1, each normalised like eq. 2 and weighted by
  beta_i = 1 (``equal``) or i/M (``adaptive``); ``none`` switches it off.
* ``weight_perturbation`` (sec. 3.4): every iteration the student's start is perturbed, conv
  weights only: W <- W + alpha (d / ||d||_F) * W with d ~ N(0, I), alpha = 1; the perturbed
  start is also the denominator's start.

The student's inner steps use heavy-ball momentum 0.9 (``inner_momentum``), as the authors' code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ...core.registry import METHODS
from ...losses.matching import trajectory_distance
from .experts import ExpertConfig
from .mtt import MTT, MTTConfig

#: the smooth experts (authors' buffer.py defaults with --loss_decay and --gp)
SMOOTH_EXPERTS = {"clip_epochs": 10, "clip_start": 0.5, "clip_step": 0.05, "grad_penalty": 2.0,
                  "momentum": 0.9, "weight_decay": 1e-3, "lr": 0.003, "decay_at": 0.5, "decay": 0.6}


def balanced_weight(start: int, max_start_epoch: int) -> float:
    """AST's inner-loss weight for start epoch ``start`` (h = floor(T+/2))."""
    h = max_start_epoch // 2
    if start >= h:
        return math.log(start - h + 8, 5)
    return 1.0 / math.log(h - start + 8, 5)


def perturb_conv_weights(theta: torch.Tensor, names_shapes, alpha: float, generator=None) -> torch.Tensor:
    """W + alpha * (d / ||d||_F) * W for every 4-D (conv) weight of the flat vector ``theta``."""
    parts, offset = [], 0
    for _name, shape in names_shapes:
        n = math.prod(shape)
        w = theta[offset:offset + n]
        if len(shape) == 4:
            d = torch.randn(n, generator=generator).to(w)
            w = w + alpha * d / d.norm() * w
        parts.append(w)
        offset += n
    return torch.cat(parts)


@dataclass
class ASTConfig(MTTConfig):
    inner_momentum: float = 0.9
    smooth_experts: bool = True
    representative_init: bool = True
    balanced_loss: bool = True
    intermediate_matching: Literal["none", "equal", "adaptive"] = "equal"
    weight_perturbation: float = 1.0          # alpha; 0 = off

    def __post_init__(self):
        super().__post_init__()
        if self.intermediate_matching not in ("none", "equal", "adaptive"):
            raise ValueError(f"intermediate_matching must be none, equal or adaptive, not {self.intermediate_matching!r}")
        if self.weight_perturbation < 0:
            raise ValueError("weight_perturbation must be >= 0")


@METHODS.register("ast")
class AST(MTT):
    """MTT with smooth experts, representative init, balanced inner loss, intermediate matching
    and weight perturbation."""

    Config = ASTConfig
    name = "ast"
    catalog_ids = ("D8",)
    paper = "Efficient Dataset Distillation through Alignment with Smooth and High-Quality Expert Trajectories"
    arxiv = "2310.10541"

    def __init__(self, cfg: ASTConfig, data):
        super().__init__(cfg, data)
        if cfg.representative_init:
            with torch.no_grad():
                self.images.copy_(self.representative_images(data))

    @classmethod
    def expert_config(cls, cfg) -> ExpertConfig:
        return ExpertConfig(**{**(SMOOTH_EXPERTS if cfg.smooth_experts else {}), **cfg.experts})

    def representative_images(self, data) -> torch.Tensor:
        from sklearn.cluster import KMeans

        expert = int(torch.randint(len(self.buffer), (1,)))
        theta = self.buffer.snapshot(expert, self.buffer.epochs)
        chosen = []
        for c in range(self.num_classes):
            x = data.train.x[self.real.rows[c]]
            if self.zca is not None:
                x = self.zca.apply(x)
            with torch.no_grad():
                feats = self.fnet(theta, x).double().numpy()
            km = KMeans(self.cfg.ipc, n_init=3, random_state=int(torch.randint(2**31 - 1, (1,)))).fit(feats)
            dist = ((feats[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)   # (n, ipc)
            picked: list[int] = []
            for k in range(self.cfg.ipc):        # nearest not-yet-picked image to each centre
                for i in dist[:, k].argsort():
                    if int(i) not in picked:
                        picked.append(int(i))
                        break
            chosen.append(x[picked])
        return torch.cat(chosen).to(self.images)

    def start_params(self, theta):
        if not self.cfg.weight_perturbation:
            return theta
        return perturb_conv_weights(theta, self.buffer.meta["layout"], self.cfg.weight_perturbation)

    def inner_loss(self, logits, idx):
        loss = super().inner_loss(logits, idx)
        if self.cfg.balanced_loss:
            loss = loss * balanced_weight(self.current_start, self.cfg.max_start_epoch)
        return loss

    def intermediate_points(self) -> list[tuple[int, int, float]]:
        """(student step n_i, expert epoch offset i, weight beta_i) for i = 1..M-1."""
        m, n = self.cfg.expert_epochs, self.cfg.syn_steps
        if self.cfg.intermediate_matching == "none" or m < 2:
            return []
        return [((n // m) * i, i, 1.0 if self.cfg.intermediate_matching == "equal" else i / m) for i in range(1, m)]

    def matched_steps(self):
        return [p[0] for p in self.intermediate_points()] + [self.cfg.syn_steps]

    def match_loss(self, thetas, expert, start):
        loss = super().match_loss(thetas, expert, start)
        for step, offset, beta in self.intermediate_points():
            target = self.buffer.snapshot(expert, start + offset).to(thetas[0])
            loss = loss + beta * trajectory_distance(thetas[step], thetas[0].detach(), target)
        return loss
