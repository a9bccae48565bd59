"""One-step Diffusion with Distribution Matching Distillation — Yin et al., CVPR 2024,
arXiv 2311.18828 (catalog B9).

Three networks, all in the denoiser interface and initialised from the teacher:

* the frozen teacher mu_real (the "real score"), optionally with classifier-free guidance;
* the *fake score* mu_fake, trained with the ordinary diffusion (EDM) loss on the generator's
  current samples, so that it tracks the generator's distribution;
* the one-step *generator* G: x = G(sigma_max z, sigma_max, c).

Generator loss (eq. 7-8): diffuse x to x_t = x + sigma n (sigma drawn from the [0.02, 0.98]
part of the noise schedule) and follow the KL gradient, normalised per sample,

    grad = (mu_fake(x_t) - mu_real(x_t)) / mean|x - mu_real(x_t)|,   L_DM = 0.5 || x - sg(x - grad) ||^2,

plus the regression loss on a fixed set of (noise, teacher-ODE output) pairs (sec. 3.3),
L_reg = d(G(z_ref), y_ref), weighted by ``regression_weight`` (0.25). The paper's d is LPIPS;
potstill uses the mean squared error (no pretrained perceptual network is available offline) -
documented in every result. The pairs are produced once, at build time, with the teacher's Heun
sampler (``regression_steps``), and serve as the training batches (their labels condition the
distribution-matching samples too, drawn from fresh noise).

Parameter groups: ``generator`` and ``fake_score`` (both Adam in the paper; lr 2e-6 on
ImageNet, larger for small data). ``trainer.optim.generator.update_every`` sets how many
fake-score updates happen per generator update (DMD: 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...core.registry import METHODS
from ...data import ArrayData
from ...diffusion import karras_sigmas
from ...diffusion.samplers import heun
from ...losses.diffusion import dmd_loss, edm_loss
from .base import GenerativeMethod, teacher_denoiser


@dataclass
class DMDConfig:
    steps: int = 1                    # generator steps (DMD: one)
    sigma_max: float = 80.0
    schedule: str = "karras"          # k-step generator levels: karras (EDM) | strided (DMD2's t = 999, 749, ...)
    guidance: float = 1.0             # CFG weight of the real score
    regression_weight: float = 0.25
    regression_pairs: int = 1024
    regression_steps: int = 18        # Heun steps of the teacher ODE for the pairs (2*18-1 NFE)
    conditional: bool = True
    fake_p_mean: float = -1.2         # noise levels of the fake score's diffusion loss (EDM)
    fake_p_std: float = 1.2

    def __post_init__(self):
        if self.schedule not in ("karras", "strided"):
            raise ValueError(f"schedule must be 'karras' or 'strided', not {self.schedule!r}")
        if self.steps < 1 or self.regression_pairs < 1 or self.regression_steps < 1:
            raise ValueError("steps, regression_pairs and regression_steps must be >= 1")


@METHODS.register("dmd")
class DMD(GenerativeMethod):
    """DMD: one-step generator trained by distribution matching (real vs fake score) plus regression."""

    Config = DMDConfig
    name = "dmd"
    catalog_ids = ("B9",)
    paper = "One-step Diffusion with Distribution Matching Distillation"
    arxiv = "2311.18828"

    def __init__(self, cfg: DMDConfig, teacher, data):
        super().__init__(cfg, teacher, data)
        self.generator = self.copy_of_teacher(generator=True)
        self.fake_score = self.copy_of_teacher()
        self.pairs = self.make_pairs(cfg.regression_pairs if cfg.regression_weight > 0 else 1)

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, teacher_denoiser(ctx), ctx.data)

    def make_pairs(self, n: int) -> ArrayData:
        """(noise, label) pairs (fixed seed); their teacher ODE solutions come from :attr:`pair_targets`."""
        g = torch.Generator().manual_seed(2024)
        z = torch.randn(n, *self.in_shape, generator=g)
        c = torch.randint(self.num_classes, (n,), generator=g)
        self._pair_targets = None
        return ArrayData(z, c)

    @property
    @torch.no_grad()
    def pair_targets(self) -> torch.Tensor:
        """The teacher's deterministic ODE solution of every pair (Heun, ``regression_steps``).

        Computed on first use, so on the device the trainer moved the method to (a GPU makes
        thousands of 35-NFE solves take seconds, not the CPU's hours); deterministic, so a resumed
        run recomputes the same targets instead of storing them.
        """
        if self._pair_targets is None:
            z, c = self.pairs.x, self.pairs.y
            dev = next(self.teacher.parameters()).device
            sig = karras_sigmas(self.cfg.regression_steps, sigma_max=self.sigma_max)
            outs = []
            for i in range(0, len(z), 512):
                cond = c[i:i + 512].to(dev) if self.cfg.conditional else None
                outs.append(heun(self.teacher, z[i:i + 512].to(dev), sig, cond=cond, guidance=self.cfg.guidance,
                                 uncond=self.num_classes).x.cpu())
            self._pair_targets = torch.cat(outs)
        return self._pair_targets

    def train_data(self, bundle):
        return self.pairs

    def param_groups(self):
        return {"generator": list(self.generator.parameters()), "fake_score": list(self.fake_score.parameters())}

    def loss(self, batch, step):
        cfg = self.cfg
        cond = batch["y"] if cfg.conditional else None
        n = len(batch["y"])
        x = self.generator_sample(self.generator, n, cond)
        sigma = self.dm_sigma(n, x.device)
        x_t = x + sigma.reshape(-1, *([1] * (x.dim() - 1))) * torch.randn_like(x)
        with torch.no_grad():
            mu_real = self.real_denoise(x_t, sigma, cond, cfg.guidance)
            mu_fake = self.fake_score(x_t, sigma, cond)
        dm = dmd_loss(x, mu_real, mu_fake)
        gen = dm
        logs = {"log/dm": dm.detach()}
        if cfg.regression_weight > 0:
            s0 = torch.full((n,), self.sigma_max, device=x.device)
            pred = self.generator(self.sigma_max * batch["x"], s0, cond)
            reg = F.mse_loss(pred, self.pair_targets[batch["index"].cpu()].to(x.device))
            gen = gen + cfg.regression_weight * reg
            logs["log/regression"] = reg.detach()
        fake = edm_loss(self.fake_score, x.detach(), cond, p_mean=cfg.fake_p_mean, p_std=cfg.fake_p_std,
                        sigma_data=self.teacher.sigma_data)
        return {"generator": gen, "fake_score": fake, **logs}

    def export(self):
        return self.generator
