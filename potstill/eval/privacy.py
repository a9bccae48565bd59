"""Canary exposure (Carlini et al., *The Secret Sharer*, arXiv 1802.08232): how much a language
model has memorised a secret that appeared in its training text.

A canary is ``prefix + secret`` with the secret drawn uniformly from a space R (e.g. 6 digits).
Rank every candidate secret by the model's log-perplexity of it after the prefix; the canary's
exposure is

    exposure = log2 |R| - log2 rank(secret)

(rank 1 = most likely). For large R the rank is estimated from ``n`` random candidates (the
paper's sampling approximation): rank ~ |R| * max(h, 1) / n with h the candidates scoring at
least as well as the secret (ties count against it). A model that cannot tell secrets apart gets
exposure ~ 0; one that ranks the secret above every sampled candidate gets log2 n, the most a
sample of that size can show (the estimate saturates there instead of jumping to log2 |R|).

Swing Distillation (catalog K11) is judged by the mean exposure of inserted canaries in the
teacher and in the students distilled from it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def sequence_nll(model, prefix: torch.Tensor, secrets: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Sum of -log p(secret tokens | prefix) for every row of ``secrets`` (n, k); prefix (t,)."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(secrets), batch_size):
        s = secrets[i:i + batch_size].to(dev)
        x = torch.cat([prefix.to(dev).expand(len(s), -1), s], 1)
        logp = F.log_softmax(model(x[:, :-1]).float(), -1)
        t = len(prefix)
        tok = logp[:, t - 1:].gather(-1, s.unsqueeze(-1)).squeeze(-1)   # positions predicting the secret
        out.append(-tok.sum(1).cpu())
    return torch.cat(out)


def exposure(model, prefix: torch.Tensor, secret: torch.Tensor, alphabet: list[int], n_candidates: int = 2000,
             seed: int = 0) -> float:
    """Exposure in bits of ``secret`` (k token ids, each from ``alphabet``) after ``prefix``.

    When the whole space fits in ``n_candidates`` (e.g. 10^5 five-digit secrets), every candidate
    is scored and the rank is exact (rank = 1 + candidates at least as likely); otherwise the
    sampled estimate above."""
    if len(prefix) < 1:
        raise ValueError("a canary needs a prefix of at least one token")
    secret, prefix = secret.cpu(), prefix.cpu()
    k = len(secret)
    space = len(alphabet) ** k
    alpha = torch.tensor(alphabet)
    if space <= n_candidates:
        idx = torch.arange(space)
        digits = torch.stack([(idx // len(alphabet) ** (k - 1 - i)) % len(alphabet) for i in range(k)], 1)
        cand = alpha[digits]
    else:
        g = torch.Generator().manual_seed(seed)
        cand = alpha[torch.randint(len(alphabet), (n_candidates, k), generator=g)]
    cand = cand[(cand != secret).any(1)]                      # the secret itself is not a competitor
    nll = sequence_nll(model, prefix, torch.cat([secret[None], cand]))
    hits = int((nll[1:] <= nll[0]).sum())                     # candidates at least as likely as the secret
    rank = 1 + hits if space <= n_candidates else space * max(hits, 1) / len(cand)
    return math.log2(space) - math.log2(rank)


@torch.no_grad()
def secret_nll_table(model, prefix: torch.Tensor, alphabet: list[int], k: int, batch_size: int = 1024) -> torch.Tensor:
    """-log p(s | prefix) for *every* secret s of k symbols from ``alphabet``, in lexicographic order.

    One forward pass over the |A|^(k-1) rows ``prefix + s_1..s_{k-1}`` gives, at each of their
    positions, the probabilities of the next symbol: the first k-1 terms of every secret's chain
    rule and the full distribution of its last symbol. |A| times cheaper than scoring each secret,
    and shared by every canary with the same prefix."""
    model.eval()
    dev = next(model.parameters()).device
    a, n = torch.tensor(alphabet), len(alphabet)
    idx = torch.arange(n ** (k - 1))
    rows = torch.stack([(idx // n ** (k - 2 - i)) % n for i in range(k - 1)], 1) if k > 1 else idx[:, None][:, :0]
    out = []
    for i in range(0, len(rows), batch_size):
        r = rows[i:i + batch_size]
        x = torch.cat([prefix.cpu().expand(len(r), -1), a[r]], 1).to(dev)
        logp = F.log_softmax(model(x).float(), -1)[:, len(prefix) - 1:].cpu()    # predicting s_1 .. s_k
        head = logp[:, :k - 1].gather(-1, a[r].unsqueeze(-1)).squeeze(-1).sum(1)   # log p(s_1..s_{k-1})
        last = logp[:, k - 1][:, a]                                                  # log p(s_k = each symbol)
        out.append(-(head[:, None] + last).reshape(-1))
    return torch.cat(out)


def exact_exposures(model, prefix: torch.Tensor, secrets: list[torch.Tensor], alphabet: list[int]) -> list[float]:
    """Exact exposure (all |A|^k candidates ranked) of each secret after the shared ``prefix``."""
    k = len(secrets[0])
    table = secret_nll_table(model, prefix, alphabet, k)
    pos = {v: i for i, v in enumerate(alphabet)}
    out = []
    for s in secrets:
        j = sum(pos[int(t)] * len(alphabet) ** (k - 1 - i) for i, t in enumerate(s))
        rank = int((table <= table[j]).sum())          # itself + every candidate at least as likely
        out.append(math.log2(len(table)) - math.log2(rank))
    return out


__all__ = ["sequence_nll", "exposure", "secret_nll_table", "exact_exposures"]
