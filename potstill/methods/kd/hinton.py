"""Distilling the Knowledge in a Neural Network — Hinton, Vinyals & Dean, arXiv 1503.02531 (catalog B1).

The student matches the teacher's temperature-softened class distribution, mixed with the
usual cross-entropy on hard labels:

    p_T = softmax(z_t / T),   q_T = softmax(z_s / T)
    L = α · T² · KL(p_T || q_T)  +  (1 − α) · CE(softmax(z_s), y)

T² keeps the soft term's gradient scale independent of T (§2 of the paper: the gradient of the
soft term scales as 1/T²). Rows without a label (y = −1) contribute only the soft term.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.method import Method
from ...core.registry import METHODS
from ...losses import soft_target_kd


@dataclass
class HintonConfig:
    temperature: float = 4.0
    alpha: float = 0.9   # weight of the soft-target term; 1 − α on the hard labels

    def __post_init__(self):
        if self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0:
            raise ValueError("temperature must be > 0 and alpha in [0, 1]")


def hinton_terms(student_logits, teacher_logits, y, temperature: float, alpha: float) -> tuple[torch.Tensor, dict]:
    """α·T²·KL + (1−α)·CE (CE over labelled rows only); returns (loss, logs)."""
    soft = soft_target_kd(student_logits, teacher_logits, temperature)
    keep = y >= 0
    hard = F.cross_entropy(student_logits[keep], y[keep]) if keep.any() else student_logits.sum() * 0
    return alpha * soft + (1 - alpha) * hard, {"log/soft": soft.detach(), "log/hard": hard.detach()}


@METHODS.register("kd")
class HintonKD(Method):
    """Hinton knowledge distillation: temperature-softened teacher targets mixed with hard labels."""

    Config = HintonConfig
    name = "kd"
    pillar = "kd"
    catalog_ids = ("B1",)
    paper = "Distilling the Knowledge in a Neural Network"
    arxiv = "1503.02531"
    cacheable_teacher = True

    def __init__(self, cfg: HintonConfig, student: nn.Module, teacher):
        super().__init__(cfg)
        self.student, self.teacher = student, teacher

    def param_groups(self):
        return {"student": list(self.student.parameters())}

    def loss(self, batch, step):
        t = self.teacher(batch["x"], index=batch.get("index"))
        loss, logs = hinton_terms(self.student(batch["x"]), t.logits, batch["y"], self.cfg.temperature, self.cfg.alpha)
        return {"student": loss, **logs}

    def export(self):
        return self.student
