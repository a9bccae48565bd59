"""Swing Distillation: A Privacy-Preserving Knowledge Distillation Framework (catalog K11).

Li, Wu, Dong, Wu, Bian & Xiong, arXiv 2212.08349. Plain KD hands the student the teacher's
confident predictions of memorised private tokens (a secret in the training text). Swing
distillation softens exactly those soft targets:

* a privacy likelihood π_t ∈ [0, 1] for the token each position predicts, from a detector
  (here: the token's character is in ``private_chars``, digits by default, π = 1; else 0);
* a per-token temperature that swings with it,   T_t = T_0 + (T_max − T_0) · π_t;
* noise on the private positions' soft targets (the Laplace mechanism): with the tempered
  teacher distribution p_t = softmax(z_t / T_t),
      p̃_t = normalise(max(0, p_t + π_t · ε_t)),   ε_t,v ~ Laplace(0, Δ/ε),  Δ = 2,
  where Δ = 2 is the L1 sensitivity of a probability vector and ε the privacy budget of one
  released soft target (clipping and renormalising are post-processing). The noise is a fixed
  function of the *query*, the last ``noise_context`` input tokens (see "Why the noise is keyed"
  below);
* the loss   L = α · T_0² · mean_t KL(p̃_t || softmax(s_t / T_0)) + (1 − α) · CE on the
  non-private data tokens only (a hard label of a private token would teach the secret directly;
  ``private_ce: true`` keeps them).

``swing: false, private_ce: true`` is plain Hinton KD at temperature T_0 plus CE on every token
(the comparison row); ``swing: false`` alone isolates what dropping the private hard labels does. Canary exposure (``potstill/eval/privacy.py``) measures what the student learned
of secrets inserted into the teacher's training text (``pydoc_chars`` with ``canaries``).

Why both parts. The temperature alone cannot hide a secret from a rank-based audit: z/T keeps
the order of the teacher's logits, so a student that matched softmax(z/T) perfectly would rank
the secret's candidates exactly as the teacher does (the sum of the digits' log-probabilities
differs from the teacher's by a factor 1/T and a per-position constant). What the swing does is
shrink the secret's margin *in probability space* (p_t → uniform as T_t grows) so that noise of a
fixed size, set by ε, drowns it. Our first version put the noise on the logits before the
division by T_t (Laplace(1) on z, i.e. 1/T_t after tempering): the margin survived, and
benchmarks/swing.py cut mean exposure by only 44% against plain KD (T_max = 100: 46%).

Why the noise is keyed by the query. A released soft target answers a query; we answer the same
query (the last ``noise_context`` tokens, 8 by default: "pin is 4" already names a canary digit's
position, while a longer context would make each copy of a canary a new query because the text
before it differs) with the same noisy target, as a differential-privacy query cache does, so a
secret repeated in the text, seen again every epoch and in two overlapping windows per copy, is
released once. ``noise_context: 0`` draws fresh noise every step (the unkeyed reading of the paper).
Measured on benchmarks/swing.py (10 copies per canary), this did not move the exposure: our
previous version, keyed by (window row, position), gave 2.31 ± 0.18 bits, this one 2.13 ± 0.34;
at ε = 1 the clipped noise already hides one position's margin almost entirely, even averaged
over many fresh draws. With 100 copies per canary, plain KD leaks 14.1 bits (max 16.6) and
Swing 1.52, the level of never-inserted canaries.

Only the teacher's side swings: the student is always read at T_0. With the student at T_t as
well (our first version), a high temperature makes KL(softmax(z/T) || softmax(s/T)) · T² approach
logit matching (Hinton et al., Sec. 2.1), so the student still copies the teacher's ranking of the
secret's digits: on benchmarks/swing.py that version cut mean exposure by only 19% against plain KD.

The paper's exact detector, temperature schedule and noise calibration were not available to us:
the forms above follow its abstract (per-token temperature from the likelihood of private
information; noise injected into the soft targets; a privacy budget) and are our choice.
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
    epsilon: float = 1.0              # privacy budget per private soft target: Laplace(2/ε) on p_t; 0 = no noise
    private_chars: str = "0123456789"
    swing: bool = True                # false: no temperature swing and no noise (KD at T_0)
    private_ce: bool = False          # also take CE on private tokens (plain KD: swing false, private_ce true)
    shield: bool = True               # also swing the private vocabulary's share of public positions' targets
    noise_context: int = 8            # noise keyed by the last k input tokens (same query, same noise); 0: fresh per step
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.alpha <= 1:
            raise ValueError("alpha must be in [0, 1]")
        if self.base_temperature <= 0 or self.max_temperature < self.base_temperature:
            raise ValueError("need 0 < base_temperature <= max_temperature")
        if self.epsilon < 0:
            raise ValueError("epsilon must be >= 0 (0 = no noise)")
        if self.noise_context < 0:
            raise ValueError("noise_context must be >= 0 (0 = fresh noise every step)")


def privacy_likelihood(y: torch.Tensor, private: torch.Tensor) -> torch.Tensor:
    """π per position: 1 where the target token is private (``private``: bool per vocabulary id)."""
    return torch.where(y >= 0, private[y.clamp_min(0)], torch.zeros_like(y, dtype=torch.bool)).float()


def hashed_uniform(keys: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Uniform(0, 1) draws of shape ``keys.shape + (n,)`` that depend only on (key, column, seed).

    A counter-based generator (the splitmix64 finaliser) so that one position's noise is the same
    every time its window is drawn; torch's generators are stateful and cannot be keyed per element.
    int64 products wrap modulo 2^64 as the finaliser needs; right shifts are masked to be logical.
    """
    salt = torch.tensor(seed + 1, dtype=torch.long, device=keys.device) * 0x632BE59BD9B4E019
    x = keys.long()[..., None] * n + torch.arange(n, device=keys.device) + salt
    for shift, mult in ((30, -4658895280553007687), (27, -7723592293110705685)):     # 0xbf58476d1ce4e5b9, 0x94d049bb133111eb
        x = (x ^ ((x >> shift) & ((1 << (64 - shift)) - 1))) * mult
    x = x ^ ((x >> 31) & ((1 << 33) - 1))
    u = ((x >> 11) & ((1 << 53) - 1)).double() / float(1 << 53)
    return u.clamp(1e-7, 1 - 1e-7).float()


def context_keys(x: torch.Tensor, k: int) -> torch.Tensor:
    """One int64 key per position of ``x`` (batch, length): a polynomial hash of the last ``k`` tokens
    up to and including that position. Equal contexts get equal keys wherever they occur; a position
    with fewer than ``k`` tokens before it in its window hashes the shorter context (another query)."""
    pad = torch.full((x.shape[0], k - 1), -1, dtype=torch.long, device=x.device)
    win = torch.cat([pad, x.long()], 1).unfold(1, k, 1) + 1                 # (batch, length, k); 0 = no token
    powers = torch.ones(k, dtype=torch.long, device=x.device)
    for j in range(1, k):                                                    # int64 products wrap modulo 2^64
        powers[j] = powers[j - 1] * 1_000_003
    return (win * powers.flip(0)).sum(-1)


def laplace_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard Laplace draws by the inverse CDF of uniforms in (0, 1) (the ends must be excluded)."""
    u = u - 0.5
    return -torch.sign(u) * torch.log1p(-2 * u.abs())


def laplace_mechanism(p: torch.Tensor, weight: torch.Tensor, epsilon: float, keys: torch.Tensor | None = None,
                      seed: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """normalise(max(0, p + weight · Laplace(2/ε))) along the last axis; ``weight`` (shape p.shape[:-1])
    scales the noise per position (0: untouched). ``keys`` fix each position's draws."""
    if epsilon <= 0:
        return p
    n = p.shape[-1]
    u = hashed_uniform(keys.to(p.device), n, seed) if keys is not None else \
        torch.rand(p.shape, generator=generator).to(p.device).clamp(1e-7, 1 - 1e-7)
    noisy = (p + (2.0 / epsilon) * weight[..., None] * laplace_from_uniform(u)).clamp_min(0)
    total = noisy.sum(-1, keepdim=True)
    return torch.where(total > 0, noisy / total.clamp_min(1e-30), torch.full_like(p, 1.0 / n))


def swing_targets(teacher_logits: torch.Tensor, pi: torch.Tensor, t0: float, tmax: float, epsilon: float,
                  keys: torch.Tensor | None = None, seed: int = 0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Log of the swung, noised soft targets p̃_t (−inf where clipping zeroed an entry).

    ``keys`` (one integer per position, e.g. :func:`context_keys`) fixes each position's noise;
    without them the noise is drawn from ``generator``.
    """
    temp = t0 + (tmax - t0) * pi
    p = torch.softmax(teacher_logits.float() / temp[..., None], dim=-1)
    return laplace_mechanism(p, pi, epsilon, keys, seed, generator).log()


def shield_private_vocab(log_target: torch.Tensor, teacher_logits: torch.Tensor, private_vocab: torch.Tensor,
                         pi: torch.Tensor, tmax: float, epsilon: float, keys: torch.Tensor | None = None,
                         seed: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """At public positions (π < 1), keep the target's total mass on the private vocabulary entries
    but split it among them as the swung, noised teacher does at private positions:
    softmax(z_private / T_max) through the Laplace mechanism. (The teacher's *dark knowledge* at a
    public position, e.g. which digit it expects after "4" where the text goes on with ".", is
    where a memorised secret's digit n-grams reach the student otherwise.)"""
    priv = private_vocab.to(log_target.device)
    if not priv.any():
        return log_target
    p = log_target.exp()
    mass = p[..., priv].sum(-1, keepdim=True)
    q = torch.softmax(teacher_logits.float()[..., priv] / tmax, dim=-1)
    q = laplace_mechanism(q, torch.ones_like(pi), epsilon, keys, seed + 7919, generator)
    shielded = p.clone()
    shielded[..., priv] = mass * q
    return torch.where((pi < 1)[..., None], shielded, p).log()


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
        keys = context_keys(x, cfg.noise_context) if cfg.noise_context else None
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        log_target = swing_targets(t, pi, cfg.base_temperature, cfg.max_temperature,
                                   cfg.epsilon if cfg.swing else 0.0, keys, cfg.seed, g)
        if cfg.swing and cfg.shield:
            log_target = shield_private_vocab(log_target, t, self.private, pi, cfg.max_temperature, cfg.epsilon,
                                              keys, cfg.seed, g)
        s = self.student(x)
        # the teacher's side swings to T_t; the student stays at T_0. (Dividing the student by T_t
        # too, as in Hinton KD at a high temperature, turns the private positions' loss into logit
        # matching, which hands the secret over: see the module docstring.)
        kl = token_divergence(s.float() / cfg.base_temperature, log_target, "forward_kl")
        kd = cfg.base_temperature ** 2 * masked_token_mean(kl, mask)
        public = mask if cfg.private_ce else mask & ~self.private.to(y.device)[y.clamp_min(0)]
        ce = F.cross_entropy(s.float().reshape(-1, s.shape[-1]), torch.where(public, y, -1).reshape(-1), ignore_index=-1) \
            if public.any() else s.sum() * 0
        return {"student": cfg.alpha * kd + (1 - cfg.alpha) * ce, "log/kd": kd.detach(), "log/ce": ce.detach(),
                "log/private_share": masked_token_mean(pi, mask).detach()}
