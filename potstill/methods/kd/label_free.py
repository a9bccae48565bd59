"""Beyond Self-Supervision: A Simple Yet Effective Network Distillation Alternative to Improve
Backbones — Cui et al., arXiv 2103.05959 (SSLD; catalog K7).

The student is trained only to agree with the teacher's predictions; no human label is read,
so unlabeled images can be added freely. SSLD's loss is the (symmetric) Jensen–Shannon
divergence between the two softmax distributions, which the paper found slightly better
than KL or cross-entropy on soft labels:

    L = JS(p_t, p_s) = ½ KL(p_t ‖ m) + ½ KL(p_s ‖ m),   m = ½ (p_t + p_s),   p = softmax(z / T)

Extra data (SSLD mines ImageNet-22k with the teacher): the held-back unlabeled split is added
to the training pool; with ``select_per_class`` = k, only the k images the teacher is most
confident about for each predicted class are kept (class-balanced mining). Labels of every
training row are replaced by −1 before training, so the method cannot read them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from ...core.method import Method
from ...core.registry import METHODS
from ...data import ArrayData
from ...losses import js_divergence, kl_divergence


@dataclass
class LabelFreeConfig:
    divergence: Literal["js", "kl"] = "js"
    temperature: float = 1.0
    use_unlabeled: bool = True       # add the dataset's unlabeled split to the pool
    select_per_class: int = 0        # 0: keep every unlabeled image; k: teacher-mined top-k per class

    def __post_init__(self):
        if self.temperature <= 0 or self.select_per_class < 0:
            raise ValueError("need temperature > 0 and select_per_class >= 0")


@torch.no_grad()
def mine_by_teacher(teacher, x: torch.Tensor, per_class: int, batch_size: int = 1000) -> torch.Tensor:
    """Indices of the ``per_class`` most confident rows for each class the teacher predicts."""
    device = next(teacher.parameters()).device
    probs = torch.cat([teacher(x[i:i + batch_size].to(device)).logits.softmax(-1).cpu()
                       for i in range(0, len(x), batch_size)])
    conf, pred = probs.max(-1)
    keep = []
    for c in range(probs.shape[1]):
        idx = torch.nonzero(pred == c).squeeze(1)
        keep.append(idx[conf[idx].argsort(descending=True)[:per_class]])
    return torch.cat(keep).sort().values


@METHODS.register("label_free")
class LabelFree(Method):
    """SSLD label-free distillation: JS divergence to the teacher's predictions, extra unlabeled data."""

    Config = LabelFreeConfig
    name = "label_free"
    pillar = "kd"
    catalog_ids = ("K7",)
    paper = "Beyond Self-Supervision: A Simple Yet Effective Network Distillation Alternative to Improve Backbones"
    arxiv = "2103.05959"
    cacheable_teacher = True

    def __init__(self, cfg: LabelFreeConfig, student: nn.Module, teacher):
        super().__init__(cfg)
        self.student, self.teacher = student, teacher

    def train_data(self, bundle) -> ArrayData:
        parts = [bundle.train.x]
        if self.cfg.use_unlabeled and bundle.unlabeled is not None and len(bundle.unlabeled):
            x = bundle.unlabeled.x
            if self.cfg.select_per_class > 0:
                x = x[mine_by_teacher(self.teacher, x, self.cfg.select_per_class)]
            parts.append(x)
        x = torch.cat(parts)
        return ArrayData(x, torch.full((len(x),), -1, dtype=torch.long))

    def param_groups(self):
        return {"student": list(self.student.parameters())}

    def loss(self, batch, step):
        t = self.teacher(batch["x"], index=batch.get("index"))
        s = self.student(batch["x"])
        if self.cfg.divergence == "js":
            loss = js_divergence(t.logits, s, self.cfg.temperature)
        else:
            loss = kl_divergence(t.logits, s, self.cfg.temperature)
        return {"student": loss}

    def export(self):
        return self.student
