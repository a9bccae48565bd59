"""Diffusion training losses (pure functions of a denoiser and data).

EDM (Karras et al., arXiv 2206.00364, sec. 5 and Table 1): noise levels are log-normal,
ln sigma ~ N(P_mean, P_std^2), and the denoising error is weighted by
lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2, which makes the effective target of the raw
network unit-variance at every sigma:

    L = E_{sigma, n} [ lambda(sigma) * mean_j (D(x_0 + sigma n, sigma, c) - x_0)_j^2 ].
"""
from __future__ import annotations

import torch


def edm_sigmas(n: int, p_mean: float = -1.2, p_std: float = 1.2, device=None, generator=None) -> torch.Tensor:
    return (p_mean + p_std * torch.randn(n, generator=generator)).exp().to(device)


def edm_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def edm_loss(denoiser, x0: torch.Tensor, cond: torch.Tensor | None = None, sigma: torch.Tensor | None = None,
             noise: torch.Tensor | None = None, p_mean: float = -1.2, p_std: float = 1.2,
             sigma_data: float = 0.5) -> torch.Tensor:
    """Mean over the batch of the weighted per-sample denoising error (sigma/noise drawn if not given)."""
    sigma = edm_sigmas(len(x0), p_mean, p_std, x0.device) if sigma is None else sigma
    noise = torch.randn_like(x0) if noise is None else noise
    s = sigma.reshape(-1, *([1] * (x0.dim() - 1)))
    err = (denoiser(x0 + s * noise, sigma, cond) - x0) ** 2
    return (edm_weight(sigma, sigma_data) * err.flatten(1).mean(1)).mean()



def dmd_loss(x: torch.Tensor, mu_real: torch.Tensor, mu_fake: torch.Tensor) -> torch.Tensor:
    """Distribution matching (Yin et al., arXiv 2311.18828, eq. 7-8), in x_0-prediction form.

    At a noisy x_t of the generated x, the KL gradient is -(s_real - s_fake) = (mu_fake - mu_real)
    / sigma^2; DMD replaces the sigma weighting by a per-sample normaliser, giving
    ``grad = (mu_fake - mu_real) / mean|x - mu_real|``, and turns it into a loss whose gradient
    with respect to x is ``grad / x.numel()``: ``0.5 * mean (x - sg(x - grad))^2``. Zero when the
    fake and real denoisers agree.
    """
    norm = (x - mu_real).abs().flatten(1).mean(1).clamp_min(1e-8).reshape(-1, *([1] * (x.dim() - 1)))
    grad = ((mu_fake - mu_real) / norm).detach()
    return 0.5 * ((x - (x - grad).detach()) ** 2).mean()


__all__ = ["edm_sigmas", "edm_weight", "edm_loss", "dmd_loss"]
