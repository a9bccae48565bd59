"""EDM teacher training — Karras et al., *Elucidating the Design Space of Diffusion-Based
Generative Models*, arXiv 2206.00364 (catalog B7).

The teacher every generative method distils from. A raw network F (``student`` section of the
recipe: ``toy_denoiser`` or ``unet``) is wrapped in EDM's preconditioning (Table 1) and trained
with the EDM loss (sec. 5): ln sigma ~ N(P_mean, P_std^2) = N(-1.2, 1.2^2), weight
lambda(sigma) = (sigma^2 + sd^2)/(sigma sd)^2, sd = 0.5. Class-conditional, with the label
replaced by the "no condition" label with probability ``label_dropout`` so that
classifier-free guidance can be used at sampling time (Ho & Salimans, arXiv 2207.12598).

Validation: the same loss on the validation split at 8 fixed noise levels with fixed noise (a
deterministic number to compare checkpoints). Export: the preconditioned denoiser
``D(x, sigma, cond)``; ``potstill.load_denoiser(run)`` rebuilds it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.method import Method
from ...core.registry import METHODS
from ...diffusion.denoiser import EDMPrecond
from ...losses.diffusion import edm_loss


@dataclass
class EDMConfig:
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    label_dropout: float = 0.1       # probability of training a sample unconditionally (CFG)
    conditional: bool = True

    def __post_init__(self):
        if self.sigma_data <= 0 or self.p_std <= 0 or not 0 <= self.label_dropout <= 1:
            raise ValueError("sigma_data and p_std must be > 0, label_dropout in [0, 1]")


@METHODS.register("edm")
class EDM(Method):
    """EDM denoiser training (preconditioning, log-normal sigma, EDM weighting) with CFG label dropout."""

    Config = EDMConfig
    name = "edm"
    pillar = "generative"
    catalog_ids = ("B7",)
    paper = "Elucidating the Design Space of Diffusion-Based Generative Models"
    arxiv = "2206.00364"

    def __init__(self, cfg: EDMConfig, net: torch.nn.Module, num_classes: int):
        super().__init__(cfg)
        self.denoiser = EDMPrecond(net, cfg.sigma_data)
        self.num_classes = num_classes

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, ctx.student(), ctx.data.num_classes)

    def param_groups(self):
        return {"denoiser": list(self.denoiser.parameters())}

    def labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.cfg.conditional or y is None:
            return None
        drop = torch.rand(len(y), device=y.device) < self.cfg.label_dropout
        return torch.where(drop | (y < 0), torch.full_like(y, self.num_classes), y)

    def loss(self, batch, step):
        c = self.cfg
        return {"denoiser": edm_loss(self.denoiser, batch["x"], self.labels(batch.get("y")), p_mean=c.p_mean,
                                     p_std=c.p_std, sigma_data=c.sigma_data)}

    @torch.no_grad()
    def evaluate(self, data, batch_size: int = 512):
        g = torch.Generator().manual_seed(1234)
        n = min(len(data), 2000)
        x, y = data.x[:n], data.y[:n] if self.cfg.conditional else None
        dev = next(self.denoiser.parameters()).device
        total = 0.0
        levels = torch.tensor([0.01, 0.05, 0.1, 0.3, 0.5, 1.0, 3.0, 10.0])
        for s in levels:
            noise = torch.randn(x.shape, generator=g)
            sig = torch.full((n,), float(s))
            total += float(edm_loss(self.denoiser, x.to(dev), None if y is None else y.to(dev), sigma=sig.to(dev),
                                    noise=noise.to(dev), sigma_data=self.cfg.sigma_data))
        return {"edm_loss": total / len(levels)}

    def export(self):
        return self.denoiser
