"""Distribution Backtracking Builds A Faster Convergence Trajectory for One-step Diffusion
Distillation (DisBack) - Zhang et al., arXiv 2408.15991 (catalog G11).

Score distillation (here DMD2, ``dmd2.py``, reused by subclassing; the paper's public code is also
built on DMD2) compares the generator's fake score with the teacher's score from the first step,
although the initial generator's distribution is far from the teacher's ("score mismatch").
DisBack gives the generator a sequence of intermediate targets instead:

**Stage 1 - degradation recording** (:meth:`DisBack.record`; run once, before the first
training step, on the trainer's device). A copy s' of the teacher (s'_0 = s_teacher) is
fine-tuned toward the *initial* generator's distribution with the denoising loss on its samples,

    L_rec = E_{c, z, sigma, n} lambda(sigma) || s'(G_0(z, c) + sigma n, sigma, c) - G_0(z, c) ||^2
    (EDM weighting lambda, log-normal sigma, Adam with ``record_lr``, ``record_steps`` steps of ``record_batch``),

and N = ``path_checkpoints`` snapshots s'_1, ..., s'_N are kept, evenly spaced over the run (s'_N
at its end: the teacher degraded all the way to the initial generator). They live in the method's
state (``path.*``, checkpointed with the run, so a resumed run does not record again).

**Stage 2 - distribution backtracking.** DMD2 training in which the "real" score of the
distribution-matching gradient is a node of the recorded path, walked *backward*:

    grad = (mu_fake(x_t) - mu_{s'_j}(x_t)) / mean|x - mu_{s'_j}(x_t)|,   L_DM = 0.5 || x - sg(x - grad) ||^2,
    j = N, N-1, ..., 1, 0  (s'_0 = the teacher, kept to the end of training).

The fake score starts from s'_N (``fake_init: degraded``, the default: it already models the
initial generator), so the first target is s'_{N-1}; with ``fake_init: teacher`` (DMD2's
initialisation) the first target is s'_N itself.

**Schedule** (fixed interval, as the public code's ``--interval``): with the replay order
o = [N-1, ..., 0] (or [N, ..., 0]), trainer step t uses node o[min(t // switch_every, len(o) - 1)];
every ``switch_every`` trainer steps the target moves one node closer to the teacher, which then
stays the target. The node is logged as ``log/node`` and the switches are kept in
``replay_log`` [(step, node), ...]. (The paper also describes moving on when the generator has
converged to the current node; the fixed interval is what its code does.)

Everything else - fake score and its EDM loss, TTUR (``trainer.optim.generator.update_every``),
GAN head on real data, multi-step backward simulation, guidance (applied to every node) - is
DMD2's, inherited. Cost: stage 1 adds ``record_steps`` fake-score-sized updates and N copies of the
teacher in memory and in the checkpoint.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from ...core.registry import METHODS
from ...losses.diffusion import edm_loss
from .dmd2 import DMD2, DMD2Config

FAKE_INITS = ("degraded", "teacher")


@dataclass
class DisBackConfig(DMD2Config):
    path_checkpoints: int = 4          # N recorded nodes of the degradation path
    record_steps: int = 200            # stage-1 fine-tuning steps of the teacher copy
    record_batch: int = 64             # ... their batch (initial-generator samples)
    record_lr: float = 1e-4            # ... Adam learning rate (betas 0, 0.999)
    switch_every: int = 250            # trainer steps per node in stage 2
    fake_init: str = "degraded"        # degraded (fake score starts at s'_N) | teacher

    def __post_init__(self):
        super().__post_init__()
        if self.path_checkpoints < 1:
            raise ValueError(f"path_checkpoints must be >= 1, got {self.path_checkpoints}")
        if self.record_steps < self.path_checkpoints:
            raise ValueError(f"record_steps must be >= path_checkpoints ({self.path_checkpoints}), got {self.record_steps}")
        if self.record_batch < 1:
            raise ValueError(f"record_batch must be >= 1, got {self.record_batch}")
        if not self.record_lr > 0:
            raise ValueError(f"record_lr must be > 0, got {self.record_lr}")
        if self.switch_every < 1:
            raise ValueError(f"switch_every must be >= 1, got {self.switch_every}")
        if self.fake_init not in FAKE_INITS:
            raise ValueError(f"fake_init must be one of {', '.join(FAKE_INITS)}, not {self.fake_init!r}")


@METHODS.register("disback")
class DisBack(DMD2):
    """DisBack: DMD2 whose real score walks a recorded teacher-degradation path backward to the teacher."""

    Config = DisBackConfig
    name = "disback"
    catalog_ids = ("G11",)
    paper = "Distribution Backtracking Builds A Faster Convergence Trajectory for One-step Diffusion Distillation"
    arxiv = "2408.15991"

    def __init__(self, cfg: DisBackConfig, teacher, data):
        super().__init__(cfg, teacher, data)
        self.path = nn.ModuleList([copy.deepcopy(teacher).requires_grad_(False).eval()
                                   for _ in range(cfg.path_checkpoints)])
        self.register_buffer("recorded", torch.zeros((), dtype=torch.bool))
        self.replay_log: list[tuple[int, int]] = []     # (trainer step, node) at every switch
        self.record_log: list[tuple[int, float]] = []   # (stage-1 step, loss) at every snapshot
        self._node: int | None = None

    def frozen(self):
        return [self.teacher, *self.path]

    # --- stage 1 ---------------------------------------------------------------------------------
    def record(self) -> None:
        """Fine-tune a teacher copy on the (still untrained) generator's samples; keep N snapshots."""
        cfg = self.cfg
        n_nodes = cfg.path_checkpoints
        net = copy.deepcopy(self.teacher).requires_grad_(True).train()
        opt = torch.optim.Adam(net.parameters(), lr=cfg.record_lr, betas=(0.0, 0.999))
        dev = next(self.generator.parameters()).device
        saved = 0
        with torch.enable_grad():
            for i in range(cfg.record_steps):
                cond = self.sample_labels(cfg.record_batch, dev)
                with torch.no_grad():
                    x = self.generator_sample(self.generator, cfg.record_batch, cond, cfg.backward_simulation)
                loss = edm_loss(net, x, cond, p_mean=cfg.fake_p_mean, p_std=cfg.fake_p_std,
                                sigma_data=self.teacher.sigma_data)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                while saved < n_nodes and i + 1 >= round((saved + 1) * cfg.record_steps / n_nodes):
                    self.path[saved].load_state_dict(net.state_dict())
                    self.record_log.append((i + 1, float(loss.detach())))
                    saved += 1
        if cfg.fake_init == "degraded":
            self.fake_score.load_state_dict(self.path[-1].state_dict())
        self.recorded.fill_(True)

    # --- stage 2 ---------------------------------------------------------------------------------
    def replay_order(self) -> list[int]:
        """Nodes in the order stage 2 uses them: N..0 (0 = the teacher), without N if the fake score starts there."""
        order = list(range(self.cfg.path_checkpoints, -1, -1))
        return order[1:] if self.cfg.fake_init == "degraded" else order

    def node_at(self, step: int) -> int:
        order = self.replay_order()
        return order[min(step // self.cfg.switch_every, len(order) - 1)]

    def node_net(self, node: int) -> nn.Module:
        return self.teacher if node == 0 else self.path[node - 1]

    def real_denoise(self, x, sigma, cond, guidance: float = 1.0):
        """The current path node's x_0 estimate (CFG as in the teacher's :meth:`real_denoise`)."""
        net = self.node_net(self._node if self._node is not None else 0)
        if cond is None or guidance == 1.0:
            return net(x, sigma, cond)
        both = net(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([cond, torch.full_like(cond, self.num_classes)]))
        c, u = both.chunk(2)
        return u + guidance * (c - u)

    def loss(self, batch, step):
        if not bool(self.recorded):
            self.record()
        node = self.node_at(step)
        if node != self._node:
            self.replay_log.append((step, node))
            self._node = node
        out = super().loss(batch, step)
        out["log/node"] = torch.tensor(float(node))
        return out


__all__ = ["DisBack", "DisBackConfig", "FAKE_INITS"]
