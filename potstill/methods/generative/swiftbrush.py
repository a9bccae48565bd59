"""SwiftBrush: One-Step Text-to-Image Diffusion Model with Variational Score Distillation -
Nguyen & Tran, CVPR 2024, arXiv 2312.05239 (catalog G14); the loss is ProlificDreamer's variational
score distillation (VSD; Wang et al., arXiv 2305.16213).

**Image-free.** The method never reads a real image: its training stream
(:meth:`SwiftBrush.train_data`) is a fixed pool of class labels drawn uniformly at random (the
class-conditional analogue of SwiftBrush's text prompts), with zero-width ``x``; the generator's
input noise is drawn fresh at every step. Only validation reads data (the trainer's SWD check).

Three networks in the denoiser interface:

* the frozen teacher mu_real (optionally with classifier-free guidance ``guidance``);
* the *LoRA teacher* mu_fake (group ``fake_score``): a copy of the teacher whose every
  ``nn.Linear`` / ``nn.Conv2d`` carries a rank-``lora_rank`` adapter W + (alpha/r) B A
  (:mod:`potstill.models.lora`, B = 0 at the start, so mu_fake = mu_real at initialisation); only
  the adapters train, with the denoising loss on the generator's *detached* samples,

      L_fake = E_{sigma, n} lambda(sigma) || mu_fake(x_g + sigma n, sigma, c) - x_g ||^2,

  at the same noise levels the generator loss uses (below), EDM-weighted;
* the one-step *generator* G (group ``generator``, a full copy of the teacher):
  x_g = G(sigma_max z, sigma_max, c).

**Generator loss** (VSD, :func:`~potstill.losses.diffusion.vsd_loss`): diffuse x_g to
x_t = x_g + sigma n with sigma uniform over the [0.02, 0.98] part of a 1000-level Karras grid (the
paper's t ~ U[20, 980]) and push the per-noise-level weighted score difference into x_g as a
stop-gradient target,

    grad = w(sigma) (mu_fake(x_t) - mu_real(x_t)),   w(sigma) = sigma / (1 + sigma^2),
    L_G = 0.5 || x_g - sg(x_g - grad) ||^2,

which is w_VP(t) (eps_real - eps_fake) with ProlificDreamer's w_VP(t) = sigma_t^2 of the
variance-preserving process, written in EDM's sigma and x_0 units. Generator and LoRA teacher are
updated alternately, one to one (the paper's schedule).

Deviations: SwiftBrush distils Stable Diffusion's latent text-conditioned U-Net with LoRA rank 64
and learning rates 1e-6 (student) / 1e-3 (LoRA); here the teacher is any EDM denoiser, the
condition a class label, the rank ``lora_rank`` (default 8) and the learning rates the recipe's.
The paper's optional CLIP-based regulariser is not used.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from ...core.registry import METHODS
from ...data import ArrayData
from ...losses.diffusion import edm_loss, vsd_loss
from ...models.lora import add_lora, lora_parameters
from .base import GenerativeMethod, teacher_denoiser


@dataclass
class SwiftBrushConfig:
    sigma_max: float = 80.0          # the one-step generator's input noise level (pure noise)
    guidance: float = 1.0            # CFG scale of the teacher (SwiftBrush: 4.5 on Stable Diffusion)
    lora_rank: int = 8               # rank r of the LoRA teacher's adapters
    lora_alpha: float = 8.0          # adapter scale alpha (update = alpha / r * B A)
    t_lo: float = 0.02               # loss noise levels: the [t_lo, t_hi] part of a 1000-level Karras grid
    t_hi: float = 0.98
    label_pool: int = 65536          # size of the (seeded, uniform) label stream that replaces the data
    conditional: bool = True

    def __post_init__(self):
        if not self.sigma_max > 0:
            raise ValueError(f"sigma_max must be > 0, got {self.sigma_max}")
        if not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise ValueError(f"guidance must be a finite number >= 0, got {self.guidance}")
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.t_lo < self.t_hi <= 1:
            raise ValueError(f"need 0 <= t_lo < t_hi <= 1, got t_lo={self.t_lo}, t_hi={self.t_hi}")
        if self.label_pool < 1:
            raise ValueError(f"label_pool must be >= 1, got {self.label_pool}")
        if not self.conditional and self.guidance != 1.0:
            raise ValueError("guidance != 1 needs conditional: true")


@METHODS.register("swiftbrush")
class SwiftBrush(GenerativeMethod):
    """SwiftBrush: image-free one-step generator trained by variational score distillation with a LoRA teacher."""

    Config = SwiftBrushConfig
    name = "swiftbrush"
    catalog_ids = ("G14",)
    paper = "SwiftBrush: One-Step Text-to-Image Diffusion Model with Variational Score Distillation"
    arxiv = "2312.05239"

    def __init__(self, cfg: SwiftBrushConfig, teacher, data):
        super().__init__(cfg, teacher, data)
        self.generator = self.copy_of_teacher(generator=True)
        self.fake_score = add_lora(copy.deepcopy(self.teacher), cfg.lora_rank, cfg.lora_alpha)

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, teacher_denoiser(ctx), ctx.data)

    def train_data(self, bundle) -> ArrayData:
        """Not the dataset: ``label_pool`` uniformly drawn class labels (seeded) with zero-width x."""
        g = torch.Generator().manual_seed(2312)
        n = self.cfg.label_pool
        y = torch.randint(self.num_classes, (n,), generator=g) if self.cfg.conditional else torch.zeros(n, dtype=torch.long)
        return ArrayData(torch.zeros(n, 0), y)

    def frozen(self):
        return [self.teacher]

    def param_groups(self):
        return {"generator": list(self.generator.parameters()), "fake_score": lora_parameters(self.fake_score)}

    def trainable_state(self):
        """Generator and adapters; the LoRA teacher's frozen base weights are the teacher's (not stored)."""
        keep = {f"fake_score.{n}" for n, p in self.fake_score.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith("teacher.") and (not k.startswith("fake_score.") or k in keep)}

    def loss_sigma(self, n: int, device) -> torch.Tensor:
        return self.dm_sigma(n, device, self.cfg.t_lo, self.cfg.t_hi)

    def loss(self, batch, step):
        cfg = self.cfg
        n = len(batch["y"])
        cond = batch["y"] if cfg.conditional else None
        x = self.generator_sample(self.generator, n, cond, backward_simulation=False)
        sigma = self.loss_sigma(n, x.device)
        x_t = x + sigma.reshape(-1, *([1] * (x.dim() - 1))) * torch.randn_like(x)
        with torch.no_grad():
            mu_real = self.real_denoise(x_t, sigma, cond, cfg.guidance)
            mu_fake = self.fake_score(x_t, sigma, cond)
        gen = vsd_loss(x, mu_real, mu_fake, sigma)
        fake = edm_loss(self.fake_score, x.detach(), cond, sigma=self.loss_sigma(n, x.device),
                        sigma_data=self.teacher.sigma_data)
        return {"generator": gen, "fake_score": fake, "log/vsd": gen.detach()}

    def export(self):
        return self.generator


__all__ = ["SwiftBrush", "SwiftBrushConfig"]
