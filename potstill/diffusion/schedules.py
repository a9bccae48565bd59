"""Noise-level schedules (EDM's "sigma" parametrisation: x_sigma = x_0 + sigma * n)."""
from __future__ import annotations

import torch


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (arXiv 2206.00364, eq. 5): ``n`` levels from sigma_max down to sigma_min, then 0.

    sigma_i = (sigma_max^(1/rho) + i/(n-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.
    ``n = 1`` gives [sigma_max, 0] (a one-step sampler).
    """
    if n < 1:
        raise ValueError(f"a schedule needs at least one step, got {n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if n == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sig, sig.new_zeros(1)])


def nested_sigmas(n: int, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """``n`` steps of the Karras curve taken all the way to 0 (sigma_min = 0):
    sigma_k = (sigma_max^(1/rho) (1 - k/n))^rho, k = 0..n. The grid for n/2 steps is every other
    point of the grid for n steps, which progressive distillation needs."""
    if n < 1:
        raise ValueError(f"a schedule needs at least one step, got {n}")
    u = torch.arange(n + 1, dtype=torch.float64) / n
    return (sigma_max ** (1 / rho) * (1 - u)) ** rho


__all__ = ["karras_sigmas", "nested_sigmas"]
