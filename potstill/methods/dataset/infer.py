"""INFER: Breaking Class Barriers: Efficient Dataset Distillation via Inter-Class Feature Compensator —
Zhang, Du, Liu & Zhou, ICLR 2025, arXiv 2408.06927 (catalog D7).

Instead of synthesising images class by class, INFER learns *universal feature compensators*
(UFCs): perturbations ``u`` shared by all classes. Each ``u`` is added to one real image of
*every* class and optimised so that a BN teacher recognises every ``x_c + u`` as class ``c`` with
natural BN statistics (the SRe2L recovery objective on the batch {x_c + u}_c):

    min_u  sum_c CE(f_m(J(x_{c,j} + u)), c) + r_bn * sum_l w_l ( ||mu_l - mu_l^BN||_2 + ||sigma^2_l - sigma^2_l^BN||_2 )

``J`` = a random roll of up to ``jitter`` pixels and a random horizontal flip (of the whole
batch), ``w_1 = first_bn_weight`` (10), the other ``w_l = 1``.

**Budget.** With M teachers (architectures) and K classes, a budget of ``ipc`` images per class
buys ``ipc_init = floor(ipc / (M / K + 1))`` real images per class plus ``ipc_init * M``
compensators (``ipc_init * (K + M) <= ipc * K`` stored images). Compensator k is optimised on
teacher ``m = k // ipc_init`` and added to real image ``j = k mod ipc_init`` of every class, so
the exported set has ``ipc_init * (M + 1)`` images per class: the real ones and every ``x_{c,j} + u_k``.
Teachers: the recipe's ``teacher`` first, then ``extra_teachers`` (members as in CV-DD: a
checkpoint, or trained here). All compensators are optimised jointly, one step each per trainer
step (the paper optimises them one after another, 1000 iterations each).

**Static labels.** One label per exported image, computed once from the un-augmented image:
the average of the M teachers' logits, stored as ``softmax(mean_m f_m(x) / T)``:
``label_bytes = N * K * 4`` with N = K * ipc_init * (M + 1) - versus epochs x crops x N x K floats
for per-crop relabelling (SRe2L / CV-DD in their papers). The paper trains the student on them
with mixup (labels mixed alike) and KL at T=30; the dd-v1 protocol trains with soft cross-entropy.

``relabel: false`` exports hard labels (N bytes) instead. ``compensate: false`` is the matching baseline: ``ipc`` random real images per class with the
same static labels and no compensators.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ...core.config import ConfigError
from ...core.method import Method
from ...core.registry import METHODS
from ...core.teacher import Teacher
from ...data.synthetic_set import SyntheticSet
from .base import ClassIndex, SyntheticDataMethod
from .cvdd import MemberConfig, squeeze_member
from .sre2l import BNStatistics, recovery_loss, require_bn


@dataclass
class INFERConfig:
    ipc: int = 10                   # storage budget in images per class
    r_bn: float = 1.0               # (reference code: 1)
    first_bn_weight: float = 10.0
    jitter: int = 4                 # random roll of up to this many pixels
    flip: bool = True
    temperature: float = 1.0        # T of the stored static labels
    compensate: bool = True         # false: ipc real images per class with the same static labels
    relabel: bool = True            # false: hard (one-hot) labels instead of the static soft labels
    extra_teachers: list[MemberConfig] = field(default_factory=list)
    seed: int = 0                   # extra teacher i trains with seed + i
    member_cache: str = ""          # keep extra teachers trained here in this folder (reused by later runs)

    def __post_init__(self):
        if self.ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {self.ipc}")
        if self.r_bn < 0 or self.first_bn_weight < 0 or self.jitter < 0:
            raise ValueError("r_bn, first_bn_weight and jitter must be >= 0")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def ipc_init(ipc: int, teachers: int, classes: int) -> int:
    """Real images per class that leave room for ``ipc_init * teachers`` compensators in the budget."""
    return int(ipc / (teachers / classes + 1))


def jitter_flip(x: torch.Tensor, jitter: int, flip: bool) -> torch.Tensor:
    """One random roll (dy, dx) in [-jitter, jitter]^2 and one coin flip for the whole batch."""
    if jitter:
        dy, dx = torch.randint(-jitter, jitter + 1, (2,)).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if flip and bool(torch.rand(()) < 0.5):
        x = x.flip(3)
    return x


@METHODS.register("infer")
class INFER(SyntheticDataMethod):
    """INFER: universal feature compensators shared by every class, with static averaged-logit labels."""

    Config = INFERConfig
    name = "infer"
    catalog_ids = ("D7",)
    paper = "Breaking Class Barriers: Efficient Dataset Distillation via Inter-Class Feature Compensator"
    arxiv = "2408.06927"

    def __init__(self, cfg: INFERConfig, data, teachers: list[nn.Module]):
        Method.__init__(self, cfg)
        self.num_classes, self.in_shape = data.num_classes, tuple(data.in_shape)
        self.source = {"dataset": data.name, "normalization": data.normalization, "class_names": data.class_names}
        for i, t in enumerate(teachers):
            require_bn(t, "teacher.model" if i == 0 else f"method.extra_teachers[{i - 1}].model")
        k, m = data.num_classes, len(teachers)
        self.n_real = ipc_init(cfg.ipc, m, k) if cfg.compensate else cfg.ipc
        if self.n_real < 1:
            raise ConfigError(f"method.ipc={cfg.ipc} leaves no real image per class for {m} teachers "
                              f"(ipc_init = floor(ipc / (M/K + 1)) = 0)")
        index = ClassIndex(data.train, k)
        real = torch.cat([index.sample(c, self.n_real) for c in range(k)])
        if len(real) != k * self.n_real:
            raise ConfigError(f"method.ipc: {self.n_real} real images per class is more than the smallest class has")
        self.register_buffer("real", real.view(k, self.n_real, *self.in_shape))     # (K, ipc_init, C, H, W)
        n_u = self.n_real * m if cfg.compensate else 0
        self.compensators = nn.Parameter(torch.zeros(n_u, *self.in_shape))           # one u per slot, shared by all classes
        self.teacher = nn.ModuleList([Teacher(t) for t in teachers])               # frozen, not checkpointed
        self.hooks = [BNStatistics(t.model) for t in self.teacher]

    @classmethod
    def build(cls, cfg, ctx):
        teachers = [ctx.teacher().model]
        teachers += [squeeze_member(mc, ctx.data, cfg.seed + i, f"method.extra_teachers[{i}]", cfg.member_cache)[0]
                     for i, mc in enumerate(cfg.extra_teachers)]
        return cls(cfg, ctx.data, teachers)

    def param_groups(self):
        return {"compensators": [self.compensators]} if len(self.compensators) else {}

    def compensated(self, slots: list[int]) -> torch.Tensor:
        """``x_{c, k mod ipc_init} + u_k`` for the given slots k, grouped by slot: (len(slots) * K, C, H, W)."""
        idx = torch.tensor(slots)
        x = self.real[:, idx % self.n_real]                        # (K, S, C, H, W)
        return (x + self.compensators[idx].unsqueeze(0)).transpose(0, 1).reshape(-1, *self.in_shape)

    def loss(self, batch, step):
        if not len(self.compensators):
            return {}
        k, r = self.num_classes, self.n_real
        y = torch.arange(k, device=self.real.device).repeat(r)
        total = 0.0
        logs = {}
        for m, t in enumerate(self.teacher):
            x = jitter_flip(self.compensated(list(range(m * r, (m + 1) * r))), self.cfg.jitter, self.cfg.flip)
            loss, ce, bn = recovery_loss(t.model, self.hooks[m], x, y, r, self.cfg.r_bn, self.cfg.first_bn_weight)
            total = total + loss
            logs[f"log/ce{m}"], logs[f"log/bn{m}"] = ce.detach(), bn.detach()
        return {"compensators": total, **logs}

    @torch.no_grad()
    def expanded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The exported images, class-major: per class the ipc_init real images, then x + u_k for every k."""
        k, shape = self.num_classes, self.in_shape
        parts = [self.real]
        if len(self.compensators):
            n_u = len(self.compensators)
            parts.append(self.compensated(list(range(n_u))).view(n_u, k, *shape).transpose(0, 1))
        x = torch.cat(parts, 1)                                     # (K, per_class, C, H, W)
        per_class = x.shape[1]
        return x.reshape(-1, *shape), torch.arange(k).repeat_interleave(per_class)

    @torch.no_grad()
    def static_labels(self, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """``softmax(mean_m f_m(x) / T)``, computed once on the un-augmented images."""
        out = []
        for i in range(0, len(x), batch):
            z = torch.stack([t.model(x[i:i + batch]).float() for t in self.teacher]).mean(0)
            out.append(torch.softmax(z / self.cfg.temperature, 1))
        return torch.cat(out)

    def export(self) -> SyntheticSet:
        x, y = self.expanded()
        k = self.num_classes
        meta = {"method": self.name, "augmentation": "none", **self.source,
                "ipc_init": self.n_real, "compensators": len(self.compensators), "teachers": len(self.teacher),
                "stored_images": k * self.n_real + len(self.compensators),
                "labels": f"static: softmax(mean of {len(self.teacher)} teachers' logits / {self.cfg.temperature:g}), "
                          "one per image"}
        if not self.cfg.relabel:
            meta["labels"] = "hard"
            return SyntheticSet(x.detach(), y, k, meta)
        return SyntheticSet(x.detach(), self.static_labels(x), k, meta)


__all__ = ["INFER", "INFERConfig", "ipc_init", "jitter_flip"]
