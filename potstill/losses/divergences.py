"""Divergences between categorical distributions given as logits.

The classifier functions reduce by the mean over the leading (batch) rows; the token-level ones
(language models) return one value per position for masking. All compute in float32.
Conventions: ``p`` is the target (teacher) distribution, ``q`` the model (student).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(p || q) with p = softmax(p_logits / T), q = softmax(q_logits / T); mean over rows."""
    log_p = F.log_softmax(p_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(q_logits.float() / temperature, dim=-1)
    return _plogp_ratio(log_p, log_q).sum(-1).mean()


def _plogp_ratio(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Elementwise p·(log p − log q), with 0·log 0 = 0 (masked logits of −inf give p = 0)."""
    return torch.where(log_p > -torch.inf, log_p.exp() * (log_p - log_q), torch.zeros_like(log_p))


def soft_target_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. (arXiv 1503.02531), the soft-target term: T^2 * KL(softmax(t/T) || softmax(s/T)).

    The T^2 factor keeps the gradient magnitude of the soft term comparable to the hard-label
    term when T changes (the gradient of the KL scales as 1/T^2).
    """
    return temperature**2 * kl_divergence(teacher_logits, student_logits, temperature)


def js_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """Generalised Jensen-Shannon divergence, mean over rows:

        JSD_beta(p, q) = beta * KL(p || m) + (1 - beta) * KL(q || m),   m = beta * p + (1 - beta) * q

    beta = 0.5 gives the symmetric JS divergence (bounded by log 2).
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    log_p = F.log_softmax(p_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(q_logits.float() / temperature, dim=-1)
    # log m = logsumexp(log beta + log p, log(1-beta) + log q), stable in log space
    log_m = torch.logsumexp(torch.stack([log_p + torch.log(torch.tensor(beta)),
                                         log_q + torch.log(torch.tensor(1.0 - beta))]), dim=0)
    kl_pm = _plogp_ratio(log_p, log_m).sum(-1)
    kl_qm = _plogp_ratio(log_q, log_m).sum(-1)
    return (beta * kl_pm + (1.0 - beta) * kl_qm).mean()


# --- token-level divergences for language models ---------------------------------------------
#
# Over the vocabulary at every position; p = teacher, q = student, both from logits, in float32.
# Each returns per-token values (..., T) so callers mask and normalise themselves: under gradient
# accumulation the mean must divide by the token count of the *whole* accumulated batch, not of
# each micro-batch (see :func:`masked_token_mean`).

def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.log_softmax(logits.float() / temperature, dim=-1)


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor, w: float) -> torch.Tensor:
    """log(w·a + (1 − w)·b), computed in log space (w in [0, 1])."""
    if w == 1.0:
        return log_a
    if w == 0.0:
        return log_b
    return torch.logaddexp(log_a + math.log(w), log_b + math.log(1.0 - w))


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "forward_kl",
                     beta: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """Per-token divergence between teacher p and student q (shape of the logits without the vocabulary axis).

    ``kind``:

    * ``forward_kl``  KL(p || q) = sum_v p log(p / q)  (mean-seeking; classic KD);
    * ``reverse_kl``  KL(q || p)  (mode-seeking; MiniLLM, on-policy GKD);
    * ``jsd``         generalised JSD with the GKD convention (Agarwal et al., arXiv 2306.13649):
      JSD(β) = β KL(p || m) + (1 − β) KL(q || m),  m = β p + (1 − β) q. It vanishes at β = 0 and
      β = 1; JSD(β)/β → KL(p || q) as β → 0 and JSD(β)/(1 − β) → KL(q || p) as β → 1
      (so small β behaves like forward KL, large β like reverse KL);
    * ``tv``          total variation, ½ sum_v |p − q|;
    * ``skew_kl``     KL(p || β p + (1 − β) q)  (DistiLLM's skew KL, β = α in its notation);
    * ``skew_rkl``    KL(q || β q + (1 − β) p)  (skew reverse KL).
    """
    log_p, log_q = _log_probs(teacher_logits, temperature), _log_probs(student_logits, temperature)
    if kind == "forward_kl":
        return _plogp_ratio(log_p, log_q).sum(-1)
    if kind == "reverse_kl":
        return _plogp_ratio(log_q, log_p).sum(-1)
    if kind == "tv":
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if kind == "jsd":
        log_m = _log_mix(log_p, log_q, beta)
        return beta * _plogp_ratio(log_p, log_m).sum(-1) + (1.0 - beta) * _plogp_ratio(log_q, log_m).sum(-1)
    if kind == "skew_kl":
        return _plogp_ratio(log_p, _log_mix(log_p, log_q, beta)).sum(-1)
    if kind == "skew_rkl":
        return _plogp_ratio(log_q, _log_mix(log_q, log_p, beta)).sum(-1)
    raise ValueError(f"unknown divergence {kind!r}; choose from {', '.join(TOKEN_DIVERGENCES)}")


TOKEN_DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tv", "skew_kl", "skew_rkl")


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor | None = None,
                      num_tokens: float | torch.Tensor | None = None) -> torch.Tensor:
    """sum(values · mask) / N, N = the mask's count, or ``num_tokens`` when given.

    With gradient accumulation over k micro-batches, pass the token count of all k together as
    ``num_tokens``: the summed micro-batch losses then equal the loss of the full batch exactly
    (a per-micro-batch mean would weight tokens of short micro-batches more).
    """
    if mask is None:
        mask = torch.ones_like(values, dtype=torch.bool)
    mask = mask.to(values.dtype)
    denom = mask.sum() if num_tokens is None else num_tokens
    return (values * mask).sum() / torch.clamp(torch.as_tensor(denom, dtype=values.dtype, device=values.device), min=1.0)


def top_k_teacher(teacher_logits: torch.Tensor, k: int, tail: str = "renormalize") -> torch.Tensor:
    """A sparse teacher: keep its ``k`` largest logits per position; returns logits usable as ``p``.

    ``tail`` says what happens to the probability mass outside the top k: ``renormalize`` drops it
    (the top k are renormalised: the other tokens get −inf, probability 0); ``uniform`` spreads it
    evenly over the other tokens (the distribution keeps the teacher's top-k probabilities
    exactly). Stored top-k logits (values + indices) are what an offline teacher cache keeps.
    """
    if not 1 <= k <= teacher_logits.shape[-1]:
        raise ValueError(f"k must be in [1, vocabulary size], got {k}")
    logits = teacher_logits.float()
    vals, idx = logits.topk(k, dim=-1)
    out = torch.full_like(logits, -torch.inf)
    out.scatter_(-1, idx, vals)
    if tail == "renormalize" or k == logits.shape[-1]:
        return out
    if tail != "uniform":
        raise ValueError(f"tail must be 'renormalize' or 'uniform', not {tail!r}")
    log_z = torch.logsumexp(logits, -1, keepdim=True)
    top_logp = vals - log_z                                           # the teacher's own top-k log-probs
    rest = torch.clamp(1 - top_logp.exp().sum(-1, keepdim=True), min=1e-12)
    tail_logp = torch.log(rest / (logits.shape[-1] - k))
    out = tail_logp.expand_as(logits).clone()
    out.scatter_(-1, idx, top_logp)
    return out
