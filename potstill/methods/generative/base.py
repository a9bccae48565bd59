"""What the few-step generative students share: a frozen teacher denoiser, a generator in the
same denoiser interface, label sampling, and a cheap sample-quality check for validation.

A student *generator* is itself a denoiser ``G(x, sigma, cond)`` initialised from the teacher.
Its k-step sampler is :func:`~potstill.diffusion.samplers.multistep` on ``karras_sigmas(k)``
(or, with ``schedule: strided``, DMD2's timesteps 999, 749, 499, 249 for k = 4): start at
x = sigma_max z, take x_0 = G(x, sigma_i), re-noise to sigma_{i+1}, ...; the plan is exported
with the model, so ``potstill sample <run>`` draws from it. (One step: x_0 = G(sigma_max z, sigma_max).)

The teacher comes from the recipe's ``teacher: {checkpoint: <a teacher run or its export/>}``
section (rebuilt with :func:`~potstill.core.run.load_denoiser`) or, from Python, any
``Denoiser``. It is frozen and never checkpointed.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ...core.config import ConfigError
from ...core.method import Method
from ...diffusion import karras_sigmas, plan_sigmas
from ...diffusion.samplers import multistep


def teacher_denoiser(ctx) -> nn.Module:
    """The frozen teacher ``D(x, sigma, cond)`` of a generative recipe."""
    if ctx.teacher_module is not None:
        d = ctx.teacher_module
    else:
        spec = ctx.teacher_spec
        if spec is None or not spec.checkpoint:
            raise ConfigError("teacher.checkpoint: give the teacher denoiser's run folder (e.g. from "
                              "`potstill teacher train recipes/gen/edm_toy2d.yaml`)")
        from ...core.run import load_denoiser

        d = load_denoiser(spec.checkpoint)
    return d.eval().requires_grad_(False)


class GenerativeMethod(Method):
    """Base: ``self.teacher`` (frozen), ``sample_labels``, ``generate``, validation by SWD / modes."""

    pillar = "generative"

    def __init__(self, cfg, teacher: nn.Module, data):
        super().__init__(cfg)
        self.teacher = teacher
        self.num_classes, self.in_shape = data.num_classes, tuple(data.in_shape)
        self.info = data.info or {}
        self.sigma_max = float(getattr(cfg, "sigma_max", 80.0))

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.frozen():
            m.eval()  # always: frozen networks stay in eval mode
        return self

    def frozen(self) -> list[nn.Module]:
        return [self.teacher]

    def copy_of_teacher(self, generator: bool = False) -> nn.Module:
        """A trainable copy of the teacher; ``generator=True`` records how to sample it."""
        net = copy.deepcopy(self.teacher).requires_grad_(True).train()
        if generator:
            net.sampling = {"sampler": "multistep", "steps": int(getattr(self.cfg, "steps", 1)), "sigma_max": self.sigma_max,
                            "schedule": getattr(self.cfg, "schedule", "karras")}
        return net

    def sample_labels(self, n: int, device) -> torch.Tensor | None:
        if not getattr(self.cfg, "conditional", True):
            return None
        return torch.randint(self.num_classes, (n,), device=device)

    def generator_sigmas(self) -> list[float]:
        """The k-step generator's input noise levels ([sigma_max, 0] for one step), by ``cfg.schedule``."""
        plan = {"steps": int(getattr(self.cfg, "steps", 1)), "sigma_max": self.sigma_max,
                "schedule": getattr(self.cfg, "schedule", "karras")}
        return [float(s) for s in plan_sigmas(plan)]

    def real_denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond, guidance: float = 1.0) -> torch.Tensor:
        """The teacher's x_0 estimate, with classifier-free guidance ``guidance`` when conditional."""
        if cond is None or guidance == 1.0:
            return self.teacher(x, sigma, cond)
        both = self.teacher(torch.cat([x, x]), torch.cat([sigma, sigma]),
                            torch.cat([cond, torch.full_like(cond, self.num_classes)]))
        c, u = both.chunk(2)
        return u + guidance * (c - u)

    def generator_sample(self, generator: nn.Module, n: int, cond, backward_simulation: bool = True) -> torch.Tensor:
        """x_0 from the k-step generator at a random step i, with gradient through that step only.

        The input at step i comes from running the generator itself through steps 0..i-1 without
        gradient ("backward simulation", DMD2 sec. 4.5), so training sees what sampling produces.
        """
        sig = self.generator_sigmas()
        dev = next(generator.parameters()).device
        x = sig[0] * torch.randn(n, *self.in_shape, device=dev)
        i = int(torch.randint(len(sig) - 1, (1,))) if backward_simulation else 0
        with torch.no_grad():
            for j in range(i):
                x = generator(x, torch.full((n,), sig[j], device=dev), cond)
                x = x + sig[j + 1] * torch.randn_like(x)
        return generator(x, torch.full((n,), sig[i], device=dev), cond)

    def dm_sigma(self, n: int, device, lo: float = 0.02, hi: float = 0.98, levels: int = 1000) -> torch.Tensor:
        """Noise levels for the distribution-matching loss: uniform over the [lo, hi] part of a
        ``levels``-step Karras schedule (DMD/DMD2 draw t ~ U[0.02 T, 0.98 T])."""
        grid = karras_sigmas(levels, sigma_max=self.sigma_max)[:-1].float()
        idx = torch.randint(int(lo * levels), int(hi * levels), (n,))
        return grid[idx].to(device)

    def generate(self, noise: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """k-step sample of the exported generator (no grad)."""
        return multistep(self.export(), noise, self.generator_sigmas(), cond=cond).x

    @torch.no_grad()
    def evaluate(self, data, batch_size: int = 512):
        from ...eval.generative import mode_stats, sliced_wasserstein

        n = min(len(data), 2000)
        g = torch.Generator().manual_seed(4321)
        dev = next(self.export().parameters()).device
        noise = torch.randn(n, *self.in_shape, generator=g).to(dev)
        cond = data.y[:n].to(dev) if getattr(self.cfg, "conditional", True) else None
        x = self.generate(noise, cond).cpu()
        out = {"swd": sliced_wasserstein(x, data.x[:n])}
        if "centers" in self.info:
            out.update(mode_stats(x, torch.tensor(self.info["centers"]), self.info["std"]))
        return out


__all__ = ["GenerativeMethod", "teacher_denoiser"]
