"""FitNets: Hints for Thin Deep Nets — Romero et al., arXiv 1412.6550 (catalog B2).

A "hint" layer of the teacher guides a layer of the student through a learned regressor r
(the projector) that maps the student's feature width onto the teacher's:

    L_hint = ‖ r(u_s(x)) − v_t(x) ‖²        (mean over elements; see losses.features.hint_loss)

Stage 1 (the paper's hint training, ``hint_stage_steps`` > 0): only L_hint for the first steps.
Stage 2: the Hinton objective (α, T; losses of catalog B1) plus β·L_hint, so B2 combines with
B1 (set ``alpha: 0`` for cross-entropy + hint only). Features are read with forward hooks on
named modules of both networks; widths may differ (1×1-conv or linear projector), and a
student map with a larger spatial size is average-pooled to the teacher's.

The projector is its own parameter group (``projector``): it only sees the hint loss, and can be
given its own optimizer settings in ``trainer.optim.projector``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.config import ConfigError
from ...core.method import Method
from ...core.registry import METHODS
from ...core.teacher import FeatureTaps
from ...losses import hint_loss
from .hinton import hinton_terms


@dataclass
class FitNetsConfig:
    teacher_layer: str = "features"   # module names (see `potstill list --layers convnet`)
    student_layer: str = "features"
    hint_weight: float = 1.0          # β
    temperature: float = 4.0
    alpha: float = 0.9                # 0: no soft targets, CE + β·hint
    hint_stage_steps: int = 0

    def __post_init__(self):
        if self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0 or self.hint_weight < 0 or self.hint_stage_steps < 0:
            raise ValueError("need temperature > 0, alpha in [0, 1], hint_weight >= 0, hint_stage_steps >= 0")


def make_projector(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """1×1 conv for feature maps, linear for vectors (FitNets' regressor)."""
    if len(student_shape) != len(teacher_shape) or len(student_shape) not in (2, 4):
        raise ValueError(f"cannot project student feature {tuple(student_shape)} onto teacher {tuple(teacher_shape)}")
    if len(student_shape) == 4:
        if student_shape[2] < teacher_shape[2] or student_shape[3] < teacher_shape[3]:
            raise ValueError(f"student map {tuple(student_shape[2:])} is smaller than the teacher's {tuple(teacher_shape[2:])}")
        return nn.Conv2d(student_shape[1], teacher_shape[1], kernel_size=1)
    return nn.Linear(student_shape[1], teacher_shape[1])


@METHODS.register("fitnets")
class FitNets(Method):
    """FitNets feature distillation through hooks with a learned projector; combinable with Hinton KD."""

    Config = FitNetsConfig
    name = "fitnets"
    pillar = "kd"
    catalog_ids = ("B2",)
    paper = "FitNets: Hints for Thin Deep Nets"
    arxiv = "1412.6550"
    cacheable_teacher = True

    def __init__(self, cfg: FitNetsConfig, student: nn.Module, teacher, in_shape: tuple[int, ...]):
        super().__init__(cfg)
        self.student, self.teacher = student, teacher
        self.taps = FeatureTaps(student, [cfg.student_layer], key="method.student_layer")
        probe = torch.zeros(2, *in_shape, device=next(student.parameters()).device)
        with torch.no_grad(), self.taps.recording():
            t_feat = teacher(probe).features[cfg.teacher_layer]
            was = student.training
            student.eval()
            student(probe)
            student.train(was)
        try:
            self.projector = make_projector(self.taps.outputs[cfg.student_layer].shape, t_feat.shape)
        except ValueError as e:
            raise ConfigError(f"method.student_layer/teacher_layer: {e}") from None

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, ctx.student(), ctx.teacher(taps=[cfg.teacher_layer], key="method.teacher_layer"), ctx.data.in_shape)

    def param_groups(self):
        return {"student": list(self.student.parameters()), "projector": list(self.projector.parameters())}

    def hint(self, s_feat: torch.Tensor, t_feat: torch.Tensor) -> torch.Tensor:
        if s_feat.dim() == 4 and s_feat.shape[2:] != t_feat.shape[2:]:
            s_feat = F.adaptive_avg_pool2d(s_feat, t_feat.shape[2:])
        return hint_loss(self.projector(s_feat), t_feat)

    def loss(self, batch, step):
        t = self.teacher(batch["x"], index=batch.get("index"))
        with self.taps.recording():  # hooks record only here, not when the exported student is used
            logits = self.student(batch["x"])
        l_hint = self.hint(self.taps.outputs[self.cfg.student_layer], t.features[self.cfg.teacher_layer])
        if step < self.cfg.hint_stage_steps:
            return {"student": l_hint, "projector": l_hint, "log/hint": l_hint.detach()}
        task, logs = hinton_terms(logits, t.logits, batch["y"], self.cfg.temperature, self.cfg.alpha)
        total = task + self.cfg.hint_weight * l_hint
        return {"student": total, "projector": self.cfg.hint_weight * l_hint, "log/hint": l_hint.detach(), **logs}

    def export(self):
        return self.student
