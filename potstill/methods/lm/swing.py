"""Swing Distillation: A Privacy-Preserving Knowledge Distillation Framework (catalog K11).

Li, Wu, Dong, Wu, Bian & Xiong, arXiv 2212.08349. Plain KD hands the student the teacher's
confident predictions of memorised private tokens (a secret in the training text). Swing
distillation softens exactly those soft targets:

* a privacy likelihood π_t ∈ [0, 1] for the token each position predicts, from a detector
  (here: the token's character is in ``private_chars``, digits by default, π = 1; else 0);
* a per-token temperature that swings with it,   T_t = T_0 + (T_max − T_0) · π_t;
* noise on the teacher's logits before the softmax,  p̃_t = softmax((z_t + ε_t) / T_t),
  ε_t,v ~ Laplace(0, b · π_t) (the noise only touches private positions);
* the loss   L = α · T_0² · mean_t KL(p̃_t || softmax(s_t / T_0)) + (1 − α) · CE on the
  non-private data tokens only (a hard label of a private token would teach the secret directly;
  ``private_ce: true`` keeps them).

``swing: false, private_ce: true`` is plain Hinton KD at temperature T_0 plus CE on every token
(the comparison row); ``swing: false`` alone isolates what dropping the private hard labels does. Canary exposure (``potstill/eval/privacy.py``) measures what the student learned
of secrets inserted into the teacher's training text (``pydoc_chars`` with ``canaries``).

Only the teacher's side swings: the student is always read at T_0. With the student at T_t as
well (our first version), a high temperature makes KL(softmax(z/T) || softmax(s/T)) · T² approach
logit matching (Hinton et al., Sec. 2.1), so the student still copies the teacher's ranking of the
secret's digits: on benchmarks/swing.py that version cut mean exposure by only 19% against plain KD.

The paper's exact detector, temperature schedule and noise calibration to a privacy budget were
not available to us: the forms above follow its abstract (per-token temperature from the
likelihood of private information; noise injected into the soft targets) and are our choice.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.registry import METHODS
from ...losses.divergences import masked_token_mean, token_divergence
from .language_model import LMMethod


@dataclass
class SwingConfig:
    alpha: float = 0.5                # weight of the distillation term
    base_temperature: float = 2.0     # T_0 (non-private tokens)
    max_temperature: float = 20.0     # T_max (certainly private tokens)
    noise_scale: float = 1.0          # b: Laplace scale on private positions' teacher logits; 0 = none
    private_chars: str = "0123456789"
    swing: bool = True                # false: no temperature swing and no noise (KD at T_0)
    private_ce: bool = False          # also take CE on private tokens (plain KD: swing false, private_ce true)
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.alpha <= 1:
            raise ValueError("alpha must be in [0, 1]")
        if self.base_temperature <= 0 or self.max_temperature < self.base_temperature:
            raise ValueError("need 0 < base_temperature <= max_temperature")
        if self.noise_scale < 0:
            raise ValueError("noise_scale must be >= 0")


def privacy_likelihood(y: torch.Tensor, private: torch.Tensor) -> torch.Tensor:
    """π per position: 1 where the target token is private (``private``: bool per vocabulary id)."""
    return torch.where(y >= 0, private[y.clamp_min(0)], torch.zeros_like(y, dtype=torch.bool)).float()


def swing_targets(teacher_logits: torch.Tensor, pi: torch.Tensor, t0: float, tmax: float, noise: float,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy logits, per-token temperature T_t): p̃_t = softmax(noisy_t / T_t)."""
    temp = t0 + (tmax - t0) * pi
    z = teacher_logits.float()
    if noise > 0:
        u = torch.rand(z.shape, generator=generator).to(z.device) - 0.5        # Laplace by inverse CDF
        u = u.clamp(-0.5 + 1e-7, 0.5 - 1e-7)        # rand() can return 0: log1p(-1) = -inf, and inf * 0 = nan
        lap = -torch.sign(u) * torch.log1p(-2 * u.abs())
        z = z + noise * pi[..., None] * lap
    return z, temp


@METHODS.register("swing")
class Swing(LMMethod):
    """Privacy-preserving LM distillation: per-token temperature and noisy soft targets on private tokens."""

    Config = SwingConfig
    name = "swing"
    catalog_ids = ("K11",)
    paper = "Swing Distillation: A Privacy-Preserving Knowledge Distillation Framework"
    arxiv = "2212.08349"
    cacheable_teacher = True

    def __init__(self, cfg: SwingConfig, student: nn.Module, teacher, itos: list[str]):
        super().__init__(cfg)
        self.student, self.teacher = student, teacher
        self.private = torch.tensor([c in cfg.private_chars for c in itos])

    @classmethod
    def build(cls, cfg, ctx):
        itos = ctx.data.info.get("itos")
        if not itos:
            raise ValueError("swing needs a character vocabulary (data.info['itos']) to detect private tokens")
        return cls(cfg, ctx.student(), ctx.teacher(), itos)

    def loss(self, batch, step):
        cfg = self.cfg
        x, y = batch["x"], batch["y"]
        mask = y != -1
        pi = privacy_likelihood(y, self.private.to(y.device)) if cfg.swing else torch.zeros_like(y, dtype=torch.float)
        with torch.no_grad():
            t = self.teacher(x, index=batch.get("index")).logits
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        z, temp = swing_targets(t, pi, cfg.base_temperature, cfg.max_temperature, cfg.noise_scale, g)
        s = self.student(x)
        # the teacher's side swings to T_t; the student stays at T_0. (Dividing the student by T_t
        # too, as in Hinton KD at a high temperature, turns the private positions' loss into logit
        # matching, which hands the secret over: see the module docstring.)
        kl = token_divergence(s.float() / cfg.base_temperature, z / temp[..., None], "forward_kl")
        kd = cfg.base_temperature ** 2 * masked_token_mean(kl, mask)
        public = mask if cfg.private_ce else mask & ~self.private.to(y.device)[y.clamp_min(0)]
        ce = F.cross_entropy(s.float().reshape(-1, s.shape[-1]), torch.where(public, y, -1).reshape(-1), ignore_index=-1) \
            if public.any() else s.sum() * 0
        return {"student": cfg.alpha * kd + (1 - cfg.alpha) * ce, "log/kd": kd.detach(), "log/ce": ce.detach(),
                "log/private_share": masked_token_mean(pi, mask).detach()}
