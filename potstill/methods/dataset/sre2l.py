"""SRe2L: Squeeze, Recover and Relabel — Yin, Xing & Shen, NeurIPS 2023, arXiv 2306.13092 (catalog D4),
with CDA: Dataset Distillation via Curriculum Data Synthesis in Large Data Era — Yin & Shen,
arXiv 2311.18838, as its ``curriculum`` switch.

Distillation without unrolling any training, in three decoupled stages:

1. **Squeeze** - train a network *with batch norm* on the real data. Here that is the recipe's
   ``teacher:`` section (e.g. ``recipes/dd/teacher_bn_digits.yaml``, trained first with the
   ``supervised`` method); a teacher without BatchNorm layers is a configuration error.
2. **Recover** - optimise the synthetic images (init: N(0, 1) noise as the paper, or real) so that
   the frozen teacher (eval mode, running statistics) classifies them as their class *and* the
   statistics they induce at every BN layer l match the ones stored during squeezing (eq. 4-5):

       x* = argmin_x  CE(f(A(x)), y) + r_bn * sum_l w_l ( ||mu_l(A(x)) - mu_l^BN||_2
                                                        + ||sigma^2_l(A(x)) - sigma^2_l^BN||_2 )

   ``A`` = RandomResizedCrop (area fraction in ``crop_scale``) + horizontal flip, redrawn every
   step; ``w_1 = first_bn_weight`` (10 in the reference code), the other ``w_l = 1``. As in the
   paper each recovery batch holds one image per class (IPC index j): the ``ipc`` batches are
   recovered in one forward pass, each matched with its own statistics, so the loss is the sum
   of the ``ipc`` independent recovery losses (CE averaged within a batch).
3. **Relabel** - soft labels from the teacher.

**CDA** (``curriculum`` != ``none``, method ``cda``) makes recovery a global-to-local curriculum:
the lower bound of the crop area, ``alpha_t``, moves from ``easy_scale_min`` (large crops, easy)
to ``crop_scale[0]`` (small crops, hard) over ``curriculum_steps`` steps (set it to
``trainer.steps``), with t = step / curriculum_steps:

    step:    alpha_t = easy  if t < milestone else hard
    linear:  alpha_t = easy + (hard - easy) * t
    cosine:  alpha_t = hard + (easy - hard) * (1 + cos(pi t)) / 2

**What the labels cost.** The paper relabels FKD-style: one soft label per random crop per
epoch of student training (epochs x N x K floats, the dominant storage at scale). What is stored
here instead is one soft label per image, ``softmax(f(x) / T)`` of the *uncropped* image at
temperature ``temperature``: ``label_bytes = N * K * 4`` (N = K * ipc images, float32); the
protocol trains on them with soft cross-entropy under its own DSA augmentation. ``relabel: false``
exports hard labels instead (N bytes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.config import ConfigError
from ...core.method import Method
from ...core.registry import METHODS
from ...core.teacher import Teacher
from ...data.augment import random_resized_crop
from ...data.synthetic_set import SyntheticSet
from ...losses.matching import bn_statistic_loss
from .base import SyntheticDataMethod


# --- shared by SRe2L / CDA, CV-DD and INFER ------------------------------------------------------
def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def require_bn(model: nn.Module, key: str) -> None:
    layers = bn_layers(model)
    if not layers:
        raise ConfigError(f"{key}: recovery matches batch-norm statistics, and this {type(model).__name__} has "
                          "no BatchNorm layer (build it with norm: batch and train it first)")
    if any(m.running_mean is None or m.running_var is None for m in layers):
        raise ConfigError(f"{key}: every BatchNorm layer needs running statistics (track_running_stats=True)")


class BNStatistics:
    """Forward hooks on every BatchNorm layer of ``model``: inside ``with hooks.recording(groups):``
    each BN input adds ``bn_statistic_loss(input, running_mean, running_var, groups)`` to ``losses``
    (in layer order). Outside ``recording`` the hooks do nothing."""

    def __init__(self, model: nn.Module):
        self.layers = bn_layers(model)
        self.losses: list[torch.Tensor] = []
        self._groups = 0
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module, inputs, _output):
        if self._groups:
            self.losses.append(bn_statistic_loss(inputs[0], module.running_mean, module.running_var, self._groups))

    def recording(self, groups: int = 1):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            self.losses, self._groups = [], groups
            try:
                yield self
            finally:
                self._groups = 0

        return ctx()

    def total(self, first_weight: float = 1.0) -> torch.Tensor:
        """``sum_l w_l R_l`` with ``w_1 = first_weight`` and every other ``w_l = 1``."""
        if not self.losses:
            raise RuntimeError("no BatchNorm statistics were recorded (was the model run inside recording()?)")
        return first_weight * self.losses[0] + sum(self.losses[1:], self.losses[0].new_zeros(()))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def recovery_loss(model: nn.Module, hooks: BNStatistics, x: torch.Tensor, y: torch.Tensor, groups: int,
                  r_bn: float, first_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sum_g [ CE_g + r_bn * R_BN,g ]`` over ``groups`` equal consecutive batches of ``x`` (CE_g their
    mean cross-entropy); returns (loss, summed CE, summed BN term)."""
    with hooks.recording(groups):
        logits = model(x)
    ce = F.cross_entropy(logits, y, reduction="sum") / (len(x) // groups)
    bn = hooks.total(first_weight)
    return ce + r_bn * bn, ce, bn


@torch.no_grad()
def soft_labels(models: list[nn.Module], weights: torch.Tensor, x: torch.Tensor, temperature: float,
                batch: int = 500) -> torch.Tensor:
    """``sum_m w_m softmax(f_m(x) / T)`` (weights summing to 1), computed in batches in eval mode."""
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        p = sum(w * F.softmax(m(xb).float() / temperature, dim=1) for w, m in zip(weights.tolist(), models))
        out.append(p)
    return torch.cat(out)


def ipc_major(k: int, ipc: int) -> torch.Tensor:
    """Row order that turns class-major rows (c * ipc + j) into ``ipc`` batches of one image per class."""
    return torch.arange(k * ipc).view(k, ipc).t().reshape(-1)


# --- the method -------------------------------------------------------------------------------------
@dataclass
class SRe2LConfig:
    ipc: int = 10
    init: Literal["noise", "real"] = "noise"
    r_bn: float = 0.01                   # weight of the BN-statistic term (paper: 0.01)
    first_bn_weight: float = 10.0        # extra weight of the first BN layer (reference code: 10)
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    flip: bool = True                    # random horizontal flips while recovering
    relabel: bool = True                 # export teacher soft labels (false: hard labels)
    temperature: float = 1.0             # T of the stored soft labels softmax(f(x) / T)
    curriculum: Literal["none", "step", "linear", "cosine"] = "none"   # CDA's crop curriculum
    easy_scale_min: float = 1.0          # CDA: crop-area lower bound at the start (easy)
    curriculum_steps: int = 1000         # CDA: steps over which it moves to crop_scale[0] (= trainer.steps)
    milestone: float = 0.5               # CDA step schedule: fraction of curriculum_steps spent easy

    def __post_init__(self):
        if self.ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {self.ipc}")
        if self.r_bn < 0 or self.first_bn_weight < 0:
            raise ValueError(f"r_bn and first_bn_weight must be >= 0, got {self.r_bn}, {self.first_bn_weight}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be [min, max] with 0 < min <= max <= 1, got {self.crop_scale}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.crop_scale[0] <= self.easy_scale_min <= self.crop_scale[1]:
            raise ValueError(f"easy_scale_min must lie in crop_scale {self.crop_scale}, got {self.easy_scale_min}")
        if self.curriculum_steps < 1 or not 0 <= self.milestone <= 1:
            raise ValueError(f"curriculum_steps must be >= 1 and milestone in [0, 1], got "
                             f"{self.curriculum_steps}, {self.milestone}")


def crop_scale_min(cfg: SRe2LConfig, step: int) -> float:
    """The RandomResizedCrop area lower bound at ``step`` (CDA's schedules; fixed without curriculum)."""
    hard, easy = cfg.crop_scale[0], cfg.easy_scale_min
    if cfg.curriculum == "none":
        return hard
    t = min(1.0, step / cfg.curriculum_steps)
    if cfg.curriculum == "step":
        return easy if t < cfg.milestone else hard
    if cfg.curriculum == "linear":
        return easy + (hard - easy) * t
    return hard + (easy - hard) * 0.5 * (1 + math.cos(math.pi * t))


@METHODS.register("sre2l")
class SRe2L(SyntheticDataMethod):
    """SRe2L: recover images from a BN teacher's statistics and labels, relabel with its soft labels."""

    Config = SRe2LConfig
    name = "sre2l"
    catalog_ids = ("D4",)
    paper = "Squeeze, Recover and Relabel: Dataset Condensation at ImageNet Scale From A New Perspective"
    arxiv = "2306.13092"

    def __init__(self, cfg: SRe2LConfig, data, teacher: nn.Module):
        Method.__init__(self, cfg)
        self._setup_images(cfg, data)
        require_bn(teacher, "teacher.model")
        self.teacher = Teacher(teacher)               # frozen, eval mode, not checkpointed
        self.hooks = BNStatistics(self.teacher.model)

    def _setup_images(self, cfg, data) -> None:
        from .base import ClassIndex, initial_images

        self.num_classes, self.in_shape = data.num_classes, tuple(data.in_shape)
        self.real = ClassIndex(data.train, data.num_classes)
        self.source = {"dataset": data.name, "normalization": data.normalization, "class_names": data.class_names}
        k, ipc = data.num_classes, cfg.ipc
        x = initial_images(self.real, k, ipc, cfg.init, self.in_shape)
        self.images = nn.Parameter(x.clone())
        self.register_buffer("labels", torch.arange(k).repeat_interleave(ipc))

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, ctx.data, ctx.teacher().model)

    def augment(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, float]:
        lo = crop_scale_min(self.cfg, step)
        return random_resized_crop(x, (lo, self.cfg.crop_scale[1]), flip=self.cfg.flip), lo

    def loss(self, batch, step):
        order = ipc_major(self.num_classes, self.cfg.ipc).to(self.images.device)
        x, lo = self.augment(self.images[order], step)
        loss, ce, bn = recovery_loss(self.teacher.model, self.hooks, x, self.labels[order], self.cfg.ipc,
                                     self.cfg.r_bn, self.cfg.first_bn_weight)
        return {"images": loss, "log/ce": ce.detach(), "log/bn": bn.detach(), "log/crop_scale_min": torch.tensor(lo)}

    def label_models(self) -> tuple[list[nn.Module], torch.Tensor]:
        return [self.teacher.model], torch.ones(1)

    def export(self) -> SyntheticSet:
        x = self.images.detach()
        meta = {"method": self.name, "augmentation": "none", **self.source}
        if not self.cfg.relabel:
            return SyntheticSet(x, self.labels.clone(), self.num_classes, {**meta, "labels": "hard"})
        models, w = self.label_models()
        y = soft_labels(models, w, x, self.cfg.temperature)
        meta["labels"] = (f"one soft label per image, softmax(teacher(x) / {self.cfg.temperature:g}) of the uncropped "
                          "image (the paper: one per crop per student epoch)")
        return SyntheticSet(x, y, self.num_classes, meta)


@dataclass
class CDAConfig(SRe2LConfig):
    curriculum: Literal["none", "step", "linear", "cosine"] = "linear"

    def __post_init__(self):
        super().__post_init__()
        if self.curriculum == "none":
            raise ValueError("curriculum must be step, linear or cosine for CDA (none is plain sre2l)")


@METHODS.register("cda")
class CDA(SRe2L):
    """CDA: SRe2L recovery with an easy-to-hard RandomResizedCrop curriculum (crop area lower bound decays)."""

    Config = CDAConfig
    name = "cda"
    catalog_ids = ("D4",)
    paper = "Dataset Distillation via Curriculum Data Synthesis in Large Data Era"
    arxiv = "2311.18838"


__all__ = ["SRe2L", "CDA", "SRe2LConfig", "CDAConfig", "BNStatistics", "crop_scale_min", "recovery_loss",
           "soft_labels", "bn_layers", "require_bn", "ipc_major"]
