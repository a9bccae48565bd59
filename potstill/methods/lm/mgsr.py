"""Multi-Granularity Semantic Revision for Large Language Model Distillation (MGSR, catalog K3).

Liu et al., arXiv 2407.10068. Three revisions of student-generated distillation data and of the
loss, at three granularities, each switchable for the ablation:

    L = L_SFT + L_KD + L_span          (unit weights, as in the paper)

* **Sequence level — SCRG** (``scrg_rounds`` > 0): on generated steps the student samples a
  continuation y; at every generated position i where the student's token differs from the
  teacher's choice argmax p_T(·|y_<i), the "semantic cognitive difference" KL(p_T || q_S) is
  computed; the worst position j is replaced by the teacher's token and the student regenerates
  y_>j. Repeated ``scrg_rounds`` times; the corrected sequences are the distillation data.
* **Token level — DAC-KL** (``dac_kl``): a small learnable sub-network f_φ reads the teacher's
  sorted probabilities p_(1) ≥ … ≥ p_(V) and predicts a lower and an upper cumulative-mass
  quantile (l, u). Token k (in that order, cumulative mass C_k) is kept with the soft weight
  w_k = σ((u − C_{k−1})/τ) · σ((C_k − l)/τ), i.e. the long tail beyond mass u and any head mass
  below l are clipped. The loss is KL(p̃ || q̃) between the renormalised clipped teacher and
  student (p̃ ∝ w ⊙ p, q̃ ∝ w ⊙ q). f_φ is trained end to end through this loss, plus a guard
  ``keep_weight`` · relu(``min_mass`` − Σ_k w_k p_k)² so it cannot collapse onto an easy, tiny
  support. With ``dac_kl: false`` L_KD is the plain forward KL.
* **Span level** (``span_weight`` > 0): the sequence is cut into spans (maximal runs of
  "word" tokens: letters/digits; every other token ends a span). For adjacent tokens k, k+1 of
  one span the probability correlation c_k = p_k ⊙ p_{k+1} (elementwise) is formed for teacher
  and student and L_span = mean_k ‖c_k^T − c_k^S‖₁.

The paper's method sections were not available to us; the above follows its abstract and the
public reviews that quote its equations (SCRG: max-KL position among mismatches; DAC-KL: an MLP
predicting quantiles; span correlation: Hadamard products of adjacent distributions). Not
verified against the paper: the KL direction, f_φ's inputs and size, the clipping's exact form
and the span distance; the mass guard is ours (the reviews flag collapse as a risk).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.registry import METHODS
from ...losses.divergences import masked_token_mean, token_divergence
from .language_model import next_token_nll
from .token_kd import TokenKD, TokenKDConfig, init_student


@dataclass
class MGSRConfig(TokenKDConfig):
    on_policy: float = 0.5            # share of steps on student-generated (SCRG-revised) sequences
    sft_weight: float = 1.0           # L_SFT on the data batches
    scrg_rounds: int = 1              # 0 = no sequence correction
    dac_kl: bool = True
    clip_hidden: int = 32             # f_φ width
    clip_tau: float = 0.02            # softness of the clipping weights
    min_mass: float = 0.9             # guard: keep at least this much teacher mass
    keep_weight: float = 10.0
    span_weight: float = 1.0          # 0 = no span loss

    def __post_init__(self):
        super().__post_init__()
        if self.divergence != "forward_kl":
            raise ValueError("mgsr takes KL(p_T || q_S) (dac_kl: false gives the unclipped one); leave divergence")
        if self.scrg_rounds < 0 or self.span_weight < 0 or self.sft_weight < 0:
            raise ValueError("scrg_rounds, span_weight and sft_weight must be >= 0")
        if not 0 < self.min_mass <= 1 or self.clip_tau <= 0 or self.clip_hidden < 1:
            raise ValueError("min_mass in (0, 1], clip_tau > 0, clip_hidden >= 1")


class Clipper(nn.Module):
    """f_φ: sorted teacher probabilities (…, V) -> soft keep-weights in the teacher's sorted order."""

    def __init__(self, vocab: int, hidden: int, tau: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(vocab, hidden), nn.GELU(), nn.Linear(hidden, 2))
        nn.init.zeros_(self.net[2].weight)
        with torch.no_grad():                       # start near (l, u) = (0, 0.99): almost no clipping
            self.net[2].bias.copy_(torch.tensor([-4.0, 4.6]))
        self.tau = tau

    def forward(self, p_sorted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights in sorted order, l, u)."""
        a, b = self.net(p_sorted).unbind(-1)
        lo, up = 0.5 * torch.sigmoid(a), torch.sigmoid(b)        # l in (0, 0.5), u in (0, 1)
        c = p_sorted.cumsum(-1)
        w = torch.sigmoid((up[..., None] - (c - p_sorted)) / self.tau) * torch.sigmoid((c - lo[..., None]) / self.tau)
        return w, lo, up


def dac_kl(student_logits, teacher_logits, clipper: Clipper, temperature: float = 1.0):
    """Per-token KL(p̃ || q̃) on the clipped, renormalised distributions, and the kept teacher mass."""
    p = F.softmax(teacher_logits.float() / temperature, -1)
    log_q = F.log_softmax(student_logits.float() / temperature, -1)
    p_sorted, order = p.sort(-1, descending=True)
    w_sorted, _, _ = clipper(p_sorted)
    w = torch.empty_like(w_sorted).scatter_(-1, order, w_sorted)            # back to vocabulary order
    kept = (w * p).sum(-1)
    log_w = torch.log(w.clamp_min(1e-12))
    log_pt = torch.log((w * p).clamp_min(1e-30)) - torch.log(kept.clamp_min(1e-30))[..., None]
    log_qt = log_w + log_q - torch.logsumexp(log_w + log_q, -1, keepdim=True)
    pt = log_pt.exp()
    return (pt * (log_pt - log_qt)).sum(-1), kept


def span_pairs(x: torch.Tensor, word: torch.Tensor) -> torch.Tensor:
    """(B, T-1) bool: positions k whose next-token distributions k and k+1 lie in one span.

    The distribution at position k predicts token x_{k+1}; k and k+1 share a span when the tokens
    they predict, x_{k+1} and x_{k+2}, are both word tokens (``word``: bool per vocabulary id).
    """
    w = word[x]                                                  # (B, T) is token t a word token
    pred = torch.cat([w[:, 1:], torch.zeros_like(w[:, :1])], 1)  # is the token predicted at t a word token
    return pred[:, :-1] & pred[:, 1:]


def span_correlation_loss(student_logits, teacher_logits, pairs: torch.Tensor) -> torch.Tensor:
    """mean over in-span adjacent pairs of ‖p_k ⊙ p_{k+1} (teacher) − q_k ⊙ q_{k+1} (student)‖₁."""
    p, q = F.softmax(teacher_logits.float(), -1), F.softmax(student_logits.float(), -1)
    ct, cs = p[:, :-1] * p[:, 1:], q[:, :-1] * q[:, 1:]
    return masked_token_mean((ct - cs).abs().sum(-1), pairs)


@METHODS.register("mgsr")
class MGSR(TokenKD):
    """Multi-granularity semantic revision: SCRG data, DAC-KL and span correlation, each switchable."""

    Config = MGSRConfig
    name = "mgsr"
    catalog_ids = ("K3",)
    paper = "Multi-Granularity Semantic Revision for Large Language Model Distillation"
    arxiv = "2407.10068"

    def __init__(self, cfg: MGSRConfig, student: nn.Module, teacher, vocab: int, itos: list[str] | None):
        super().__init__(cfg, student, teacher)
        self.clipper = Clipper(vocab, cfg.clip_hidden, cfg.clip_tau) if cfg.dac_kl else None
        self.word = torch.tensor([c.isalnum() for c in itos] if itos else [True] * vocab)

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, init_student(ctx.student(), cfg.student_init), ctx.teacher(), ctx.data.num_classes,
                   ctx.data.info.get("itos"))

    def param_groups(self):
        extra = list(self.clipper.parameters()) if self.clipper is not None else []
        return {"student": list(self.student.parameters()) + extra}

    @torch.no_grad()
    def revise(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One SCRG round on generated rows x (B, T): (revised x, corrected position per row, -1 if none)."""
        p0 = min(self.cfg.prompt_len, x.shape[1] - 1)
        t_logits = self.teacher(x).logits.float()
        s_logits = self.student(x).float()
        kl = token_divergence(s_logits, t_logits, "forward_kl")[:, p0 - 1:-1]      # predicting x[:, p0:]
        teacher_tok = t_logits.argmax(-1)[:, p0 - 1:-1]
        wrong = teacher_tok != x[:, p0:]
        score = torch.where(wrong, kl, torch.full_like(kl, -1.0))
        j = score.argmax(1)
        has = wrong.any(1)
        rows = torch.arange(len(x))
        x = x.clone()
        x[rows[has], p0 + j[has]] = teacher_tok[rows[has], j[has]]
        pos = torch.where(has, p0 + j, torch.full_like(j, -1))
        return self.regenerate(x, pos, step), pos

    @torch.no_grad()
    def regenerate(self, x: torch.Tensor, pos: torch.Tensor, step: int) -> torch.Tensor:
        """Resample x[b, pos_b + 1:] from the student, keeping x[b, :pos_b + 1] (rows with pos −1 are kept)."""
        from ...models.gpt import KVCache

        keep_upto = torch.where(pos >= 0, pos, torch.full_like(pos, x.shape[1]))
        start = int(keep_upto.min()) + 1
        if start >= x.shape[1]:
            return x
        g = torch.Generator().manual_seed(self.cfg.seed * 31_337 + step)
        was = self.student.training
        self.student.eval()
        cache = KVCache()
        logits = self.student(x[:, :start], cache)[:, -1]
        for t in range(start, x.shape[1]):
            probs = F.softmax(logits.float() / self.cfg.sample_temperature, -1)
            new = torch.multinomial(probs.cpu(), 1, generator=g).squeeze(1).to(x.device)
            x[:, t] = torch.where(t > keep_upto, new, x[:, t])
            if t < x.shape[1] - 1:
                logits = self.student(x[:, t:t + 1], cache)[:, -1]
        self.student.train(was)
        return x

    def sequences(self, batch, step):
        x, mask, src = super().sequences(batch, step)
        if src == "student":
            for r in range(self.cfg.scrg_rounds):
                x, _ = self.revise(x, step * 10 + r)
        return x, mask, src

    def loss(self, batch, step):
        cfg = self.cfg
        x, mask, src = self.sequences(batch, step)
        s = self.student(x)
        t = self.teacher_logits(x)
        logs = {"log/on_policy": torch.tensor(float(src != "data"))}
        if self.clipper is not None:
            d, kept = dac_kl(s, t, self.clipper, cfg.temperature)
            kd = masked_token_mean(d, mask)
            kept = masked_token_mean(kept, mask)
            total = kd + cfg.keep_weight * F.relu(cfg.min_mass - kept) ** 2
            logs["log/kept_mass"] = kept.detach()
        else:
            kd = masked_token_mean(token_divergence(s, t, "forward_kl", temperature=cfg.temperature), mask)
            total = kd
        logs["log/kd"] = kd.detach()
        if cfg.span_weight > 0:
            sp = span_correlation_loss(s, t, span_pairs(x, self.word.to(x.device))[:, :] & mask[:, :-1] & mask[:, 1:])
            total = total + cfg.span_weight * sp
            logs["log/span"] = sp.detach()
        if cfg.sft_weight > 0 and src == "data":
            ce = next_token_nll(s, batch["y"])
            total = total + cfg.sft_weight * ce
            logs["log/ce"] = ce.detach()
        return {"student": total, **logs}
