"""Multi-student Diffusion Distillation for Better One-step Generators (MSD) - Song, Lorraine, Nie,
Kreis & Lucas, arXiv 2410.23274 (catalog G3).

The class set is partitioned among K one-step students; student k is distilled only on its own
classes C_k and, at sampling time, a router sends every label c to the student that owns it:

    G(z, c) = G_{k(c)}(z, c),      k(c) = the k with c in C_k.

**Per-student distillation.** Each student is a complete DMD2 instance (``dmd2.py``, imported and
reused as is): its own generator, fake score (trained with the EDM denoising loss on the student's
detached samples) and, with ``gan: true``, its own GAN head on real images of its classes. One
training batch (labels y, real x) is split by the partition; student k's losses see only
B_k = {b : y_b in C_k}:

    L_G^k = DMD(x_k) [+ gan_weight_g * softplus(-D_k(fake_t))],   x_k = G_k(sigma_max z, sigma_max, y_b), b in B_k,
    DMD(x) = 0.5 || x - sg(x - (mu_fake^k(x_t) - mu_real(x_t)) / mean|x - mu_real(x_t)|) ||^2,

and the ``generator`` / ``fake_score`` groups are the sums over students (their parameters are
disjoint, so each student receives only the gradient of its own loss). With one student this is
exactly DMD2 - the single-student baseline the paper compares with (recipe ``msd1_toy2d``).
Splitting one batch gives K students the compute of one DMD2 run in total (the paper trains each
student with its own full batch).

**Smaller students** (``student_override``: model fields, e.g. ``{hidden: 128}``, merged into the
teacher's model spec): such students are built from scratch and first pretrained by *teacher
score matching* for ``pretrain_steps`` trainer steps,

    L_TSM^k = E_{sigma ~ EDM, n} lambda(sigma) || G_k(x + sigma n, sigma, c) - mu_real(x + sigma n, sigma, c) ||^2,
    x, c from the real batch restricted to C_k,

(the student learns the teacher's denoiser on its classes), then distilled as above; the fake
scores train on the students' samples throughout (``pretrain_steps`` counts trainer steps; with
``trainer.optim.generator.update_every: u`` the students take pretrain_steps / u TSM updates). Same-size students start as copies of the
teacher (``pretrain_steps`` may still be set).

**Export.** One module: ``EDMPrecond(router)``, where the router network (registered model
``msd_router``) holds the K students' raw networks and dispatches each sample by its label
(the "no condition" label goes to student 0). Its ``model.json`` records the students' model specs
and the partition, so ``potstill sample``, ``load_denoiser`` and the generative evaluation use it
like any one-step generator.

Partition: ``partition`` lists the classes of each student explicitly; by default the classes are
split into K contiguous, near-equal blocks (classes 0..k-1 first).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ...core.config import ConfigError
from ...core.registry import METHODS, MODELS
from ...diffusion.denoiser import EDMPrecond
from .base import GenerativeMethod, teacher_denoiser
from .dmd2 import DMD2, DMD2Config


def contiguous_partition(num_classes: int, k: int) -> list[list[int]]:
    """Classes 0..num_classes-1 in k contiguous blocks whose sizes differ by at most one."""
    base, extra = divmod(num_classes, k)
    out, start = [], 0
    for i in range(k):
        size = base + (1 if i < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


# --- the router: one exported network ------------------------------------------------------------
@dataclass
class MSDRouterConfig:
    students: list[dict[str, Any]] = field(default_factory=list)   # the K students' model specs
    partition: list[list[int]] = field(default_factory=list)       # the classes of each student


class MSDRouterNet(nn.Module):
    """Raw network ``F(x_in, c_noise, cond)`` that evaluates, for each sample, the student owning its label."""

    def __init__(self, nets: list[nn.Module], partition: list[list[int]], num_classes: int):
        super().__init__()
        if len(nets) != len(partition) or not nets:
            raise ConfigError(f"msd_router: {len(nets)} students for {len(partition)} partition blocks")
        self.nets = nn.ModuleList(nets)
        self.partition = [list(p) for p in partition]
        owner = torch.zeros(num_classes + 1, dtype=torch.long)   # label num_classes ("no condition") -> student 0
        for k, block in enumerate(self.partition):
            owner[torch.tensor(block, dtype=torch.long)] = k
        self.register_buffer("owner", owner, persistent=False)
        self.num_classes = num_classes

    def route(self, cond: torch.Tensor | None, n: int, device) -> torch.Tensor:
        if cond is None:
            return torch.zeros(n, dtype=torch.long, device=device)
        return self.owner.to(cond.device)[cond.long()]

    def forward(self, x, c_noise, cond=None):
        who = self.route(cond, len(x), x.device)
        c_noise = c_noise.reshape(-1)
        if c_noise.numel() == 1:
            c_noise = c_noise.expand(len(x))
        out = None
        for k, net in enumerate(self.nets):
            idx = (who == k).nonzero().flatten()
            if len(idx) == 0:
                continue
            y = net(x[idx], c_noise[idx], None if cond is None else cond[idx])
            out = y.new_zeros(x.shape[:1] + y.shape[1:]) if out is None else out
            out = out.index_copy(0, idx, y)
        return out


@MODELS.register("msd_router", MSDRouterConfig)
def msd_router(cfg: MSDRouterConfig, in_shape, num_classes):
    if not cfg.students:
        raise ConfigError("msd_router.students: list the students' model specs")
    from ...models import build_model

    nets = [build_model(s, in_shape, num_classes, f"msd_router.students[{i}]") for i, s in enumerate(cfg.students)]
    return MSDRouterNet(nets, cfg.partition, num_classes)


# --- the method ----------------------------------------------------------------------------------
@dataclass
class MSDConfig(DMD2Config):
    students: int = 4                                          # K
    partition: list[list[int]] | None = None                  # classes of each student (default: contiguous blocks)
    student_override: dict[str, Any] = field(default_factory=dict)   # model fields of smaller students, e.g. {hidden: 128}
    pretrain_steps: int = 0                                   # teacher-score-matching steps before distillation
    tsm_p_mean: float = -1.2                                  # EDM noise levels of the TSM loss
    tsm_p_std: float = 1.2

    def __post_init__(self):
        super().__post_init__()
        if self.students < 1:
            raise ValueError(f"students must be >= 1, got {self.students}")
        if self.partition is not None:
            if len(self.partition) != self.students:
                raise ValueError(f"partition must list {self.students} blocks (one per student), got {len(self.partition)}")
            flat = [c for block in self.partition for c in block]
            if any(not block for block in self.partition) or any(c < 0 for c in flat) or len(set(flat)) != len(flat):
                raise ValueError(f"partition must be non-empty blocks of distinct class indices >= 0, got {self.partition}")
        if self.pretrain_steps < 0:
            raise ValueError(f"pretrain_steps must be >= 0, got {self.pretrain_steps}")
        if not self.tsm_p_std > 0:
            raise ValueError(f"tsm_p_std must be > 0, got {self.tsm_p_std}")
        if not self.conditional:
            raise ValueError("MSD needs conditional: true (students own classes)")
        if "name" in self.student_override:
            raise ValueError("student_override changes model fields only (no 'name'): the students keep the teacher's architecture")


@METHODS.register("msd")
class MSD(GenerativeMethod):
    """MSD: K one-step DMD2 students, each owning a block of classes, behind a label router."""

    Config = MSDConfig
    name = "msd"
    catalog_ids = ("G3",)
    paper = "Multi-student Diffusion Distillation for Better One-step Generators"
    arxiv = "2410.23274"

    def __init__(self, cfg: MSDConfig, teacher, data):
        super().__init__(cfg, teacher, data)
        if not isinstance(teacher, EDMPrecond):
            raise ConfigError("method msd: the teacher must be an EDM denoiser (EDMPrecond) so its students can be routed")
        if cfg.students > self.num_classes:
            raise ConfigError(f"method.students: {cfg.students} students for {self.num_classes} classes")
        self.partition = [list(b) for b in (cfg.partition or contiguous_partition(self.num_classes, cfg.students))]
        flat = sorted(c for b in self.partition for c in b)
        if flat != list(range(self.num_classes)):
            raise ConfigError(f"method.partition: must cover classes 0..{self.num_classes - 1} exactly once, got {self.partition}")
        self.subs = nn.ModuleList([DMD2(cfg, teacher, data) for _ in self.partition])
        self.student_specs = [self.teacher_spec()] * cfg.students
        if cfg.student_override:
            if self.teacher_spec() is None:
                raise ConfigError("method.student_override: needs a teacher loaded from a run (teacher.checkpoint), "
                                  "whose model spec the smaller students are derived from")
            from ...models import build_model

            spec = {**self.teacher_spec(), **cfg.student_override}
            self.student_specs = [spec] * cfg.students
            plan = self.subs[0].generator.sampling
            for sub in self.subs:                       # smaller students start from scratch
                net = build_model(spec, self.in_shape, self.num_classes, "method.student_override")
                sub.generator = EDMPrecond(net.to(next(teacher.parameters()).device), teacher.sigma_data).train()
                sub.generator.sampling, sub.generator.model_spec = dict(plan), spec
        owner = torch.full((self.num_classes,), -1, dtype=torch.long)
        for k, block in enumerate(self.partition):
            owner[torch.tensor(block)] = k
        self.register_buffer("owner", owner, persistent=False)

    def teacher_spec(self) -> dict | None:
        return getattr(self.teacher, "model_spec", None)

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, teacher_denoiser(ctx), ctx.data)

    def frozen(self):
        return [self.teacher]

    def param_groups(self):
        return {"generator": [p for s in self.subs for p in s.generator.parameters()],
                "fake_score": [p for s in self.subs for p in s.param_groups()["fake_score"]]}

    def trainable_state(self):
        """The students, fake scores and heads (each DMD2 instance's frozen teacher reference is not stored)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.") and ".teacher." not in k}

    def student_of(self, y: torch.Tensor) -> torch.Tensor:
        return self.owner.to(y.device)[y]

    def split(self, batch: dict) -> list[dict | None]:
        """Student k's part of the batch: the rows whose label is in its block (None if there are none)."""
        who = self.student_of(batch["y"])
        out = []
        for k in range(len(self.subs)):
            m = who == k
            out.append({key: v[m] for key, v in batch.items() if torch.is_tensor(v) and len(v) == len(m)} if m.any() else None)
        return out

    def tsm_loss(self, sub: DMD2, b: dict) -> torch.Tensor:
        """Teacher score matching: the student's denoiser output regressed on the teacher's (EDM-weighted)."""
        from ...losses.diffusion import edm_sigmas, edm_weight

        x0, cond = b["x"], b["y"]
        sigma = edm_sigmas(len(x0), self.cfg.tsm_p_mean, self.cfg.tsm_p_std, x0.device)
        x_t = x0 + sigma.reshape(-1, *([1] * (x0.dim() - 1))) * torch.randn_like(x0)
        with torch.no_grad():
            target = self.teacher(x_t, sigma, cond)
        err = (sub.generator(x_t, sigma, cond) - target) ** 2
        return (edm_weight(sigma, self.teacher.sigma_data) * err.flatten(1).mean(1)).mean()

    def loss(self, batch, step):
        gen, fake, logs = 0.0, 0.0, {}
        pretraining = step < self.cfg.pretrain_steps
        for k, (sub, b) in enumerate(zip(self.subs, self.split(batch))):
            if b is None:
                continue
            out = sub.loss(b, step)
            g = self.tsm_loss(sub, b) if pretraining else out["generator"]
            gen, fake = gen + g, fake + out["fake_score"]
            logs[f"log/{'tsm' if pretraining else 'generator'}_{k}"] = g.detach()
            if "log/dm" in out:
                logs[f"log/dm_{k}"] = out["log/dm"]
        return {"generator": gen, "fake_score": fake, **logs}

    def export(self):
        """``EDMPrecond(router)`` over the students' networks (shared, not copied)."""
        router = MSDRouterNet([s.generator.net for s in self.subs], self.partition, self.num_classes)
        d = EDMPrecond(router, self.teacher.sigma_data)
        d.sampling = self.subs[0].generator.sampling
        specs = self.student_specs
        d.model_spec = ({"name": "msd_router", "students": specs, "partition": self.partition}
                        if all(s is not None for s in specs) else None)
        return d


__all__ = ["MSD", "MSDConfig", "MSDRouterConfig", "MSDRouterNet", "contiguous_partition"]
