"""Progressive Distillation for Fast Sampling of Diffusion Models — Salimans & Ho, ICLR 2022,
arXiv 2202.00512 (catalog B8).

A student, initialised from the teacher, learns to do in one deterministic (DDIM) step what its
teacher does in two; then it becomes the teacher and the number of steps halves again
(Algorithm 2): N -> N/2 -> ... -> ``final_steps``.

In EDM's sigma form, a DDIM step from sigma to sigma' with denoiser estimate x_0 is
x' = x_0 + (sigma'/sigma)(x - x_0). On a grid where the student's levels are every other level of
the teacher's (:func:`~potstill.diffusion.schedules.nested_sigmas`), the teacher goes
x_t -> x' -> x'' over sigma_i > sigma_{i+1} > sigma_{i+2}; the student must reach x'' in one step,
i.e. predict the target (eq. 8 in sigma form)

    x_target = (x'' - (sigma_{i+2}/sigma_i) x_t) / (1 - sigma_{i+2}/sigma_i),

trained with a squared error weighted by max(1/sigma^2, 1) (the paper's "truncated SNR"
weighting in x-space). x_t is a training image diffused to sigma_i.

One run does every round: ``steps_per_round`` trainer steps each; at the start of a round the
current student is copied into ``round_teacher`` (a submodule, so checkpoints and resumes
include it). Export: the final student, sampled by DDIM on ``nested_sigmas(final_steps)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...core.registry import METHODS
from ...diffusion import nested_sigmas
from .base import GenerativeMethod, teacher_denoiser


@dataclass
class ProgressiveConfig:
    start_steps: int = 64          # the original teacher's step count (a power of two)
    final_steps: int = 1
    steps_per_round: int = 500     # trainer steps per halving round
    sigma_max: float = 80.0
    conditional: bool = True

    def __post_init__(self):
        for k in ("start_steps", "final_steps"):
            v = getattr(self, k)
            if v < 1 or v & (v - 1):
                raise ValueError(f"{k} must be a power of two, got {v}")
        if self.final_steps >= self.start_steps or self.steps_per_round < 1:
            raise ValueError("need final_steps < start_steps and steps_per_round >= 1")

    @property
    def rounds(self) -> int:
        return int(math.log2(self.start_steps // self.final_steps))


@METHODS.register("progressive")
class Progressive(GenerativeMethod):
    """Progressive distillation: repeatedly halve the DDIM steps, student becomes teacher."""

    Config = ProgressiveConfig
    name = "progressive"
    catalog_ids = ("B8",)
    paper = "Progressive Distillation for Fast Sampling of Diffusion Models"
    arxiv = "2202.00512"

    def __init__(self, cfg: ProgressiveConfig, teacher, data):
        super().__init__(cfg, teacher, data)
        self.student = self.copy_of_teacher()
        self.round_teacher = self.copy_of_teacher().requires_grad_(False).eval()
        self.register_buffer("round_idx", torch.tensor(-1))   # checkpointed: a resume keeps the round's teacher
        self.student.sampling = {"sampler": "ddim", "steps": cfg.final_steps, "sigma_max": cfg.sigma_max,
                                 "schedule": "nested"}

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, teacher_denoiser(ctx), ctx.data)

    def param_groups(self):
        return {"student": list(self.student.parameters())}

    def frozen(self):
        return [self.teacher, self.round_teacher]

    def student_steps(self, round_: int) -> int:
        return self.cfg.start_steps // 2 ** (round_ + 1)

    def generator_sigmas(self):
        return [float(s) for s in nested_sigmas(self.cfg.final_steps, self.sigma_max)]

    def generate(self, noise, cond):
        from ...diffusion.samplers import ddim

        return ddim(self.export(), noise, self.generator_sigmas(), cond=cond).x

    def loss(self, batch, step):
        r = min(step // self.cfg.steps_per_round, self.cfg.rounds - 1)
        if r != int(self.round_idx):                 # a new round: the student becomes the teacher
            self.round_idx.fill_(r)
            src = self.teacher if r == 0 else self.student
            self.round_teacher.load_state_dict(src.state_dict())
        n_student = self.student_steps(r)
        fine = nested_sigmas(2 * n_student, self.sigma_max).to(batch["x"].device, batch["x"].dtype)
        x0 = batch["x"]
        cond = batch["y"] if self.cfg.conditional else None
        n = len(x0)
        i = 2 * torch.randint(n_student, (n,), device=x0.device)   # student level = even teacher level
        s0, s1, s2 = fine[i], fine[i + 1], fine[i + 2]
        view = (-1, *([1] * (x0.dim() - 1)))
        x_t = x0 + s0.reshape(view) * torch.randn_like(x0)
        with torch.no_grad():                         # two DDIM steps of the round's teacher
            d0 = self.round_teacher(x_t, s0, cond)
            x1 = d0 + (s1 / s0).reshape(view) * (x_t - d0)
            d1 = self.round_teacher(x1, s1, cond)          # s1 > 0: only s2 can be the final 0
            x2 = d1 + (s2 / s1).reshape(view) * (x1 - d1)
            ratio = (s2 / s0).reshape(view)
            target = (x2 - ratio * x_t) / (1 - ratio)
        w = torch.clamp(1 / s0 ** 2, min=1.0)
        err = ((self.student(x_t, s0, cond) - target) ** 2).flatten(1).mean(1)
        return {"student": (w * err).mean(), "log/round": torch.tensor(float(r))}

    def export(self):
        return self.student
