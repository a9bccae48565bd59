"""Supervised training on hard labels: how teachers and from-scratch baselines are trained.

Not a distillation method; it exists so that baselines run through the same trainer, data
order and evaluation as the methods they are compared with.

    L = CE(f(x), y)   (optionally with label smoothing ε)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F

from ...core.method import Method
from ...core.registry import METHODS


@dataclass
class SupervisedConfig:
    label_smoothing: float = 0.0


@METHODS.register("supervised")
class Supervised(Method):
    """Plain cross-entropy training of one network (teachers and from-scratch baselines)."""

    Config = SupervisedConfig
    name = "supervised"
    pillar = "kd"
    catalog_ids = ()
    paper = "baseline: cross-entropy training"

    def __init__(self, cfg: SupervisedConfig, student: nn.Module, teacher=None):
        super().__init__(cfg)
        self.student = student

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, student=ctx.student())

    def param_groups(self):
        return {"student": list(self.student.parameters())}

    def loss(self, batch, step):
        keep = batch["y"] >= 0
        logits = self.student(batch["x"][keep])
        return {"student": F.cross_entropy(logits, batch["y"][keep], label_smoothing=self.cfg.label_smoothing)}

    def export(self):
        return self.student
