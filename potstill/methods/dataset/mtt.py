"""Dataset Distillation by Matching Training Trajectories (MTT) — Cazenavette, Wang, Torralba,
Efros & Zhu, CVPR 2022, arXiv 2203.11932 (catalog B6).

Experts (:mod:`.experts`) are networks trained on the real data whose parameters are stored
after every epoch. One distillation iteration (one trainer step):

1. pick an expert and a start epoch t uniformly in [``min_start_epoch``, ``max_start_epoch``)
   (upper bound excluded, as in the paper's code); theta_hat_0 = theta*_t;
2. unroll N = ``syn_steps`` SGD steps of the student on synthetic mini-batches (DSA, a fresh
   seed each step) with the *learnable* learning rate alpha (eq. 1):
       theta_hat_{n+1} = theta_hat_n - alpha * grad_theta CE(f(A(x_n); theta_hat_n), y_n)
3. minimise the normalised distance to the expert M = ``expert_epochs`` epochs later (eq. 2):
       L = ||theta_hat_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2
   with respect to the images (SGD, momentum 0.5) and alpha (SGD, momentum 0.5).

Memory. ``unroll: full`` keeps the graph of all N steps (memory grows with N x batch); ``unroll:
recompute`` runs the N steps without a graph, keeps only the N parameter vectors, and then walks
back from step N to 0 recomputing one step's graph at a time and propagating the
vector-Jacobian product through it (reverse-mode differentiation with recomputation). It gives
the *same* gradient as ``full`` (a test checks it) with the activation memory of one step - the
goal of TESLA's constant-memory trick (Cui et al., arXiv 2211.10586), but without TESLA's
simplification of treating the intermediate parameters as constants.

The gradients of the images, alpha (and, in subclasses, labels) are computed in this file and
handed to the trainer as a *surrogate* loss whose value is L and whose gradient with respect to
each group is the one computed here (one backward pass, whatever the number of groups).

Subclasses (one file each) change one piece: FTD (``ftd.py``) the experts and an EMA of the
images; DATM (``datm.py``) the start-epoch window and learnable soft labels; AST (``ast.py``) the
experts, initialisation, inner loss, matching loss and start parameters. The hooks are
:meth:`start_window`, :meth:`start_params`, :meth:`inner_loss`, :meth:`match_loss` and
:meth:`extra_groups`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ...core.config import ConfigError
from ...core.registry import METHODS
from ...data.synthetic_set import SyntheticSet
from ...losses.matching import trajectory_distance
from .base import SyntheticConfig, SyntheticDataMethod
from .experts import ExpertConfig, expert_buffer


@dataclass
class MTTConfig(SyntheticConfig):
    experts: dict = field(default_factory=dict)   # ExpertConfig fields (how to train the buffer)
    buffer: str = ""                 # a ready buffer folder; "" = train / reuse one in the cache
    syn_steps: int = 20              # N: student steps per iteration
    expert_epochs: int = 2           # M: the target is M expert epochs after the start
    min_start_epoch: int = 0
    max_start_epoch: int = 10        # T+: start epochs are drawn from [min, max)
    lr_init: float = 0.01            # initial learnable student lr alpha (MTT: lr_teacher)
    batch_syn: int = 0               # synthetic images per student step; 0 = all of them
    inner_momentum: float = 0.0      # heavy-ball momentum of the student's steps (AST: 0.9)
    unroll: Literal["full", "recompute"] = "full"

    def __post_init__(self):
        super().__post_init__()
        ExpertConfig(**self.experts)  # validates the keys now, before any expert is trained
        if self.syn_steps < 1 or self.expert_epochs < 1 or self.batch_syn < 0:
            raise ValueError("syn_steps and expert_epochs must be >= 1, batch_syn >= 0")
        if not 0 <= self.min_start_epoch < self.max_start_epoch:
            raise ValueError(f"need 0 <= min_start_epoch < max_start_epoch, got {self.min_start_epoch}, "
                             f"{self.max_start_epoch}")
        if not self.lr_init > 0 or not 0 <= self.inner_momentum < 1:
            raise ValueError("lr_init must be > 0 and inner_momentum in [0, 1)")
        if self.unroll not in ("full", "recompute"):
            raise ValueError(f"unroll must be 'full' or 'recompute', not {self.unroll!r}")


class FlatNet:
    """Call a module with its parameters given as one flat vector (``functional_call``)."""

    def __init__(self, net: nn.Module):
        self.net = net
        self.names = [n for n, _ in net.named_parameters()]
        self.shapes = [p.shape for _, p in net.named_parameters()]
        self.sizes = [p.numel() for _, p in net.named_parameters()]

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.sizes), self.shapes)}

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, self.unflatten(flat), (x,))


def surrogate(value: torch.Tensor, params: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """A scalar equal to ``value`` whose gradient with respect to ``params[i]`` is ``grads[i]``."""
    out = value.detach()
    for p, g in zip(params, grads):
        out = out + (p * g.detach()).sum() - (p.detach() * g.detach()).sum()
    return out


@METHODS.register("mtt")
class MTT(SyntheticDataMethod):
    """Matching training trajectories: unrolled student steps on S matched to expert snapshots."""

    Config = MTTConfig
    name = "mtt"
    catalog_ids = ("B6",)
    paper = "Dataset Distillation by Matching Training Trajectories"
    arxiv = "2203.11932"

    def __init__(self, cfg: MTTConfig, data):
        super().__init__(cfg, data)
        self.buffer = expert_buffer(self.expert_config(cfg), cfg.net, data, cfg.buffer, progress=True)
        last = cfg.max_start_epoch - 1 + cfg.expert_epochs
        if last > self.buffer.epochs:
            raise ConfigError(f"method.max_start_epoch: start {cfg.max_start_epoch - 1} + expert_epochs "
                              f"{cfg.expert_epochs} needs {last} expert epochs, the buffer has {self.buffer.epochs}")
        self.zca = self.buffer.zca
        if self.zca is not None:               # distil in the experts' (whitened) space
            with torch.no_grad():
                self.images.copy_(self.zca.apply(self.images))
        self.fnet = FlatNet(self.random_net().requires_grad_(False).train())
        if sum(self.fnet.sizes) != self.buffer.num_params:
            raise ConfigError(f"method.net has {sum(self.fnet.sizes)} parameters, the buffer's experts "
                              f"{self.buffer.num_params}")
        self.syn_lr = nn.Parameter(torch.tensor(float(cfg.lr_init)))
        self.current_start = cfg.min_start_epoch

    @classmethod
    def expert_config(cls, cfg: MTTConfig) -> ExpertConfig:
        """How this method's experts are trained (subclasses add their defaults under the recipe's)."""
        return ExpertConfig(**cfg.experts)

    def param_groups(self):
        return {"images": [self.images], "lr": [self.syn_lr], **self.extra_groups()}

    def extra_groups(self) -> dict[str, list[nn.Parameter]]:
        return {}

    # --- hooks ---------------------------------------------------------------------------------
    def start_window(self, step: int) -> tuple[int, int]:
        """[low, high) of the start epoch at this iteration (MTT: fixed)."""
        return self.cfg.min_start_epoch, self.cfg.max_start_epoch

    def start_params(self, theta: torch.Tensor) -> torch.Tensor:
        """The student's starting parameters from the expert snapshot (MTT: unchanged)."""
        return theta

    def inner_loss(self, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The student's training loss on synthetic rows ``idx`` (MTT: CE on the hard labels)."""
        return F.cross_entropy(logits, self.labels[idx])

    def match_loss(self, thetas: list[torch.Tensor], expert: int, start: int) -> torch.Tensor:
        """MTT eq. 2 between the last student step and the expert ``expert_epochs`` later."""
        target = self.buffer.snapshot(expert, start + self.cfg.expert_epochs).to(thetas[0])
        return trajectory_distance(thetas[-1], thetas[0].detach(), target)

    def matched_steps(self) -> list[int]:
        """Student steps whose parameters the match loss reads (MTT: only the last)."""
        return [self.cfg.syn_steps]

    def differentiable(self) -> list[torch.Tensor]:
        """What the matching loss is differentiated with respect to, in group order."""
        return [self.images, self.syn_lr] + [p for ps in self.extra_groups().values() for p in ps]

    # --- the unrolled student ------------------------------------------------------------------
    def plan(self) -> list[tuple[torch.Tensor, int]]:
        """Per student step: synthetic rows (chunks of a shuffled order) and a DSA seed."""
        n, b = len(self.images), self.cfg.batch_syn or len(self.images)
        out, chunks = [], []
        for _ in range(self.cfg.syn_steps):
            if not chunks:
                chunks = list(torch.randperm(n).to(self.images.device).split(b))
            out.append((chunks.pop(), int(torch.randint(2**31 - 1, (1,)))))
        return out

    def student_step(self, state, step_plan, create_graph: bool):
        """(theta, velocity) -> next, one SGD(-momentum) step of the student on synthetic data."""
        theta, velocity = state
        idx, seed = step_plan
        x = self.images[idx]
        if self.dsa:
            x = self.dsa(x, seed)
        loss = self.inner_loss(self.fnet(theta, x), idx)
        (g,) = torch.autograd.grad(loss, theta, create_graph=create_graph)
        velocity = self.cfg.inner_momentum * velocity + g if self.cfg.inner_momentum else g
        return theta - self.syn_lr * velocity, velocity

    def unrolled_gradients(self, theta0: torch.Tensor, plan, expert: int, start: int):
        """(L, [dL/dp for p in differentiable()]) by the configured unroll mode."""
        inputs = self.differentiable()
        theta0 = theta0.detach().requires_grad_(True)
        zero = torch.zeros_like(theta0)
        if self.cfg.unroll == "full":
            thetas, state = [theta0], (theta0, zero)
            for sp in plan:
                state = self.student_step(state, sp, create_graph=True)
                thetas.append(state[0])
            loss = self.match_loss(thetas, expert, start)
            grads = torch.autograd.grad(loss, inputs, allow_unused=True)
            return loss, [torch.zeros_like(p) if g is None else g for p, g in zip(inputs, grads)]
        # recompute: forward without graphs, then one step's graph at a time in reverse
        states = [(theta0.detach(), zero)]
        for sp in plan:
            th = states[-1][0].detach().requires_grad_(True)
            nxt = self.student_step((th, states[-1][1]), sp, create_graph=False)
            states.append((nxt[0].detach(), nxt[1].detach()))
        leaves = [s[0].detach().requires_grad_(True) for s in states]
        loss = self.match_loss(leaves, expert, start)
        direct = torch.autograd.grad(loss, [leaves[i] for i in self.matched_steps()], allow_unused=True)
        direct = {i: g for i, g in zip(self.matched_steps(), direct) if g is not None}
        v_theta, v_vel = direct.get(len(plan), torch.zeros_like(theta0)), torch.zeros_like(theta0)
        total = [torch.zeros_like(p) for p in inputs]
        momentum = self.cfg.inner_momentum > 0   # else the velocity is just this step's gradient
        for i in range(len(plan) - 1, -1, -1):
            th = states[i][0].detach().requires_grad_(True)
            vel = states[i][1].detach().requires_grad_(True)
            new_theta, new_vel = self.student_step((th, vel), plan[i], create_graph=True)
            outs, cot, wrt = ((new_theta, new_vel), (v_theta, v_vel), [th, vel]) if momentum else \
                ((new_theta,), (v_theta,), [th])
            grads = torch.autograd.grad(outs, wrt + inputs, cot, allow_unused=True)
            v_theta = grads[0] + direct.get(i, 0)
            if momentum:
                v_vel = grads[1] if grads[1] is not None else torch.zeros_like(theta0)
            for k, g in enumerate(grads[len(wrt):]):
                if g is not None:
                    total[k] += g
        return loss.detach(), total

    def loss(self, batch, step):
        low, high = self.start_window(step)
        expert = int(torch.randint(len(self.buffer), (1,)))
        start = int(torch.randint(low, high, (1,)))
        self.current_start = start      # for hooks that depend on it (AST's balanced inner loss)
        theta0 = self.start_params(self.buffer.snapshot(expert, start).to(self.images.device))
        value, grads = self.unrolled_gradients(theta0, self.plan(), expert, start)
        out = surrogate(value, self.differentiable(), grads)
        losses = {g: out for g in self.param_groups()}
        losses["log/start_epoch"] = torch.tensor(float(start))
        losses["log/syn_lr"] = self.syn_lr.detach()
        return losses

    # --- the artefact --------------------------------------------------------------------------
    def exported_images(self) -> torch.Tensor:
        x = self.images.detach()
        return self.zca.invert(x) if self.zca is not None else x

    def exported_labels(self) -> torch.Tensor:
        return self.labels.clone()

    def export(self) -> SyntheticSet:
        meta = {"method": self.name, "augmentation": self.cfg.dsa, **self.source,
                "student_lr": float(self.syn_lr.detach()), "zca": self.zca is not None,
                "experts": {"buffer": str(self.buffer.root), "count": len(self.buffer),
                            "epochs": self.buffer.epochs, "training": self.buffer.meta.get("training")}}
        return SyntheticSet(self.exported_images(), self.exported_labels(), self.num_classes, meta)


__all__ = ["MTT", "MTTConfig", "FlatNet", "surrogate"]
