"""Self-Supervised Dataset Distillation for Transfer Learning (KRR-ST) — Lee, Lee, Lee, Hwang et al.,
ICLR 2024, arXiv 2310.06511 (catalog D9).

The distilled set is for *pre-training*: a fresh network regresses the set's targets, and is then
fine-tuned (or linearly probed) on another, labelled task. No class label is used.

**Target model.** A frozen self-supervised network ``t`` (the paper: a Barlow Twins ResNet-18;
here the ``teacher:`` section, trained with ``barlow_twins``, ``potstill/methods/kd/barlow_twins.py``)
maps an image to its representation ``t(x)`` in R^d (``t.embed(x)``).

**What is learned.** Synthetic images ``X_s`` (N, C, H, W) and target representations ``Y_s``
(N, d), initialised from N real images and ``Y_s = t(X_s)`` (both learnable).

**Outer objective (eq. 6-7).** Draw a model ``g = h o f`` from a pool; with features ``f`` and a
bias column, ``F_s = [f(X_s), 1]``, ``F_r = [f(A(X_r)), 1]`` for a real batch ``X_r`` under a random
augmentation ``A``, the inner problem - fit a linear head to ``(F_s, Y_s)`` by ridge regression -
is solved in closed form (kernel ridge regression with ``K = F F^T``):

    K_ss = F_s F_s^T,  K_rs = F_r F_s^T,  lambda = ridge * tr(K_ss)        (ridge = 1e-6)
    Y_hat_r = K_rs (K_ss + lambda I)^{-1} Y_s
    L(X_s, Y_s) = MSE(Y_hat_r, t(A(X_r)))

and both ``X_s`` and ``Y_s`` take a gradient step on L (AdamW in the paper; the trainer's groups
``images`` and ``targets``). ``lambda`` is treated as a constant (no gradient through the trace),
and the solve is done in float64.

**Model pool (Sec. 3.3).** ``pool_size`` models (paper: 10) of ``net`` whose linear head maps
features to R^d. Each use trains the chosen model one SGD step (lr 0.1, momentum 0.9, weight
decay 1e-3) on ``MSE(g(X_s), Y_s)`` with the current set (detached); a model used ``pool_reset``
times (paper: 1000) is re-initialised. As in the reference code the members start staggered,
each pre-trained for U{1, ..., pool_reset - 1} steps (done at the first training step, so a
zero-step run - the baselines below - costs nothing). Here the model takes its step *before* it
is used for the kernel (the paper: after the outer update) - one outer step of lag. Its kernel
features are taken in eval mode. The pool (weights, momenta, use counts) is checkpointed, so a
resumed run continues exactly. (Under ``torchrun`` every process keeps its own pool and real
batches; the image and target gradients are averaged as for every dataset method; a checkpoint
keeps rank 0's pool.)

**Initialisation.** ``init: real`` draws ``ipc`` random real images of every class (N = K * ipc;
the class is used only to balance the draw - the paper draws N images at random); ``kmeans``
takes the real image nearest to each of N k-means centroids of the teacher's representations of
the training images (label-free); ``noise`` starts from N(0, 1) pixels. With
``trainer.steps=0`` the export is the initial set itself with the teacher's targets - the
"random subset / k-means subset with teacher targets" baselines.

**Export.** A :class:`~potstill.data.synthetic_set.SyntheticSet` with the images and the
regression ``targets`` (label storage ``N * d * 4`` bytes); its hard ``labels`` only record the
class of the real image each synthetic image started from (bookkeeping: the transfer protocol,
``potstill/eval/transfer.py``, never reads them; the dd-v1 number ``potstill run`` prints for a
dataset method trains a classifier on those bookkeeping labels and is not this paper's protocol).

CPU scale-down (recipes): pool of 4, reset after 100 uses, real batch 256, a 32-wide ConvNet,
thousands instead of 160k outer steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.method import Method
from ...core.registry import METHODS
from ...core.teacher import Teacher
from ...data.dsa import DEFAULT_STRATEGY, DSA, parse_strategy
from ...data.synthetic_set import SyntheticSet


def _default_net() -> dict:
    return {"name": "convnet", "width": 32, "depth": 3, "norm": "instance", "pooling": "avg", "first_padding": 3}


@dataclass
class KRRSTConfig:
    ipc: int = 10                                     # N = num_classes * ipc synthetic images
    init: Literal["real", "kmeans", "noise"] = "real"
    net: dict = field(default_factory=_default_net)   # the pool's feature extractor (+ linear head to R^d)
    batch_real: int = 256                             # real images per outer step (paper: 1024)
    ridge: float = 1e-6                               # lambda = ridge * tr(K_ss)
    dsa: str = DEFAULT_STRATEGY                       # augmentation A of the real batch ("none": off)
    pool_size: int = 4                                # models in the pool (paper: 10)
    pool_reset: int = 100                             # uses before a pool model is re-initialised (paper: 1000)
    pool_lr: float = 0.1                              # the pool models' SGD (paper: lr 0.1, momentum 0.9, wd 1e-3)
    pool_momentum: float = 0.9
    pool_weight_decay: float = 1e-3
    pool_stagger: bool = True                         # members start pre-trained for U{1..pool_reset-1} steps
    use_unlabeled: bool = True                        # draw real batches from the unlabeled split too
    kmeans_iters: int = 30                            # Lloyd iterations of init: kmeans

    def __post_init__(self):
        if self.ipc < 1 or self.batch_real < 1 or self.pool_size < 1 or self.pool_reset < 2:
            raise ValueError("need ipc, batch_real, pool_size >= 1 and pool_reset >= 2")
        if not self.ridge > 0:
            raise ValueError(f"ridge must be > 0, got {self.ridge}")
        if self.pool_lr < 0 or not 0 <= self.pool_momentum < 1 or self.pool_weight_decay < 0:
            raise ValueError("need pool_lr >= 0, pool_momentum in [0, 1), pool_weight_decay >= 0")
        if self.kmeans_iters < 0:
            raise ValueError("kmeans_iters must be >= 0")
        parse_strategy(self.dsa)


# --- the closed-form inner solve -------------------------------------------------------------------
def with_bias(f: torch.Tensor) -> torch.Tensor:
    """Features ``[f, 1]`` (a bias column), flattened to (N, D + 1)."""
    f = f.flatten(1)
    return torch.cat([f, f.new_ones(len(f), 1)], dim=1)


def krr_predict(f_syn: torch.Tensor, f_real: torch.Tensor, y_syn: torch.Tensor,
                ridge: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """``K_rs (K_ss + lambda I)^{-1} Y_s`` with ``K = [f, 1][f, 1]^T`` and ``lambda = ridge * tr(K_ss)``.

    Returns (predictions for the real rows, lambda). Solved in float64; differentiable in
    ``f_syn`` (hence the synthetic images) and ``y_syn``; lambda carries no gradient.
    """
    with torch.autocast(device_type=f_syn.device.type, enabled=False):
        fs, fr = with_bias(f_syn).double(), with_bias(f_real).double()
        k_ss = fs @ fs.t()
        k_rs = fr @ fs.t()
        lam = ridge * torch.trace(k_ss).detach()
        eye = torch.eye(len(fs), dtype=k_ss.dtype, device=k_ss.device)
        alpha = torch.linalg.solve(k_ss + lam * eye, y_syn.double())
        return (k_rs @ alpha).to(y_syn.dtype), lam


def embed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (net.embed(x) if hasattr(net, "embed") else net(x)).flatten(1)


@torch.no_grad()
def representations(net: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """``embed(net, x)`` in eval mode, in batches, on the net's device; returned on x's device, float32."""
    device = next(net.parameters()).device
    return torch.cat([embed(net, x[i:i + batch].to(device)).float().to(x.device) for i in range(0, len(x), batch)])


# --- k-means init ------------------------------------------------------------------------------------
def kmeans(feats: torch.Tensor, k: int, iters: int = 30) -> torch.Tensor:
    """k-means++ seeding then ``iters`` Lloyd steps (torch's global RNG); returns the (k, D) centroids."""
    n = len(feats)
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: need 1 <= k <= {n} rows, got k={k}")
    feats = feats.float()
    centres = feats[int(torch.randint(n, (1,)))].unsqueeze(0)
    d2 = (feats - centres[0]).pow(2).sum(1)
    for _ in range(1, k):
        p = d2.clamp_min(0)
        idx = int(torch.multinomial(p / p.sum(), 1)) if float(p.sum()) > 0 else int(torch.randint(n, (1,)))
        centres = torch.cat([centres, feats[idx:idx + 1]])
        d2 = torch.minimum(d2, (feats - feats[idx]).pow(2).sum(1))
    for _ in range(iters):
        assign = torch.cdist(feats, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, feats)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)   # an empty cluster keeps its centre
    return centres


def nearest_distinct(feats: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """For every centre, the index of the nearest row not already taken by an earlier centre."""
    d = torch.cdist(centres.float(), feats.float())
    taken: set[int] = set()
    out = []
    for row in d:
        for j in row.argsort().tolist():
            if j not in taken:
                taken.add(j)
                out.append(j)
                break
    return torch.tensor(out, dtype=torch.long)


# --- the model pool ----------------------------------------------------------------------------------
class PoolMember(nn.Module):
    """One pool model with its own SGD momentum buffers and use count (all in the state dict)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("uses", torch.zeros((), dtype=torch.long))
        self.momentum = nn.Module()
        for name, p in net.named_parameters():
            self.momentum.register_buffer(name.replace(".", "__"), torch.zeros_like(p))

    def reset(self, fresh: nn.Module) -> None:
        """New random weights (from ``fresh``), zero momenta, zero uses."""
        with torch.no_grad():
            self.net.load_state_dict(fresh.state_dict())
            for b in self.momentum.buffers():
                b.zero_()
            self.uses.zero_()

    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, lr: float, momentum: float, wd: float) -> torch.Tensor:
        """One step of SGD (torch's semantics: d = g + wd p; m = momentum m + d; p -= lr m) on MSE(net(x), y)."""
        params = [p for p in self.net.parameters()]
        self.net.train()
        with torch.enable_grad():
            loss = F.mse_loss(self.net(x), y)
            grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for (name, p), g in zip(self.net.named_parameters(), grads):
                buf = getattr(self.momentum, name.replace(".", "__"))
                buf.mul_(momentum).add_(g + wd * p)
                p.sub_(lr * buf)
            self.uses += 1
        return loss.detach()


@METHODS.register("krr_st")
class KRRST(Method):
    """KRR-ST: learn images and target representations so kernel ridge regression on them predicts an SSL teacher."""

    Config = KRRSTConfig
    name = "krr_st"
    pillar = "dataset"
    catalog_ids = ("D9",)
    paper = "Self-Supervised Dataset Distillation for Transfer Learning"
    arxiv = "2310.06511"

    def __init__(self, cfg: KRRSTConfig, data, teacher: nn.Module, teacher_checkpoint: str = ""):
        super().__init__(cfg)
        self.num_classes, self.in_shape = data.num_classes, tuple(data.in_shape)
        self.source = {"dataset": data.name, "normalization": data.normalization, "class_names": data.class_names,
                       **({"teacher": teacher_checkpoint} if teacher_checkpoint else {})}
        self.teacher = Teacher(teacher)                  # frozen, eval mode, not checkpointed
        parts = [data.train.x] + ([data.unlabeled.x] if cfg.use_unlabeled and data.unlabeled is not None else [])
        self.real_x = torch.cat(parts)                   # the real pool (labels never read), kept on the CPU
        self.dsa = DSA(cfg.dsa)
        x, labels = self._initial_images(cfg, data)
        self.images = nn.Parameter(x.clone())
        self.register_buffer("labels", labels)          # bookkeeping: the class each image was drawn from
        y = representations(self.teacher.model, x)
        self.targets = nn.Parameter(y.clone())
        self.pool = nn.ModuleList(PoolMember(self._fresh_net()) for _ in range(cfg.pool_size))
        self.register_buffer("pool_ready", torch.tensor(not cfg.pool_stagger))

    @classmethod
    def build(cls, cfg, ctx):
        spec = ctx.teacher_spec
        return cls(cfg, ctx.data, ctx.teacher().model, getattr(spec, "checkpoint", "") or "")

    def _initial_images(self, cfg: KRRSTConfig, data) -> tuple[torch.Tensor, torch.Tensor]:
        from ...core.config import ConfigError
        from .base import ClassIndex

        k, n = self.num_classes, self.num_classes * cfg.ipc
        if cfg.init == "noise":
            return torch.randn(n, *self.in_shape), torch.arange(k).repeat_interleave(cfg.ipc)
        if cfg.init == "real":
            real = ClassIndex(data.train, k)
            x = torch.cat([real.sample(c, cfg.ipc) for c in range(k)])
            if len(x) != n:
                raise ConfigError(f"method.ipc={cfg.ipc} is more than the smallest class has "
                                  f"({min(len(r) for r in real.rows)})")
            return x, torch.arange(k).repeat_interleave(cfg.ipc)
        # kmeans: label-free choice among the labelled training rows (their labels are kept as bookkeeping)
        if n > len(data.train):
            raise ConfigError(f"method.ipc={cfg.ipc}: {n} k-means images but only {len(data.train)} training rows")
        feats = representations(self.teacher.model, data.train.x)
        rows = nearest_distinct(feats, kmeans(feats, n, cfg.kmeans_iters))
        return data.train.x[rows], data.train.y[rows].clone()

    def _fresh_net(self) -> nn.Module:
        """A newly initialised pool model (weights from the global generator): features -> R^d head."""
        from ...models import build_model

        d = self.targets.shape[1]
        return build_model(self.cfg.net, self.in_shape, d, "method.net").to(self.images.device)

    def train_data(self, bundle):
        return None                                      # draws its own real batches

    def param_groups(self):
        return {"images": [self.images], "targets": [self.targets]}

    # --- the pool ----------------------------------------------------------------------------------
    def _pool_step(self, member: PoolMember) -> torch.Tensor:
        c = self.cfg
        if int(member.uses) >= c.pool_reset:
            member.reset(self._fresh_net())
        return member.sgd_step(self.images.detach(), self.targets.detach(), c.pool_lr, c.pool_momentum,
                               c.pool_weight_decay)

    def _stagger_pool(self) -> None:
        for member in self.pool:
            for _ in range(int(torch.randint(1, self.cfg.pool_reset, (1,)))):
                self._pool_step(member)
        self.pool_ready.fill_(True)

    # --- one outer step ------------------------------------------------------------------------------
    def real_batch(self) -> torch.Tensor:
        idx = torch.randint(len(self.real_x), (self.cfg.batch_real,))
        x = self.real_x[idx].to(self.images.device)
        return self.dsa(x, int(torch.randint(2**31 - 1, (1,)))) if self.dsa else x

    def loss(self, batch, step):
        if not bool(self.pool_ready):
            self._stagger_pool()
        member = self.pool[int(torch.randint(len(self.pool), (1,)))]
        pool_mse = self._pool_step(member)
        x_real = self.real_batch()
        with torch.no_grad():
            y_real = embed(self.teacher.model, x_real).float()
        net = member.net
        net.eval()
        with torch.no_grad():
            f_real = embed(net, x_real)
        f_syn = embed(net, self.images)
        pred, lam = krr_predict(f_syn, f_real, self.targets, self.cfg.ridge)
        loss = F.mse_loss(pred, y_real)
        net.train()
        return {"images": loss, "targets": loss, "log/pool_mse": pool_mse, "log/lambda": lam.float()}

    # --- the artefact --------------------------------------------------------------------------------
    def export(self) -> SyntheticSet:
        meta = {"method": self.name, "augmentation": self.cfg.dsa, "init": self.cfg.init, **self.source,
                "labels": "class of the real image each synthetic image was drawn from (bookkeeping, never trained on)",
                "targets": f"learned regression targets in the SSL teacher's representation space "
                           f"(d={self.targets.shape[1]}), initialised to t(x)"}
        return SyntheticSet(self.images.detach(), self.labels.clone(), self.num_classes, meta,
                            targets=self.targets.detach())

    def evaluate(self, data, batch_size: int = 512):  # judged by the transfer protocol, not per step
        return {}


__all__ = ["KRRST", "KRRSTConfig", "krr_predict", "with_bias", "kmeans", "nearest_distinct", "PoolMember",
           "representations"]
