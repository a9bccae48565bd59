"""DistillSpec: Improving Speculative Decoding via Knowledge Distillation (catalog K17).

Zhou, Lyu, Rawat, Menon, Rostamizadeh, Kumar, Kagy & Agarwal, arXiv 2310.08461. The draft
model q_θ of a speculative decoder (``potstill/decoding.py``) is distilled from the target p it
will serve, with the GKD objective (arXiv 2306.13649) over a chosen data source:

    min_θ  E_{x ~ prompts} E_{y ~ source(x)} [ (1/|y|) Σ_t D( p(· | x, y_<t) || q_θ(· | x, y_<t) ) ]   (paper Eq. 3)

* ``source``: each step draws its sequences from a mixture ``data_mix`` of the fixed dataset
  ("data"), draft samples ("student", on-policy: the paper's main finding is that these work best)
  and target samples ("teacher"); generated sequences continue ``prompt_len`` data tokens.
* ``D``: any of the token-level divergences; the paper compares FKL, RKL, JSD(β) and TVD. TVD
  is the one tied to speculative decoding: with sampling, the target accepts a draft token with
  probability Σ_v min(p_v, q_v) = 1 − TVD(p, q) (Leviathan et al., arXiv 2211.17192, Cor. 3.6), so
  the expected acceptance rate β = E[1 − TVD] is what the draft should raise. In greedy mode a
  draft token is accepted iff argmax q = argmax p. Both are logged per step
  (``log/accept_sampled``, ``log/accept_greedy``) on the positions that carry the loss.
* The draft starts from a trained small model (``student_init``: the paper distils pretrained
  drafts); distilling a randomly initialised draft purely on its own samples learns from noise
  (on benchmarks/distillspec.py such drafts were accepted *less* often than the undistilled one).
* Samples are drawn at ``sample_temperature``, which should be the temperature the decoder will
  use (the paper matches the distillation temperature to decoding).

What this file adds to token-level KD (``token_kd.py``) is exactly the paper's recipe: the
three-way data mixture, TVD as the acceptance-rate objective, and the acceptance diagnostics.
Left out: lossy speculative decoding with a lenience factor (paper Sec. 5.3).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...core.registry import METHODS
from ...losses.divergences import masked_token_mean
from .token_kd import TokenKD, TokenKDConfig

SOURCES = ("data", "student", "teacher")


@dataclass
class DistillSpecConfig(TokenKDConfig):
    divergence: str = "tv"
    data_mix: dict[str, float] = field(default_factory=lambda: {"data": 0.0, "student": 1.0, "teacher": 0.0})

    def __post_init__(self):
        super().__post_init__()
        bad = sorted(set(self.data_mix) - set(SOURCES))
        if bad:
            raise ValueError(f"data_mix: unknown source(s) {bad}; choose from {', '.join(SOURCES)}")
        w = [float(self.data_mix.get(k, 0.0)) for k in SOURCES]
        if min(w) < 0 or sum(w) <= 0:
            raise ValueError("data_mix weights must be >= 0 and not all zero")
        if self.on_policy or self.sequence_kd:
            raise ValueError("distillspec picks its sources with data_mix; leave on_policy and sequence_kd unset")


def acceptance(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0):
    """Per-position acceptance probability of a speculative decoder: (sampled, greedy).

    sampled = Σ_v min(p_v, q_v) = 1 − TVD(p, q) at ``temperature``; greedy = [argmax q = argmax p].
    """
    p = torch.softmax(teacher_logits.float() / temperature, -1)
    q = torch.softmax(student_logits.float() / temperature, -1)
    sampled = torch.minimum(p, q).sum(-1)
    greedy = (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float()
    return sampled, greedy


@METHODS.register("distillspec")
class DistillSpec(TokenKD):
    """Draft-model distillation for speculative decoding: on-policy data, selectable divergence."""

    Config = DistillSpecConfig
    name = "distillspec"
    catalog_ids = ("K17",)
    paper = "DistillSpec: Improving Speculative Decoding via Knowledge Distillation"
    arxiv = "2310.08461"

    def source(self, step: int) -> str:
        """Draw this step's source from ``data_mix``: a pure function of (seed, step)."""
        w = torch.tensor([float(self.cfg.data_mix.get(k, 0.0)) for k in SOURCES])
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        return SOURCES[int(torch.multinomial(w / w.sum(), 1, generator=g))]

    def extra_logs(self, student_logits, teacher_logits, mask) -> dict:
        with torch.no_grad():
            sampled, greedy = acceptance(student_logits, teacher_logits, self.cfg.sample_temperature)
        return {"log/accept_sampled": masked_token_mean(sampled, mask), "log/accept_greedy": masked_token_mean(greedy, mask)}
