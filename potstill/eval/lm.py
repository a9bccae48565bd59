"""Language-model metrics: next-token NLL / bits per character, and exact match on a prompted task."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def token_nll(model, data, batch_size: int = 64) -> dict[str, float]:
    """Mean next-token negative log-likelihood (nats) over every target != -1, and bits per token."""
    model.eval()
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        x, y = data.x[i:i + batch_size].to(dev), data.y[i:i + batch_size].to(dev)
        logits = model(x).float()
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1,
                                       reduction="sum"))
        count += int((y != -1).sum())
    nll = total / max(count, 1)
    return {"nll": nll, "bpc": nll / math.log(2), "tokens": count}


@torch.no_grad()
def exact_match(model, prompts: list[str], answers: list[str], itos: list[str], batch_size: int = 256) -> float:
    """Share (%) of prompts whose greedy continuation starts with the answer (which ends in its stop mark)."""
    from ..data.text import decode, encode

    model.eval()
    dev = next(model.parameters()).device
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    right = 0
    for length, rows in by_len.items():
        for j in range(0, len(rows), batch_size):
            chunk = rows[j:j + batch_size]
            x = torch.stack([encode(prompts[i], itos) for i in chunk]).to(dev)
            n = max(len(answers[i]) for i in chunk)
            out = model.generate(x, n, greedy=True)[:, length:].cpu()
            right += sum(decode(o, itos).startswith(answers[i]) for o, i in zip(out, chunk))
    return 100.0 * right / max(len(prompts), 1)


__all__ = ["token_nll", "exact_match"]
