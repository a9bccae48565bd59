"""Next-token language modelling: how LM teachers and from-scratch LM baselines are trained.

Not a distillation method; it gives teachers and the "student from scratch" row the same
trainer, data order and metrics as the distillation methods (``potstill/methods/lm/token_kd.py``).

    L = mean over target tokens t with y_t != -1 of  -log q(y_t | x_<=t)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.method import Method
from ...core.registry import METHODS


@dataclass
class LanguageModelConfig:
    label_smoothing: float = 0.0
    student_init: str = ""            # continue from these weights (e.g. a run's export/model.safetensors)

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")


def next_token_nll(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not -1 (float32)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1,
                           label_smoothing=label_smoothing)


class LMMethod(Method):
    """What the LM methods share: a student LM, metrics in nats and bits per token."""

    pillar = "lm"

    def train_data(self, bundle):
        return bundle.train

    def param_groups(self):
        return {"student": list(self.student.parameters())}

    def export(self):
        return self.student

    @torch.no_grad()
    def evaluate(self, data, batch_size: int = 64) -> dict[str, float]:
        from ...eval.lm import token_nll

        return token_nll(self.export(), data, batch_size)


@METHODS.register("language_model")
class LanguageModel(LMMethod):
    """Plain next-token cross-entropy training of one LM (teachers and from-scratch baselines)."""

    Config = LanguageModelConfig
    name = "language_model"
    catalog_ids = ()
    paper = "baseline: next-token cross-entropy"

    def __init__(self, cfg: LanguageModelConfig, student: nn.Module):
        super().__init__(cfg)
        self.student = student

    @classmethod
    def build(cls, cfg, ctx):
        from ...core.checkpoint import init_from

        return cls(cfg, init_from(ctx.student(), cfg.student_init, "method.student_init"))

    def loss(self, batch, step):
        return {"student": next_token_nll(self.student(batch["x"]), batch["y"], self.cfg.label_smoothing)}
