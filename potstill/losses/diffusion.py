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


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).mean(1)


def _sid_normaliser(x: torch.Tensor, mu_real: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """SiD's per-sample weight 1 / sg(mean_j |x - mu_real|_j) (Zhou et al., arXiv 2404.04057, sec. 4)."""
    return _per_sample((x - mu_real).abs()).clamp_min(eps).detach()


def sid_loss(x: torch.Tensor, mu_real: torch.Tensor, mu_fake: torch.Tensor, alpha: float = 1.2,
             weight: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Score identity Distillation generator loss (Zhou et al., ICML 2024, arXiv 2404.04057, eq. 8-10).

    ``x`` is the generated sample x_g (with gradient), ``mu_real`` / ``mu_fake`` the teacher's
    and the fake score's x_0 estimates at x_t = x_g + sigma n, also *with* gradient through x_t
    (only the networks' parameters are frozen). Per sample,

        L = mean_j [ (mu_real - mu_fake) * ((mu_real - x_g) - alpha (mu_real - mu_fake)) ]_j
            / sg(mean_j |x_g - mu_real|_j),

    then the batch mean (``weight``: optional per-sample factors). The paper sums over the
    dimensions; the mean here differs by the constant D. alpha = 1 gives
    (mu_real - mu_fake)^T (mu_fake - x_g); the paper's default is alpha = 1.2. The loss and its
    gradient vanish when the two denoisers are the same function.
    """
    d = mu_real - mu_fake
    per = _per_sample(d * ((mu_real - x) - alpha * d)) / _sid_normaliser(x, mu_real, eps)
    return (per * weight).mean() if weight is not None else per.mean()


def sim_loss(x: torch.Tensor, mu_real: torch.Tensor, mu_fake: torch.Tensor, distance: str = "pseudo_huber",
             c: float = 0.01, weight: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Score Implicit Matching generator loss (Luo et al., NeurIPS 2024, arXiv 2410.16794, Theorem 3.1).

    The score-gradient theorem turns the gradient of D = E_t E_{x_t ~ p_theta,t} d(s_fake - s_real)
    into that of  L = -E[ d'(y_t)^T (s_fake(x_t) - grad log q_t(x_t | x_g)) ],  y_t = s_fake - s_real,
    differentiated through x_g and x_t = x_g + sigma n (network parameters frozen). With
    s(x_t) = (mu(x_t) - x_t) / sigma^2 and grad log q_t(x_t | x_g) = (x_g - x_t) / sigma^2, both
    factors are x_0-differences over sigma^2; the sigma^-4 goes into the time weighting, so with
    delta = mu_fake - mu_real (per sample, D dimensions):

    * ``squared``: d(delta) = 1/2 mean_j delta_j^2, d' = delta / D:
      L = -mean_j [delta * (mu_fake - x_g)]_j - identical to :func:`sid_loss` with alpha = 1;
    * ``pseudo_huber``: d(delta) = sqrt(mean_j delta_j^2 + c^2) - c (c in data units per
      dimension), d' = delta / (D sqrt(mean_j delta_j^2 + c^2)):
      L = -mean_j [delta * (mu_fake - x_g)]_j / sqrt(mean_j delta_j^2 + c^2).

    Both are divided by SiD's per-sample normaliser sg(mean_j |x_g - mu_real|_j) (the time
    weighting; SIM reuses SiD's training setup).
    """
    if distance not in ("pseudo_huber", "squared"):
        raise ValueError(f"distance must be 'pseudo_huber' or 'squared', not {distance!r}")
    delta = mu_fake - mu_real
    per = -_per_sample(delta * (mu_fake - x))
    if distance == "pseudo_huber":
        per = per / (_per_sample(delta ** 2) + c ** 2).sqrt()
    per = per / _sid_normaliser(x, mu_real, eps)
    return (per * weight).mean() if weight is not None else per.mean()


def vsd_loss(x: torch.Tensor, mu_real: torch.Tensor, mu_fake: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Variational score distillation for a one-step generator (ProlificDreamer, Wang et al., arXiv
    2305.16213, eq. 9; SwiftBrush, Nguyen & Tran, arXiv 2312.05239, eq. 6), in x_0-prediction form.

    VSD's generator gradient is ``w(t) (eps_real(x_t) - eps_fake(x_t))`` pushed into x with
    ``w(t) = sigma_t^2`` of the variance-preserving process. With x_t = x + sigma n (EDM units),
    eps = (x_t - mu) / sigma, so eps_real - eps_fake = (mu_fake - mu_real) / sigma, and the VP
    weight is sigma_vp^2 = sigma^2 / (1 + sigma^2):

        grad = sigma / (1 + sigma^2) * (mu_fake - mu_real),   L = 0.5 * mean (x - sg(x - grad))^2,

    whose gradient with respect to x is ``grad / x.numel()``. Zero when the fake and real denoisers agree.
    """
    s = sigma.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    grad = (s / (1 + s ** 2) * (mu_fake - mu_real)).detach()
    return 0.5 * ((x - (x - grad).detach()) ** 2).mean()


__all__ = ["edm_sigmas", "edm_weight", "edm_loss", "dmd_loss", "sid_loss", "sim_loss", "vsd_loss"]
