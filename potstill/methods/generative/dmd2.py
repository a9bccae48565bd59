"""Improved Distribution Matching Distillation for Fast Image Synthesis (DMD2) — Yin et al.,
NeurIPS 2024, arXiv 2405.14867 (catalog G4).

DMD (``dmd.py``) without its regression set, stabilised and sharpened by three changes:

* **Two time-scale update rule** (sec. 4.2): the fake score is updated several times per
  generator update - set ``trainer.optim.generator.update_every: 5`` (the paper's 5:1); the
  trainer counts the updates of each group.
* **GAN loss on the fake score** (sec. 4.3): a small classification head reads the fake-score
  network's features of diffused real and generated images (same noise level for both) and is
  trained with the fake score (non-saturating loss,
  L_D = softplus(-D(real_t)) + softplus(D(fake_t))); the generator adds
  ``gan_weight_g * softplus(-D(fake_t))``. This needs real data (the training split).
* **Multi-step generator with backward simulation** (sec. 4.4-4.5): with ``steps: k`` the
  generator is sampled at k noise levels (x_0 = G(x, s_i), re-noised to s_{i+1}); during training
  the input at a random level i comes from the generator's own earlier steps, not from
  diffused real images, so training matches inference.

The distribution-matching term is DMD's (eq. 7-8), with the real score guided by ``guidance``.
Groups: ``generator``; ``fake_score`` (the fake denoiser and the GAN head).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.registry import METHODS
from ...losses.diffusion import dmd_loss, edm_loss
from .base import GenerativeMethod, teacher_denoiser


@dataclass
class DMD2Config:
    steps: int = 1                     # generator steps (1 or e.g. 4)
    sigma_max: float = 80.0
    schedule: str = "karras"          # k-step generator levels: karras (EDM) | strided (DMD2's t = 999, 749, ...)
    guidance: float = 1.0
    gan: bool = True
    gan_weight_g: float = 3e-3         # generator's GAN loss weight (paper, ImageNet)
    gan_weight_d: float = 1e-2         # head's classification loss weight, added to the fake score's loss
    backward_simulation: bool = True
    conditional: bool = True
    fake_p_mean: float = -1.2
    fake_p_std: float = 1.2

    def __post_init__(self):
        if self.schedule not in ("karras", "strided"):
            raise ValueError(f"schedule must be 'karras' or 'strided', not {self.schedule!r}")
        if self.steps < 1 or self.gan_weight_g < 0 or self.gan_weight_d < 0:
            raise ValueError("steps must be >= 1 and the GAN weights >= 0")


@METHODS.register("dmd2")
class DMD2(GenerativeMethod):
    """DMD2: distribution matching without regression, two time-scales, GAN head, multi-step backward simulation."""

    Config = DMD2Config
    name = "dmd2"
    catalog_ids = ("G4",)
    paper = "Improved Distribution Matching Distillation for Fast Image Synthesis"
    arxiv = "2405.14867"

    def __init__(self, cfg: DMD2Config, teacher, data):
        super().__init__(cfg, teacher, data)
        self.generator = self.copy_of_teacher(generator=True)
        self.fake_score = self.copy_of_teacher()
        with torch.no_grad():
            probe = torch.zeros(2, *self.in_shape, device=next(teacher.parameters()).device)
            width = self.fake_score.features(probe, torch.ones(2, device=probe.device), None).shape[1]
        self.head = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, teacher_denoiser(ctx), ctx.data)

    def param_groups(self):
        return {"generator": list(self.generator.parameters()),
                "fake_score": list(self.fake_score.parameters()) + list(self.head.parameters())}

    def discriminate(self, x_t, sigma, cond):
        return self.head(self.fake_score.features(x_t, sigma, cond)).squeeze(1)

    def loss(self, batch, step):
        cfg = self.cfg
        cond = batch["y"] if cfg.conditional else None
        n = len(batch["y"])
        x = self.generator_sample(self.generator, n, cond, cfg.backward_simulation)
        view = (-1, *([1] * (x.dim() - 1)))
        sigma = self.dm_sigma(n, x.device)
        x_t = x + sigma.reshape(view) * torch.randn_like(x)
        with torch.no_grad():
            mu_real = self.real_denoise(x_t, sigma, cond, cfg.guidance)
            mu_fake = self.fake_score(x_t, sigma, cond)
        dm = dmd_loss(x, mu_real, mu_fake)
        gen, logs = dm, {"log/dm": dm.detach()}
        fake = edm_loss(self.fake_score, x.detach(), cond, p_mean=cfg.fake_p_mean, p_std=cfg.fake_p_std,
                        sigma_data=self.teacher.sigma_data)
        if cfg.gan:
            s_gan = self.dm_sigma(n, x.device)
            real_t = batch["x"] + s_gan.reshape(view) * torch.randn_like(batch["x"])
            fake_t = x + s_gan.reshape(view) * torch.randn_like(x)
            g_gan = F.softplus(-self.discriminate(fake_t, s_gan, cond)).mean()
            d_gan = (F.softplus(-self.discriminate(real_t, s_gan, cond)).mean()
                     + F.softplus(self.discriminate(fake_t.detach(), s_gan, cond)).mean())
            gen = gen + cfg.gan_weight_g * g_gan
            fake = fake + cfg.gan_weight_d * d_gan
            logs.update({"log/gan_g": g_gan.detach(), "log/gan_d": d_gan.detach()})
        return {"generator": gen, "fake_score": fake, **logs}

    def export(self):
        return self.generator
