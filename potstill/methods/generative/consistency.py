"""Consistency distillation — Song, Dhariwal, Chen & Sutskever, *Consistency Models*, ICML 2023,
arXiv 2303.01469 (catalog B8).

A consistency function f(x, sigma) maps every point of a probability-flow trajectory to its
origin. It is parametrised so that f(x, sigma_min) = x exactly (eq. 5, EDM-style constants):

    f(x, s) = c_skip(s) x + c_out(s) F(c_in(s) x, c_noise(s), c),
    c_skip = sd^2 / ((s - s_min)^2 + sd^2),   c_out = sd (s - s_min) / sqrt(s^2 + sd^2),

with F initialised from the teacher's raw network. Consistency distillation (Algorithm 2) on the
Karras grid s_1 < ... < s_N (N = 18): draw n, diffuse a training image to s_{n+1}, take one Heun
step of the teacher's probability-flow ODE to s_n, and pull f_theta(x_{n+1}, s_{n+1}) towards the
target network's f_theta-(x_hat_n, s_n) (eq. 7), where theta- is an EMA of theta (mu = 0.95;
updated after every optimizer step). Distance: squared L2 (the paper's best uses LPIPS, which
needs a pretrained network we do not have offline).

Sampling (Algorithm 1): one step x = f(s_max z, s_max); more steps re-noise the estimate to the
next level of ``karras_sigmas(steps)`` and apply f again (the ``multistep`` sampler).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from ...core.registry import METHODS
from ...diffusion import karras_sigmas
from ...diffusion.denoiser import Denoiser, _expand
from .base import GenerativeMethod, teacher_denoiser


class ConsistencyFunction(Denoiser):
    """f(x, sigma) with the boundary condition f(x, sigma_min) = x, around a raw EDM network."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.5, sigma_min: float = 0.002):
        super().__init__()
        self.net, self.sigma_data, self.sigma_min = net, float(sigma_data), float(sigma_min)

    def forward(self, x, sigma, cond=None):
        s = _expand(sigma, x)
        sd, smin = self.sigma_data, self.sigma_min
        c_skip = sd ** 2 / ((s - smin) ** 2 + sd ** 2)
        c_out = sd * (s - smin) / (s ** 2 + sd ** 2).sqrt()
        c_in = 1 / (s ** 2 + sd ** 2).sqrt()
        return c_skip * x + c_out * self.net(c_in * x, s.log().flatten() / 4, cond)

    def export_meta(self) -> dict:
        meta = {"denoiser": "consistency", "sigma_data": self.sigma_data, "sigma_min": self.sigma_min}
        for k in ("model_spec", "sampling"):
            if getattr(self, k, None) is not None:
                meta["model" if k == "model_spec" else k] = getattr(self, k)
        return meta


@dataclass
class ConsistencyConfig:
    grid: int = 18                  # N, levels of the Karras grid the ODE steps walk
    ema: float = 0.95               # mu of the target network
    steps: int = 1                  # sampling steps of the exported model
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    guidance: float = 1.0           # CFG of the teacher's ODE step
    conditional: bool = True

    def __post_init__(self):
        if self.grid < 2 or not 0 <= self.ema < 1 or self.steps < 1:
            raise ValueError("grid must be >= 2, ema in [0, 1), steps >= 1")


@METHODS.register("consistency")
class ConsistencyDistillation(GenerativeMethod):
    """Consistency distillation: EMA target, one Heun step of the teacher between adjacent levels."""

    Config = ConsistencyConfig
    name = "consistency"
    catalog_ids = ("B8",)
    paper = "Consistency Models"
    arxiv = "2303.01469"

    def __init__(self, cfg: ConsistencyConfig, teacher, data):
        super().__init__(cfg, teacher, data)
        net = copy.deepcopy(teacher.net).requires_grad_(True)
        self.student = ConsistencyFunction(net, teacher.sigma_data, cfg.sigma_min).train()
        self.student.model_spec = getattr(teacher, "model_spec", None)
        self.student.sampling = {"sampler": "multistep", "steps": cfg.steps, "sigma_max": cfg.sigma_max}
        self.target = copy.deepcopy(self.student).requires_grad_(False).eval()
        grid = karras_sigmas(cfg.grid, cfg.sigma_min, cfg.sigma_max)[:-1].flip(0)  # ascending s_1 .. s_N
        self.register_buffer("grid", grid.float())

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, teacher_denoiser(ctx), ctx.data)

    def frozen(self):
        return [self.teacher, self.target]

    def param_groups(self):
        return {"student": list(self.student.parameters())}

    @torch.no_grad()
    def update_target(self) -> None:
        for t, s in zip(self.target.parameters(), self.student.parameters()):
            t.lerp_(s, 1 - self.cfg.ema)

    def loss(self, batch, step):
        if step > 0:      # the EMA update that follows optimizer step (step - 1)
            self.update_target()
        x0 = batch["x"]
        cond = batch["y"] if self.cfg.conditional else None
        n = len(x0)
        view = (-1, *([1] * (x0.dim() - 1)))
        k = torch.randint(self.cfg.grid - 1, (n,), device=x0.device)
        s_lo, s_hi = self.grid[k], self.grid[k + 1]
        x_hi = x0 + s_hi.reshape(view) * torch.randn_like(x0)
        with torch.no_grad():            # one Heun step of the teacher ODE from s_hi down to s_lo
            d = self.real_denoise(x_hi, s_hi, cond, self.cfg.guidance)
            slope = (x_hi - d) / s_hi.reshape(view)
            x_eul = x_hi + (s_lo - s_hi).reshape(view) * slope
            d2 = self.real_denoise(x_eul, s_lo, cond, self.cfg.guidance)
            slope2 = (x_eul - d2) / s_lo.reshape(view)
            x_lo = x_hi + (s_lo - s_hi).reshape(view) * 0.5 * (slope + slope2)
            target = self.target(x_lo, s_lo, cond)
        err = ((self.student(x_hi, s_hi, cond) - target) ** 2).flatten(1).mean(1)
        return {"student": err.mean()}

    def export(self):
        return self.student
