"""Weight quantization for compressed students (Polino, Pascanu & Alistarh, arXiv 1802.05668, §2).

Uniform bucketed quantization: the weights of a tensor, flattened, are cut into buckets of
``bucket`` consecutive values; in each bucket v ↦ (v − β)/α with α = max − min, β = min, so the
values lie in [0, 1]; then onto s = 2^bits evenly spaced levels,

    deterministic:  Q(v) = round(v (s − 1)) / (s − 1)
    stochastic:     Q(v) = (floor(v (s − 1)) + Bernoulli(frac(v (s − 1)))) / (s − 1)   (unbiased)

and back: Q · α + β. Stored, a bucket costs ``bits`` per weight plus α and β (two fp32 numbers).

Non-uniform (learned) points: ``nearest_point`` maps each weight onto the nearest of a tensor's
points; the result is a gather, so the loss's gradient reaches the points:
dL/dp_j = Σ_{i quantized to p_j} dL/dQ_i (the paper's differentiable quantization, without
bucket scaling).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def quantize_uniform(w: torch.Tensor, bits: int, bucket: int = 256, stochastic: bool = False,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Q(w): every bucket of ``bucket`` consecutive weights on 2^bits levels between its min and max."""
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    s = 2 ** bits
    flat = w.detach().reshape(-1).float()
    pad = (-len(flat)) % bucket
    v = torch.cat([flat, flat[-1:].expand(pad)]) if pad else flat
    v = v.view(-1, bucket)
    lo, hi = v.min(1, keepdim=True).values, v.max(1, keepdim=True).values
    alpha = (hi - lo).clamp_min(1e-12)
    u = (v - lo) / alpha * (s - 1)
    if stochastic:
        fl = u.floor()
        u = fl + (torch.rand(u.shape, generator=generator) < (u - fl)).float()
    else:
        u = u.round()
    q = (u / (s - 1) * alpha + lo).view(-1)[:len(flat)]
    return q.view_as(w).to(w.dtype)


def straight_through(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward value ``q``, gradient passed to ``w`` unchanged (the gradient at Q(w) updates w)."""
    return w + (q - w).detach()


def nearest_point(w: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Each weight replaced by its nearest point; differentiable in ``points``, not in ``w``."""
    idx = (w.detach().reshape(-1, 1) - points.detach().reshape(1, -1)).abs().argmin(1)
    return points[idx].view_as(w)


def quantizable(module: nn.Module) -> list[str]:
    """Names of the weight tensors that get quantized: every ``*.weight`` with 2+ dims (conv and linear
    kernels); biases and normalisation parameters stay fp32 (a small share of a network)."""
    return [n for n, p in module.named_parameters() if n.endswith("weight") and p.dim() >= 2]


def packed_bytes(module: nn.Module, bits: int, bucket: int = 256, names: list[str] | None = None) -> int:
    """What the quantized network takes to store: ``bits`` per quantized weight (rounded up to bytes per
    tensor) + two fp32 numbers per bucket + fp32 for everything not quantized."""
    names = set(quantizable(module) if names is None else names)
    total = 0
    for n, p in module.named_parameters():
        if n in names:
            total += (p.numel() * bits + 7) // 8 + 8 * ((p.numel() + bucket - 1) // bucket)
        else:
            total += 4 * p.numel()
    return total


@torch.no_grad()
def with_weights(module: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """A trainable copy of ``module`` with the named parameters replaced (e.g. by their quantized values)."""
    import copy

    out = copy.deepcopy(module)
    own = dict(out.named_parameters())
    for n, v in weights.items():
        own[n].copy_(v)
    return out.requires_grad_(True)


def fp32_bytes(module: nn.Module) -> int:
    return 4 * sum(p.numel() for p in module.parameters())
