"""Supervised training on hard labels: how teachers and from-scratch baselines are trained.

Not a distillation method; it exists so that baselines run through the same trainer, data
order and evaluation as the methods they are compared with.

    L = CE(f(aug(x)), y)   (optionally with label smoothing ε and random shift/flip augmentation)

``student_init`` starts the network from saved weights (a run's ``export/model.safetensors``):
how a pretrained encoder (``mae``, ``dmae``, ``hybrid_distill``) is fine-tuned on the labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn
import torch.nn.functional as F

from ...core.method import Method
from ...core.registry import METHODS
from ...data.augment import AugmentConfig, augment


@dataclass
class SupervisedConfig:
    label_smoothing: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # e.g. {shift: 2, flip: true}
    student_init: str | None = None   # start from these weights (export/model.safetensors of a run)

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")


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
        from ...core.checkpoint import init_from

        return cls(cfg, student=init_from(ctx.student(), cfg.student_init, "method.student_init"))

    def train_data(self, bundle):
        if not (bundle.train.y >= 0).any():
            from ...data import DataError

            raise DataError("supervised training needs labels, and no training row has one")
        return bundle.train

    def param_groups(self):
        return {"student": list(self.student.parameters())}

    def loss(self, batch, step):
        keep = batch["y"] >= 0
        if not keep.any():  # an unlabeled-only batch teaches nothing
            return {"student": sum(p.sum() for p in self.student.parameters()) * 0.0}
        logits = self.student(augment(batch["x"][keep], self.cfg.augment))
        return {"student": F.cross_entropy(logits, batch["y"][keep], label_smoothing=self.cfg.label_smoothing)}

    def export(self):
        return self.student
