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


def strided_sigmas(n: int, sigma_max: float = 80.0, levels: int = 1000) -> torch.Tensor:
    """``n`` generator steps evenly strided over a ``levels``-step Karras grid, then 0.

    DMD2 (arXiv 2405.14867, sec. 4.5) samples its 4-step generator at timesteps 999, 749, 499,
    249 of the teacher's 1000-step discretisation; this is the same stride on the grid that
    potstill's DMD/DMD2 draw their matching noise levels from (``karras_sigmas(levels)``), giving
    80, 17.5, 2.5, 0.17 for n = 4 (a 4-step Karras schedule would end at 0.47 and 0.002, one
    step spent on an almost clean image). ``n = 1`` gives [sigma_max, 0].
    """
    if not 1 <= n <= levels:
        raise ValueError(f"need 1 <= n <= levels, got n={n}, levels={levels}")
    grid = karras_sigmas(levels, sigma_max=sigma_max)
    idx = torch.arange(n) * levels // n
    return torch.cat([grid[idx], grid.new_zeros(1)])


def plan_sigmas(plan: dict, steps: int | None = None) -> torch.Tensor:
    """The noise levels of an exported model's sampling plan (``model.json``'s ``sampling``).

    A plan names its ``schedule`` (karras | nested | strided) and ``sigma_max``; ``steps``
    overrides the plan's step count.
    """
    n = int(steps or plan.get("steps", 18))
    kind, sigma_max = plan.get("schedule", "karras"), float(plan.get("sigma_max", 80.0))
    if kind == "nested":
        return nested_sigmas(n, sigma_max=sigma_max)
    if kind == "strided":
        return strided_sigmas(n, sigma_max=sigma_max)
    if kind == "karras":
        return karras_sigmas(n, sigma_max=sigma_max)
    raise ValueError(f"unknown schedule {kind!r} in the sampling plan (karras, nested, strided)")


__all__ = ["karras_sigmas", "nested_sigmas", "strided_sigmas", "plan_sigmas"]
