"""One interface for every diffusion teacher and student: ``D(x, sigma, cond) -> x_0 estimate``.

Noisy inputs follow EDM's parametrisation (Karras et al., *Elucidating the Design Space of
Diffusion-Based Generative Models*, arXiv 2206.00364): ``x = x_0 + sigma * n``, n ~ N(0, I).
Samplers, metrics and distillation methods only ever call ``D``; models trained in another
parametrisation are wrapped by an adapter that converts (x, sigma) to their inputs and their
output back to an x_0 estimate:

* :class:`EDMPrecond` – a raw network F wrapped with EDM's preconditioning (Table 1):
  ``D = c_skip x + c_out F(c_in x, c_noise, cond)``, c_skip = sd^2/(s^2+sd^2),
  c_out = s sd / sqrt(s^2+sd^2), c_in = 1/sqrt(s^2+sd^2), c_noise = ln(s)/4;
* :class:`EpsAdapter` – a discrete-time variance-preserving model (DDPM/DDIM, e.g. a diffusers
  ``UNet2DModel``) predicting epsilon (or v with ``prediction="v"``) from
  x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps: since sigma = sqrt((1 - ab)/ab), x_t = sqrt(ab) x
  and t is found by interpolating log-sigma over the model's table;
* :class:`FlowAdapter` – a rectified-flow / flow-matching velocity model with
  x_t = (1 - t) x_0 + t eps and v = eps - x_0: t = sigma / (1 + sigma), x_t = x / (1 + sigma),
  x_0 = x_t - t v.

``cond`` is a class-label tensor (or None for unconditional use; class-conditional EDM networks
reserve the label ``num_classes`` for "no condition", which classifier-free guidance uses).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn


def _expand(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """sigma as a (B, 1, 1, ...) tensor on x's device/dtype."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.dim() == 0:
        s = s.expand(x.shape[0])
    return s.reshape(-1, *([1] * (x.dim() - 1)))


class Denoiser(nn.Module):
    """Base: ``forward(x, sigma, cond=None)`` returns the denoised estimate of x_0."""

    sigma_data: float = 0.5

    def forward(self, x: torch.Tensor, sigma, cond: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class EDMPrecond(Denoiser):
    """EDM preconditioning around ``net(x_in, c_noise, cond) -> F`` (c_noise has shape (B,))."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net, self.sigma_data = net, float(sigma_data)

    @staticmethod
    def coefficients(sigma: torch.Tensor, sigma_data: float):
        """(c_skip, c_out, c_in, c_noise) of EDM's Table 1, elementwise in ``sigma``."""
        sd2 = sigma_data ** 2
        denom = (sigma ** 2 + sd2).sqrt()
        return sd2 / (sigma ** 2 + sd2), sigma * sigma_data / denom, 1.0 / denom, sigma.log() / 4

    def export_meta(self) -> dict:
        """What ``load_denoiser`` needs besides the weights (written into model.json)."""
        meta = {"denoiser": "edm", "sigma_data": self.sigma_data}
        if getattr(self, "model_spec", None) is not None:      # set by load_denoiser (students reuse it)
            meta["model"] = self.model_spec
        if getattr(self, "sampling", None) is not None:        # how a few-step generator is sampled
            meta["sampling"] = self.sampling
        return meta

    def forward(self, x, sigma, cond=None):
        s = _expand(sigma, x)
        c_skip, c_out, c_in, c_noise = self.coefficients(s, self.sigma_data)
        return c_skip * x + c_out * self.net(c_in * x, c_noise.flatten(), cond)

    def features(self, x, sigma, cond=None) -> torch.Tensor:
        """The raw network's feature vector at (c_in x, c_noise) (for GAN heads, e.g. DMD2)."""
        if not hasattr(self.net, "features"):
            raise TypeError(f"{type(self.net).__name__} has no features(); use toy_denoiser or unet")
        s = _expand(sigma, x)
        _, _, c_in, c_noise = self.coefficients(s, self.sigma_data)
        return self.net.features(c_in * x, c_noise.flatten(), cond)


class EpsAdapter(Denoiser):
    """A variance-preserving model ``model(x_t, t, cond)`` with a discrete ``alphas_cumprod`` table."""

    def __init__(self, model: Callable, alphas_cumprod: torch.Tensor, prediction: str = "eps",
                 sigma_data: float = 0.5):
        super().__init__()
        if prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', not {prediction!r}")
        self.model, self.prediction, self.sigma_data = model, prediction, float(sigma_data)
        ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.register_buffer("log_sigmas", (((1 - ab) / ab).sqrt()).log())

    @property
    def sigma_min(self) -> float:
        return float(self.log_sigmas[0].exp())

    @property
    def sigma_max(self) -> float:
        return float(self.log_sigmas[-1].exp())

    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep whose table sigma is ``sigma`` (linear in log-sigma, clamped)."""
        ls = self.log_sigmas.to(sigma.device)
        logs = sigma.double().clamp_min(1e-12).log().clamp(float(ls[0]), float(ls[-1]))
        hi = torch.searchsorted(ls, logs).clamp(1, len(ls) - 1)
        lo = hi - 1
        w = (logs - ls[lo]) / (ls[hi] - ls[lo])
        return (lo + w).to(sigma.dtype)

    def forward(self, x, sigma, cond=None):
        s = _expand(sigma, x)
        ab = 1.0 / (1.0 + s ** 2)
        x_t = x * ab.sqrt()
        out = self.model(x_t, self.t_of_sigma(s.flatten()), cond)
        if self.prediction == "eps":
            return x - s * out
        return ab.sqrt() * x_t - (1 - ab).sqrt() * out


class FlowAdapter(Denoiser):
    """A flow-matching velocity model ``model(x_t, t, cond) -> v`` with x_t = (1-t) x_0 + t eps."""

    def __init__(self, model: Callable, sigma_data: float = 0.5):
        super().__init__()
        self.model, self.sigma_data = model, float(sigma_data)

    def forward(self, x, sigma, cond=None):
        s = _expand(sigma, x)
        t = s / (1 + s)
        x_t = x / (1 + s)
        return x_t - t * self.model(x_t, t.flatten(), cond)


def from_diffusers(path: str, subfolder: str | None = None, device: str = "cpu") -> EpsAdapter:
    """A diffusers ``UNet2DModel`` (+ its DDPM/DDIM scheduler config) from a local folder.

    The folder is what ``UNet2DModel.save_pretrained`` / a diffusers pipeline writes: the UNet in
    ``path`` (or ``path/<subfolder>``) and the scheduler in ``path/scheduler`` or ``path``.
    Nothing is downloaded. Needs the ``hf`` extra (``pip install potstill[hf]``).
    """
    import os

    try:
        from diffusers import DDPMScheduler, UNet2DModel  # lazy: diffusers takes seconds to import
    except ImportError as e:
        raise ImportError("loading a diffusers model needs `pip install potstill[hf]` (diffusers)") from e
    unet = UNet2DModel.from_pretrained(path, subfolder=subfolder, local_files_only=True).to(device).eval()
    sched_dir = os.path.join(path, "scheduler") if os.path.isdir(os.path.join(path, "scheduler")) else path
    sched = DDPMScheduler.from_pretrained(sched_dir, local_files_only=True)
    prediction = {"epsilon": "eps", "v_prediction": "v"}.get(sched.config.prediction_type)
    if prediction is None:
        raise ValueError(f"{path}: prediction_type {sched.config.prediction_type!r} is not supported (epsilon, v_prediction)")

    def model(x_t, t, cond):
        return unet(x_t, t, class_labels=cond).sample

    adapter = EpsAdapter(model, sched.alphas_cumprod, prediction)
    adapter.unet = unet  # registered, so .to() / .parameters() see it
    return adapter


def edm_sigma_bounds(d: Denoiser) -> tuple[float, float]:
    """The sigma range a sampler should use for ``d`` (EDM defaults, or the adapter's table)."""
    if isinstance(d, EpsAdapter):
        return d.sigma_min, d.sigma_max
    return 0.002, 80.0


__all__ = ["Denoiser", "EDMPrecond", "EpsAdapter", "FlowAdapter", "from_diffusers", "edm_sigma_bounds"]
