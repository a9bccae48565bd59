"""Samplers with one signature (as k-diffusion): ``fn(D, noise, sigmas, cond, guidance, ...)``.

``noise`` is standard normal; the sampler starts at ``x = sigmas[0] * noise`` and walks down the
schedule (which ends at 0). ``D`` is any :class:`~potstill.diffusion.denoiser.Denoiser`.
Classifier-free guidance (``guidance`` w != 1, ``uncond`` = the "no condition" label):
``D_w = D(x, s, uncond) + w (D(x, s, cond) - D(x, s, uncond))``. Every sampler returns the sample
and the number of network evaluations (NFE; a guided evaluation runs the network on a batch
twice as large and counts 2, as in the CFG literature).

* :func:`euler` – first-order steps of the probability-flow ODE dx/dsigma = (x - D) / sigma;
* :func:`heun` – EDM's Algorithm 1 (deterministic): an Euler step corrected by the average
  slope, except into sigma = 0 (2n - 1 evaluations for n steps);
* :func:`ddim` – DDIM in sigma form: x' = D + sigma_down (x - D)/sigma + sigma_up z with the
  ancestral split of sigma_next (eta = 0: deterministic DDIM, identical to Euler; eta = 1:
  ancestral sampling);
* :func:`multistep` – a few-step *generator* sampler: x_0 = D(x, sigma_i), re-noised to the
  next sigma with fresh noise (consistency-model / DMD2 multi-step sampling).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class SampleOut:
    x: torch.Tensor
    nfe: int


class _Guided:
    """D with classifier-free guidance, counting network evaluations."""

    def __init__(self, denoiser, cond, guidance: float, uncond):
        self.d, self.cond, self.w, self.uncond, self.nfe = denoiser, cond, guidance, uncond, 0

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        s = torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)
        if self.cond is None or self.w == 1.0:
            self.nfe += 1
            return self.d(x, s, self.cond)
        if self.uncond is None:
            raise ValueError("classifier-free guidance needs the 'uncond' label")
        self.nfe += 2
        both = self.d(torch.cat([x, x]), torch.cat([s, s]), torch.cat([self.cond, torch.full_like(self.cond, self.uncond)]))
        c, u = both.chunk(2)
        return u + self.w * (c - u)


def _setup(denoiser, noise, sigmas, cond, guidance, uncond):
    sig = [float(s) for s in sigmas]
    if len(sig) < 2 or sig[-1] != 0.0 or any(a <= b for a, b in zip(sig, sig[1:])):
        raise ValueError("sigmas must decrease strictly and end at 0 (use karras_sigmas)")
    return _Guided(denoiser, cond, guidance, uncond), sig, noise * sig[0]


@torch.no_grad()
def euler(denoiser, noise, sigmas, cond=None, guidance: float = 1.0, uncond=None, generator=None) -> SampleOut:
    d, sig, x = _setup(denoiser, noise, sigmas, cond, guidance, uncond)
    for s, s_next in zip(sig, sig[1:]):
        x = x + (s_next - s) * (x - d(x, s)) / s
    return SampleOut(x, d.nfe)


@torch.no_grad()
def heun(denoiser, noise, sigmas, cond=None, guidance: float = 1.0, uncond=None, generator=None) -> SampleOut:
    d, sig, x = _setup(denoiser, noise, sigmas, cond, guidance, uncond)
    for s, s_next in zip(sig, sig[1:]):
        slope = (x - d(x, s)) / s
        x_next = x + (s_next - s) * slope
        if s_next > 0:
            slope2 = (x_next - d(x_next, s_next)) / s_next
            x_next = x + (s_next - s) * 0.5 * (slope + slope2)
        x = x_next
    return SampleOut(x, d.nfe)


def _ancestral(s: float, s_next: float, eta: float) -> tuple[float, float]:
    if s_next == 0 or eta == 0:
        return s_next, 0.0
    up = min(s_next, eta * (s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2) ** 0.5)
    return (s_next ** 2 - up ** 2) ** 0.5, up


@torch.no_grad()
def ddim(denoiser, noise, sigmas, cond=None, guidance: float = 1.0, uncond=None, generator=None,
         eta: float = 0.0) -> SampleOut:
    d, sig, x = _setup(denoiser, noise, sigmas, cond, guidance, uncond)
    for s, s_next in zip(sig, sig[1:]):
        x0 = d(x, s)
        down, up = _ancestral(s, s_next, eta)
        x = x0 + down * (x - x0) / s
        if up > 0:
            x = x + up * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return SampleOut(x, d.nfe)


@torch.no_grad()
def multistep(denoiser, noise, sigmas, cond=None, guidance: float = 1.0, uncond=None, generator=None) -> SampleOut:
    d, sig, x = _setup(denoiser, noise, sigmas, cond, guidance, uncond)
    for s, s_next in zip(sig, sig[1:]):
        x = d(x, s)
        if s_next > 0:
            x = x + s_next * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return SampleOut(x, d.nfe)


SAMPLERS: dict[str, Callable[..., SampleOut]] = {"euler": euler, "heun": heun, "ddim": ddim, "multistep": multistep}


def sample(denoiser, noise, sigmas, method: str = "heun", **kw) -> SampleOut:
    """Dispatch by name: ``sample(D, torch.randn(16, 1, 28, 28), karras_sigmas(18), "heun", cond=y)``."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose from {', '.join(SAMPLERS)}")
    return SAMPLERS[method](denoiser, noise, sigmas, **kw)


__all__ = ["SampleOut", "euler", "heun", "ddim", "multistep", "SAMPLERS", "sample"]
