"""Divergences between categorical distributions given as logits.

All functions reduce by the mean over the leading (batch) rows and compute in float32.
Conventions: ``p`` is the target (teacher) distribution, ``q`` the model (student).
"""
from __future__ import annotations

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
