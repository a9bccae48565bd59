"""Masked Autoencoders Enable Efficient Knowledge Distillers (DMAE) — Bai, Wang, Xiao, Wei, Wang, Yuille,
Zhou & Xie, CVPR 2023, arXiv 2208.12256 (catalog K18).

MAE pretraining of a small ViT student (``mae.py``) plus alignment of one intermediate student
block to one intermediate block of a frozen, larger ViT teacher. The teacher gets *the same kept
patch indices* as the student, so it encodes only the visible patches, and it runs *only up to
the tapped block* — which is what makes the distillation cheap. Per step, with keep_idx drawn as
in MAE (mask ratio r; K = round(N·(1 − r)) ≥ 1 visible patches):

    S_j  = output of student block j       on CLS + the K visible patches (with grad)
    T_k  = output of teacher block k        on the same CLS + K patches, blocks 0..k only (no grad)
    L_distill = mean | normalize(T_k) − normalize(W·S_j) |        (L2-normalised over channels;
                                                                   W: linear d_S -> d_T, trained)
    L = L_MAE + λ · L_distill                                      (λ = ``distill_weight``, default 1)

over every visible token including CLS (block outputs before any final LayerNorm). The paper's
ImageNet setting: ViT-B student block 9 of 12 (index 8) against ViT-L teacher block 18 of 24
(index 17), i.e. three quarters of the depth — our default picks index ⌈0.75·depth⌉ − 1 in both
networks — mask 0.75, teacher an MAE-pretrained ViT-L, L1 on normalised features, weight 1
(UCSC-VLAA/DMAE ``pretrain.sh``, ``models_mae_distill.py``). Any ratio below 1 works: with 16 tokens
on Fashion-MNIST, 0.9 keeps 2 patches and 0.98 keeps 1 (at least one patch is always kept).

The teacher's cost is counted in ``cost`` (``teacher_cost_fraction`` in the evaluation = FLOPs of
the partial teacher on the visible tokens / FLOPs of the whole teacher on whole images).

Unverified here: the paper's ablations (other tap points, projector designs, how far the mask
ratio can go). The code offers "fc-1layer" and MLP projectors and ``pretrain.sh`` gives only the
dimensions (768 -> 1024); we default to one linear layer (``projector: mlp`` for Linear-GELU-Linear).
The teacher may be any ``vit`` with the student's patch grid (the recipe uses an MAE-pretrained
one, as the paper; a supervised one works the same way).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from ...core.config import ConfigError
from ...core.registry import METHODS
from ...losses.features import normalized_l1
from ...models.vit import MAEDecoder, decoder_flops, model_flops
from .mae import MaskedPretraining, mae_step, require_vit


def default_block(depth: int, block: int, frac: float = 0.75) -> int:
    """``block`` if ≥ 0, else the block at ``frac`` of the depth (index ⌈frac·depth⌉ − 1)."""
    return block if block >= 0 else max(0, math.ceil(frac * depth) - 1)


def make_head(d_in: int, d_out: int, kind: str) -> nn.Module:
    """The student -> teacher feature projector: one linear layer, or Linear-GELU-Linear."""
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


@dataclass
class DMAEConfig:
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    distill_weight: float = 1.0        # λ; 0 turns DMAE into plain MAE (the teacher is not run)
    student_block: int = -1            # -1: index ⌈0.75·depth⌉ − 1
    teacher_block: int = -1            # -1: index ⌈0.75·teacher depth⌉ − 1
    projector: Literal["linear", "mlp"] = "linear"
    decoder_width: int = 64
    decoder_depth: int = 1
    decoder_heads: int = 4
    unlabeled: bool = False
    knn_k: int = 20

    def __post_init__(self):
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError("mask_ratio must be in [0, 1) (at least one patch is always kept)")
        if self.distill_weight < 0 or self.student_block < -1 or self.teacher_block < -1:
            raise ValueError("distill_weight >= 0; student_block, teacher_block >= 0 or -1 (auto)")
        if self.decoder_width < 4 or self.decoder_depth < 0 or self.decoder_heads < 1 or self.knn_k < 1:
            raise ValueError("decoder_width >= 4, decoder_depth >= 0, decoder_heads >= 1, knn_k >= 1")


@METHODS.register("dmae")
class DMAE(MaskedPretraining):
    """DMAE: MAE pretraining + normalised-L1 alignment to a partial teacher run on the visible patches only."""

    Config = DMAEConfig
    name = "dmae"
    catalog_ids = ("K18",)
    paper = "Masked Autoencoders Enable Efficient Knowledge Distillers"
    arxiv = "2208.12256"

    def __init__(self, cfg: DMAEConfig, student: nn.Module, teacher):
        super().__init__(cfg, student)
        self.teacher = teacher
        t = require_vit(teacher.model, "teacher.model")
        s = self.student
        if t.num_patches != s.num_patches:
            raise ConfigError(f"teacher.model: the teacher cuts {t.num_patches} patches, the student {s.num_patches}; "
                              "DMAE hands the teacher the student's kept patch indices, so give both the same patch size")
        self.s_block, self.t_block = default_block(s.cfg.depth, cfg.student_block), default_block(t.cfg.depth, cfg.teacher_block)
        if self.s_block >= s.cfg.depth or self.t_block >= t.cfg.depth:
            raise ConfigError(f"method.student_block/teacher_block: {self.s_block}/{self.t_block} out of range for "
                              f"depths {s.cfg.depth}/{t.cfg.depth}")
        self.decoder = MAEDecoder(s, cfg.decoder_width, cfg.decoder_depth, cfg.decoder_heads, s.cfg.mlp_ratio)
        self.projector = make_head(s.cfg.width, t.cfg.width, cfg.projector)

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, ctx.student(), ctx.teacher())

    def heads(self):
        return [self.decoder, self.projector]

    @torch.no_grad()
    def teacher_features(self, x: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
        """Teacher block ``t_block`` on CLS + the kept patches: blocks 0..t_block run, no others."""
        return self.teacher.model.forward_features(x, keep_idx, upto=self.t_block + 1).hidden[self.t_block]

    def loss(self, batch, step):
        x = batch["x"]
        l_mae, feats, keep = mae_step(self.student, self.decoder, x, self.cfg.mask_ratio, self.cfg.norm_pix_loss)
        k, b = keep.shape[1], len(x)
        self.count(student=b * (model_flops(self.student, 1 + k) + decoder_flops(self.decoder, k)), examples=b,
                   teacher_full=b * model_flops(self.teacher.model, 1 + self.student.num_patches))
        logs = {"log/mae": l_mae.detach(), "log/visible": torch.tensor(float(k))}
        if self.cfg.distill_weight == 0:
            return {"student": l_mae, **logs}
        t = self.teacher_features(x, keep)
        self.count(teacher=b * model_flops(self.teacher.model, 1 + k, self.t_block + 1))
        l_d = normalized_l1(self.projector(feats.hidden[self.s_block]), t)
        return {"student": l_mae + self.cfg.distill_weight * l_d, "log/distill": l_d.detach(), **logs}
