"""Score identity Distillation (SiD) - Zhou et al., ICML 2024, arXiv 2404.04057, with the few-step
generator and the guidance strategies of *Few-Step Diffusion via Score identity Distillation*
(Zhou, Gu & Wang, arXiv 2505.12674) (catalog G1).

Three networks in the denoiser interface, all initialised from the teacher (as in DMD):

* the frozen teacher mu_real ("real score");
* the *fake score* mu_fake, trained with the EDM denoising loss on the generator's detached
  samples (group ``fake_score``), so that it tracks the generator's distribution;
* the *generator* G (group ``generator``): x_g = G(sigma_init z, sigma_init, c) with the small
  input noise sigma_init = 2.5 of the paper (``sigma_max``).

**Generator loss** (2404.04057, eq. 8-10; :func:`~potstill.losses.diffusion.sid_loss`). Diffuse
x_g to x_t = x_g + sigma n, with sigma on the Karras curve (rho = 7, 0.002 ... 80) at
u ~ U[0, t_max / 1000] (t_max = 800, sigma in [0.002, 24.4]), and evaluate *both* denoisers at
x_t with the gradient flowing through x_t (and x_g) into G - only the networks' weights are
frozen, there is no stop-gradient on the score estimates:

    L_G = mean_j [ (mu_real - mu_fake) * ((mu_real - x_g) - alpha (mu_real - mu_fake)) ]_j
          / sg(mean_j |x_g - mu_real|_j),          alpha = 1.2 (paper default).

The paper's score-identity derivation gives alpha = 1 for the Fisher divergence; alpha > 1
adds the term it found to help. Fake and generator are updated alternately, one to one (the
trainer's default ``update_every: 1``); their losses here come from the same generator batch.

**Few-step generator** (2505.12674, sec. 3). ``steps: k`` gives one network G sampled at k noise
levels s_1 > ... > s_k (``schedule``; default ``strided``: k levels evenly strided over the
1000-level Karras grid from sigma_init, the EDM analogue of the paper's t_i = t_init (1 - (i-1)/k)):
x^(0) = 0, x^(i) = G(x^(i-1) + s_i n_i, s_i). Every training step runs the whole chain once
(each step's input detached from the previous step's graph, so each output carries the gradient
of its own step) and each sample of the batch takes the output of a uniformly drawn step: the
batch is a draw from the *uniform mixture* (1/k) sum_i p_i, which both losses match to the data
(the paper shows a matched mixture forces every p_i to match). Sampling (``potstill sample``)
runs all k steps.

**Guidance** (``guidance_mode``, ``guidance`` = g; the fake score's own CFG scale w_f in brackets):

* ``cfg``: classifier-free guidance with scale g in the teacher; fake score conditional (w_f = 1);
* ``zero`` (Zero-CFG): no CFG in the teacher, the fake score *unconditional* - trained and
  evaluated without the class (w_f = 0);
* ``anti`` (Anti-CFG): no CFG in the teacher, *negative* guidance in the fake score,
  mu_fake = u + w_f (c - u) with w_f = -g (u, c: the fake score without / with the class). The
  fake score then needs its unconditional branch to track the generator's marginal, so it is
  trained with the class dropped with probability ``fake_label_dropout``.

Since mu_real - mu_fake = (mu_real - c) + (1 - w_f)(c - u), Zero- and Anti-CFG move the
generator's classes apart along the generator's *own* conditional-vs-marginal direction
instead of sharpening the teacher.

Not included: the optional Diffusion-GAN term of 2505.12674 (it needs real data and a
discriminator head; the method is data-free without it), the EMA generator (use
``trainer.ema_decay``), SiD's NaN-sample masking, and the loss scaling constant (Adam makes it
irrelevant).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...core.registry import METHODS
from ...losses.diffusion import edm_loss, sid_loss
from .base import GenerativeMethod, teacher_denoiser

GUIDANCE_MODES = ("cfg", "zero", "anti")


@dataclass
class ScoreDistillConfig:
    """What SiD, SIM and SFD share (SIM and SFD reuse SiD's setup)."""

    steps: int = 1                    # generator steps k (one shared network)
    sigma_max: float = 2.5            # generator input noise level (SiD's sigma_init)
    schedule: str = "strided"         # k-step levels: strided (even stride over 1000 Karras levels) | karras
    t_max: float = 800.0              # loss noise levels: Karras curve at u ~ U[0, t_max/1000]
    loss_sigma_min: float = 0.002     # ... between the teacher's sigma_min and sigma_max
    loss_sigma_max: float = 80.0
    guidance_mode: str = "cfg"        # cfg | zero | anti
    guidance: float = 1.0             # cfg: teacher CFG scale; anti: fake score scale is -guidance
    fake_label_dropout: float = 0.1   # anti: fake score trained unconditionally this often
    conditional: bool = True
    fake_p_mean: float = -1.2         # EDM noise levels of the fake score's loss
    fake_p_std: float = 1.2

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.sigma_max > 0:
            raise ValueError(f"sigma_max must be > 0, got {self.sigma_max}")
        if self.schedule not in ("karras", "strided"):
            raise ValueError(f"schedule must be 'karras' or 'strided', not {self.schedule!r}")
        if not 0 < self.t_max <= 1000:
            raise ValueError(f"t_max must be in (0, 1000], got {self.t_max}")
        if not 0 < self.loss_sigma_min < self.loss_sigma_max:
            raise ValueError(f"need 0 < loss_sigma_min < loss_sigma_max, got {self.loss_sigma_min}, {self.loss_sigma_max}")
        if self.guidance_mode not in GUIDANCE_MODES:
            raise ValueError(f"guidance_mode must be one of {', '.join(GUIDANCE_MODES)}, not {self.guidance_mode!r}")
        if not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise ValueError(f"guidance must be a finite number >= 0, got {self.guidance}")
        if not 0 <= self.fake_label_dropout < 1:
            raise ValueError(f"fake_label_dropout must be in [0, 1), got {self.fake_label_dropout}")
        if not self.conditional and (self.guidance_mode != "cfg" or self.guidance != 1.0):
            raise ValueError("guidance_mode zero/anti and guidance != 1 need conditional: true")
        if not self.fake_p_std > 0:
            raise ValueError(f"fake_p_std must be > 0, got {self.fake_p_std}")


@dataclass
class SiDConfig(ScoreDistillConfig):
    alpha: float = 1.2                # SiD's alpha (1: the Fisher-divergence gradient; paper default 1.2)

    def __post_init__(self):
        super().__post_init__()
        if not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be finite, got {self.alpha}")


@METHODS.register("sid")
class SiD(GenerativeMethod):
    """SiD: one- or few-step generator trained by score identity distillation (uniform-mixture few-step, Zero/Anti-CFG)."""

    Config = SiDConfig
    name = "sid"
    catalog_ids = ("G1",)
    paper = "Score identity Distillation; Few-Step Diffusion via Score identity Distillation"
    arxiv = "2404.04057"

    def __init__(self, cfg: ScoreDistillConfig, teacher, data):
        super().__init__(cfg, teacher, data)
        self.generator = self.copy_of_teacher(generator=True)
        self.fake_score = self.copy_of_teacher()

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, teacher_denoiser(ctx), ctx.data)

    def param_groups(self):
        return {"generator": list(self.generator.parameters()), "fake_score": list(self.fake_score.parameters())}

    # --- the generator's samples: a draw from the uniform mixture of its k step outputs ---------
    def mixture_sample(self, n: int, cond) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the k-step chain once; sample b takes the output of step ``pick[b]`` ~ U{0..k-1}."""
        sig = self.generator_sigmas()
        dev = next(self.generator.parameters()).device
        x_in = sig[0] * torch.randn(n, *self.in_shape, device=dev)
        outs = []
        for i in range(len(sig) - 1):
            out = self.generator(x_in, torch.full((n,), sig[i], device=dev), cond)
            outs.append(out)
            if sig[i + 1] > 0:
                x_in = out.detach() + sig[i + 1] * torch.randn_like(out)
        pick = torch.randint(len(outs), (n,), device=dev)
        return torch.stack(outs)[pick, torch.arange(n, device=dev)], pick

    def loss_sigma(self, n: int, device) -> torch.Tensor:
        """sigma = (s_max^(1/7) + (1-u)(s_min^(1/7) - s_max^(1/7)))^7, u ~ U[0, t_max/1000]."""
        cfg = self.cfg
        lo, hi = cfg.loss_sigma_min ** (1 / 7), cfg.loss_sigma_max ** (1 / 7)
        u = torch.rand(n, device=device) * cfg.t_max / 1000
        return (hi + (1 - u) * (lo - hi)) ** 7

    # --- the two denoisers in the generator loss (both differentiable in x_t) -------------------
    def teacher_cond(self, cond):
        """The class the teacher is asked about (SFD redirects forgotten classes here)."""
        return cond

    def real_target(self, x_t, sigma, cond) -> torch.Tensor:
        w = self.cfg.guidance if self.cfg.guidance_mode == "cfg" else 1.0
        return self.real_denoise(x_t, sigma, self.teacher_cond(cond), w)

    def fake_target(self, x_t, sigma, cond) -> torch.Tensor:
        mode = self.cfg.guidance_mode
        if cond is None or mode == "cfg":
            return self.fake_score(x_t, sigma, cond)
        if mode == "zero":
            return self.fake_score(x_t, sigma, None)
        both = self.fake_score(torch.cat([x_t, x_t]), torch.cat([sigma, sigma]),
                               torch.cat([cond, torch.full_like(cond, self.num_classes)]))
        c, u = both.chunk(2)
        return u - self.cfg.guidance * (c - u)          # anti: scale w_f = -guidance

    def fake_train_cond(self, cond):
        """Labels of the fake score's own diffusion loss (none for Zero-CFG, dropped sometimes for Anti-CFG)."""
        mode = self.cfg.guidance_mode
        if cond is None or mode == "cfg":
            return cond
        if mode == "zero":
            return None
        drop = torch.rand(cond.shape, device=cond.device) < self.cfg.fake_label_dropout
        return torch.where(drop, torch.full_like(cond, self.num_classes), cond)

    def sample_weight(self, cond):
        return None

    def match_loss(self, x, mu_real, mu_fake, cond) -> torch.Tensor:
        return sid_loss(x, mu_real, mu_fake, self.cfg.alpha, weight=self.sample_weight(cond))

    def loss(self, batch, step):
        cfg = self.cfg
        cond = batch["y"] if cfg.conditional else None
        n = len(batch["y"])
        x, _ = self.mixture_sample(n, cond)
        sigma = self.loss_sigma(n, x.device)
        x_t = x + sigma.reshape(-1, *([1] * (x.dim() - 1))) * torch.randn_like(x)
        gen = self.match_loss(x, self.real_target(x_t, sigma, cond), self.fake_target(x_t, sigma, cond), cond)
        fake = edm_loss(self.fake_score, x.detach(), self.fake_train_cond(cond), p_mean=cfg.fake_p_mean,
                        p_std=cfg.fake_p_std, sigma_data=self.teacher.sigma_data)
        return {"generator": gen, "fake_score": fake, f"log/{self.name}": gen.detach()}

    def export(self):
        return self.generator


__all__ = ["GUIDANCE_MODES", "ScoreDistillConfig", "SiD", "SiDConfig"]
