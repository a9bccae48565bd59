"""Score Forgetting Distillation (SFD) - Chen, Zhang & Zhou, arXiv 2409.11219 (catalog G19).

Distillation and machine unlearning in one pass: a class-conditional teacher is distilled into
a one-step generator with SiD (``sid.py``), except that for the classes to *forget* the
teacher's conditional score is replaced by its score for a *safe* class ("cross-class score
distillation"). For a generated x_g with label c and x_t = x_g + sigma n:

    mu_real = D_teacher(x_t, sigma, c')   with c' = safe if c in forget else c,
    mu_fake = D_fake(x_t, sigma, c)       (the fake score keeps the original label: it models
                                            what the generator produces *for* c),
    L_G     = SiD loss (alpha, normaliser as in SiD), forget-class samples weighted by forget_weight.

The remaining classes keep the plain SiD loss (the paper's "remain" term), so the generator
learns to produce the safe class whenever asked for a forgotten one and is otherwise a SiD
generator. Everything else (fake score, noise levels, few-step option, guidance) is SiD's,
inherited.

Deviation: the paper's code draws separate "remain" and "forget" batches and weights both the
generator and the fake-score terms of the forget batch by coefficients (0.01 in its CIFAR-10
configuration); here forget and remaining classes share one batch (labels drawn with the data's
class frequencies) and only the generator term of forget samples is weighted (``forget_weight``,
default 1: every sample counts the same).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...core.config import ConfigError
from ...core.registry import METHODS
from .base import GenerativeMethod
from .sid import SiD, SiDConfig


@dataclass
class SFDConfig(SiDConfig):
    forget: list[int] = field(default_factory=lambda: [0])   # classes to forget
    safe: int = 1                                            # class whose score replaces theirs
    forget_weight: float = 1.0                               # generator-loss weight of forget-class samples

    def __post_init__(self):
        super().__post_init__()
        if not self.conditional:
            raise ValueError("SFD needs conditional: true (it forgets classes)")
        if not self.forget or any(c < 0 for c in self.forget) or len(set(self.forget)) != len(self.forget):
            raise ValueError(f"forget must list distinct class indices >= 0, got {self.forget}")
        if self.safe < 0 or self.safe in self.forget:
            raise ValueError(f"safe must be a class index >= 0 that is not in forget, got {self.safe}")
        if not self.forget_weight >= 0:
            raise ValueError(f"forget_weight must be >= 0, got {self.forget_weight}")


@METHODS.register("sfd")
class SFD(SiD):
    """SFD: SiD whose teacher target for forgotten classes is the teacher's score for a safe class."""

    Config = SFDConfig
    name = "sfd"
    catalog_ids = ("G19",)
    paper = "Score Forgetting Distillation: A Swift, Data-Free Method for Machine Unlearning in Diffusion Models"
    arxiv = "2409.11219"

    def __init__(self, cfg: SFDConfig, teacher, data):
        super().__init__(cfg, teacher, data)
        bad = [c for c in [*cfg.forget, cfg.safe] if c >= self.num_classes]
        if bad:
            raise ConfigError(f"method.forget / method.safe: classes {bad} do not exist ({self.num_classes} classes)")
        self.register_buffer("forget_classes", torch.tensor(cfg.forget, dtype=torch.long), persistent=False)

    def is_forget(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.isin(cond, self.forget_classes.to(cond.device))

    def teacher_cond(self, cond):
        return torch.where(self.is_forget(cond), torch.full_like(cond, self.cfg.safe), cond)

    def sample_weight(self, cond):
        if self.cfg.forget_weight == 1.0:
            return None
        w = torch.ones(cond.shape, device=cond.device)
        return torch.where(self.is_forget(cond), w * self.cfg.forget_weight, w)

    @torch.no_grad()
    def evaluate(self, data, batch_size: int = 512):
        """SiD's validation plus, where the data has mode centres, the share of forget-class
        samples whose nearest centre is still a forgotten class (0 = forgotten; class k is mode k, as in toy2d)."""
        out = GenerativeMethod.evaluate(self, data, batch_size)
        centers = (self.info or {}).get("centers")
        if centers is not None:
            n = min(len(data), 2000)
            y = data.y[:n]
            keep = self.is_forget(y)
            if keep.any():
                dev = next(self.export().parameters()).device
                g = torch.Generator().manual_seed(4321)
                noise = torch.randn(int(keep.sum()), *self.in_shape, generator=g).to(dev)
                x = self.generate(noise, y[keep].to(dev)).cpu()
                nearest = torch.cdist(x.double(), torch.tensor(centers, dtype=torch.float64)).argmin(1)
                out["forget_share"] = float(self.is_forget(nearest).double().mean())
        return out


__all__ = ["SFD", "SFDConfig"]
