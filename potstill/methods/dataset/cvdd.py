"""CV-DD: Dataset Distillation via Committee Voting — Cui, Li, Ma, Bi, Luo & Shen, arXiv 2501.07575
(catalog D3).

SRe2L-style recovery (:mod:`.sre2l`) from a *committee* of differently shaped batch-norm
networks instead of one teacher, and soft labels voted by the committee.

* **Committee.** ``committee`` lists the members: each is a model spec with either a
  ``checkpoint`` (weights trained elsewhere) or ``epochs`` of training on the real training split
  here (cross-entropy, Adam, random shifts - the squeeze stage, seeded per member). Every member
  must have BatchNorm layers. Each member's prior performance ``a_m`` is its accuracy on the
  validation split (the training split when there is none).
* **Voting weights** (prior-performance voting): ``w_m = softmax_m(a_m / tau)`` with
  ``tau = vote_temperature`` (a_m in [0, 1]); ``tau -> inf`` is the plain average.
* **Initialisation from real patches** (``init: patches``, the paper's "strong baseline"; its code
  reads pre-cut real patches of *medium* difficulty). Here: ``patch_candidates * ipc`` real images
  of class c are drawn, each scored by the committee's voted cross-entropy
  ``-log sum_m w_m softmax(f_m(x))_c`` (RDED-style realism score), and the ``ipc`` images around the
  median of that score are kept (``patch_difficulty: medium``; ``easy`` = lowest loss, ``hard`` =
  highest). At 28x28 a "patch" is the whole image, as RDED uses for CIFAR-sized inputs (factor 1).
  ``init: noise`` (N(0, 1), SRe2L's) and ``init: real`` (random real images) remain available.
* **Recovery.** Each step draws ``members_per_step`` members S at random (0 = all; the paper
  combines two per batch) and minimises, on one RandomResizedCrop + flip view of the images,

      L = sum_{m in S} w_m^S [ CE(f_m(A(x)), y) + r_bn * sum_l w_l ( ||mu_l^m(A(x)) - mu_l^{m,BN}||_2
                                                              + ||sigma^2_l^m(A(x)) - sigma^2_l^{m,BN}||_2 ) ]

  with ``w^S = softmax(a_S / tau)`` renormalised over the drawn members, summed over the ``ipc``
  one-image-per-class batches as in SRe2L.
* **Voted soft labels.** ``y_i = sum_m w_m softmax(f_m(x_i) / T)`` - a weighted sum, so the vote does
  not depend on the order of the committee. Stored once per image: ``label_bytes = N * K * 4``.
  (The paper's batch-specific soft labels - teachers in train mode, one label per crop per student
  epoch - are not stored here; see the SRe2L module on label storage.)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.config import ConfigError
from ...core.method import Method
from ...core.registry import METHODS
from ...core.teacher import Teacher
from .sre2l import SRe2L, SRe2LConfig, BNStatistics, ipc_major, recovery_loss, require_bn, soft_labels


@dataclass
class MemberConfig:
    model: dict = field(default_factory=lambda: {"name": "convnet", "width": 32, "depth": 3, "norm": "batch",
                                                 "first_padding": 1})
    checkpoint: str = ""        # trained weights; empty: train here for ``epochs``
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    shift: int = 1              # random translation (pixels) while training here

    def __post_init__(self):
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1 or self.shift < 0:
            raise ValueError("epochs and batch_size must be >= 1, lr > 0, shift >= 0")


def _default_committee() -> list[MemberConfig]:
    return [MemberConfig({"name": "convnet", "width": 32, "depth": 3, "norm": "batch", "first_padding": 1}),
            MemberConfig({"name": "convnet", "width": 64, "depth": 2, "norm": "batch", "first_padding": 1}),
            MemberConfig({"name": "resnet", "width": 16, "blocks": [1, 1, 1], "norm": "batch"})]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    dev = next(model.parameters()).device
    hits = sum(int((model(x[i:i + batch].to(dev)).argmax(1).cpu() == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / max(1, len(x))


def member_cache_file(cfg: MemberConfig, data, seed: int, cache_dir: str | Path) -> Path:
    """Where a member trained here is kept: a name derived from its spec, its seed and the training split."""
    from ...core.checkpoint import cache_digest

    digest = cache_digest({**asdict(cfg), "checkpoint": "", "seed": seed}, data.train.x.float(), data.train.y.long())
    return Path(cache_dir) / f"member_{digest}.safetensors"


def squeeze_member(cfg: MemberConfig, data, seed: int, key: str,
                   cache_dir: str | Path = "") -> tuple[nn.Module, float]:
    """One committee member: built from its spec, loaded or trained on the real training split (seeded,
    independent of the caller's RNG); returns (model in eval mode on the CPU, prior performance).

    With ``cache_dir`` a member trained here is stored there and reloaded by any later run with the same
    spec, seed and training split (benchmarks relabel random images with the committee of a finished run)."""
    from ...core.checkpoint import atomic_save_safetensors, load_module_weights
    from ...data.augment import random_shift
    from ...models import build_model

    cache = member_cache_file(cfg, data, seed, cache_dir) if cache_dir and not cfg.checkpoint else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg.model, data.in_shape, data.num_classes, f"{key}.model")
        require_bn(model, f"{key}.model")
        if cfg.checkpoint:
            load_module_weights(model, cfg.checkpoint, f"{key}.checkpoint")
        elif cache is not None and cache.is_file():
            load_module_weights(model, cache, f"{key} (member cache)")
        else:
            dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            model.to(dev).train()
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
            x, y = data.train.x, data.train.y
            keep = y >= 0
            x, y = x[keep], y[keep]
            g = torch.Generator().manual_seed(seed)
            steps = cfg.epochs * max(1, -(-len(x) // cfg.batch_size))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
            for _ in range(cfg.epochs):
                perm = torch.randperm(len(x), generator=g)
                for i in range(0, len(x), cfg.batch_size):
                    idx = perm[i:i + cfg.batch_size]
                    if len(idx) < 2:     # batch norm needs two rows
                        continue
                    xb = random_shift(x[idx], cfg.shift).to(dev)
                    loss = F.cross_entropy(model(xb), y[idx].to(dev))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
            model.cpu()
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                atomic_save_safetensors(model.state_dict(), cache)
    split = data.val if data.val is not None and len(data.val) else data.train
    return model.eval(), accuracy(model, split.x, split.y)


def vote_weights(acc: torch.Tensor, tau: float) -> torch.Tensor:
    """Prior-performance voting weights ``softmax(a / tau)``."""
    return torch.softmax(acc.double() / tau, 0).float()


def committee_vote(logits: list[torch.Tensor], acc: torch.Tensor, tau: float, temperature: float = 1.0) -> torch.Tensor:
    """Voted soft labels ``sum_m softmax(a / tau)_m softmax(z_m / T)`` from each member's logits."""
    w = vote_weights(acc, tau)
    return torch.einsum("m,mnk->nk", w, torch.stack([F.softmax(z.float() / temperature, 1) for z in logits]))


@torch.no_grad()
def select_patches(real, models: list[nn.Module], weights: torch.Tensor, num_classes: int, ipc: int,
                   candidates: int, difficulty: str) -> torch.Tensor:
    """``ipc`` real images per class (class-major rows), chosen among ``candidates * ipc`` random ones by the
    committee's voted cross-entropy: the lowest (easy), the highest (hard) or those around the median (medium)."""
    out = []
    for c in range(num_classes):
        x = real.sample(c, candidates * ipc)
        if len(x) < ipc:
            raise ConfigError(f"method.ipc={ipc} is more than class {c} has ({len(x)} images)")
        ce = -soft_labels(models, weights, x, 1.0)[:, c].clamp_min(1e-12).log()
        order = ce.argsort()
        start = {"easy": 0, "hard": len(x) - ipc}.get(difficulty, (len(x) - ipc) // 2)
        out.append(x[order[start:start + ipc]])
    return torch.cat(out)


@dataclass
class CVDDConfig(SRe2LConfig):
    init: Literal["noise", "real", "patches"] = "patches"
    patch_difficulty: Literal["easy", "medium", "hard"] = "medium"
    patch_candidates: int = 5        # real candidates drawn per kept image (init: patches)
    committee: list[MemberConfig] = field(default_factory=_default_committee)
    members_per_step: int = 2        # members drawn per recovery step (0 = all)
    vote_temperature: float = 0.1    # tau of the prior-performance weights softmax(acc / tau)
    seed: int = 0                    # member m trains with seed + m
    member_cache: str = ""           # keep members trained here in this folder (reused by later runs)

    def __post_init__(self):
        super().__post_init__()
        if not self.committee:
            raise ValueError("committee must list at least one member")
        if self.members_per_step < 0 or self.members_per_step > len(self.committee):
            raise ValueError(f"members_per_step must be in [0, {len(self.committee)}] (0 = all), "
                             f"got {self.members_per_step}")
        if self.patch_candidates < 1:
            raise ValueError(f"patch_candidates must be >= 1, got {self.patch_candidates}")
        if not self.vote_temperature > 0:
            raise ValueError(f"vote_temperature must be > 0, got {self.vote_temperature}")


@METHODS.register("cvdd")
class CVDD(SRe2L):
    """CV-DD: recovery from a committee of BN networks weighted by prior performance, voted soft labels."""

    Config = CVDDConfig
    name = "cvdd"
    catalog_ids = ("D3",)
    paper = "Dataset Distillation via Committee Voting"
    arxiv = "2501.07575"

    def __init__(self, cfg: CVDDConfig, data, members: list[nn.Module] | None = None,
                 accs: list[float] | None = None):
        Method.__init__(self, cfg)
        self._setup_images(cfg, data)
        if members is None:
            trained = [squeeze_member(m, data, cfg.seed + i, f"method.committee[{i}]", cfg.member_cache)
                       for i, m in enumerate(cfg.committee)]
            members, accs = [m for m, _ in trained], [a for _, a in trained]
        for i, m in enumerate(members):
            require_bn(m, f"method.committee[{i}].model")
        if accs is None or len(accs) != len(members):
            raise ConfigError("method.committee: one prior accuracy per member is needed")
        self.teacher = nn.ModuleList([Teacher(m) for m in members])   # "teacher.*": frozen, not checkpointed
        self.hooks = [BNStatistics(t.model) for t in self.teacher]
        self.register_buffer("prior", torch.tensor(accs, dtype=torch.float32))
        if cfg.init == "patches":    # (the base class started from noise; replace it before any step)
            x = select_patches(self.real, [t.model for t in self.teacher], self.weights(), self.num_classes,
                               cfg.ipc, cfg.patch_candidates, cfg.patch_difficulty)
            self.images.data.copy_(x.to(self.images.dtype))

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, ctx.data)

    def weights(self) -> torch.Tensor:
        return vote_weights(self.prior, self.cfg.vote_temperature)

    def loss(self, batch, step):
        n = len(self.teacher)
        k = self.cfg.members_per_step or n
        chosen = torch.randperm(n)[:k].sort().values.tolist()
        w = vote_weights(self.prior[chosen].cpu(), self.cfg.vote_temperature).tolist()
        order = ipc_major(self.num_classes, self.cfg.ipc).to(self.images.device)
        x, lo = self.augment(self.images[order], step)
        y = self.labels[order]
        total, ce_sum, bn_sum = 0.0, 0.0, 0.0
        for wm, m in zip(w, chosen):
            loss, ce, bn = recovery_loss(self.teacher[m].model, self.hooks[m], x, y, self.cfg.ipc, self.cfg.r_bn,
                                         self.cfg.first_bn_weight)
            total = total + wm * loss
            ce_sum, bn_sum = ce_sum + wm * ce.detach(), bn_sum + wm * bn.detach()
        return {"images": total, "log/ce": ce_sum, "log/bn": bn_sum, "log/crop_scale_min": torch.tensor(lo)}

    def label_models(self):
        return [t.model for t in self.teacher], self.weights()

    def export(self):
        out = super().export()
        if self.cfg.relabel:
            out.meta["labels"] = (f"one voted soft label per image: sum_m softmax(acc/{self.cfg.vote_temperature:g})_m "
                                  f"softmax(f_m(x) / {self.cfg.temperature:g})")
            out.meta["committee_prior_acc"] = [round(float(a), 4) for a in self.prior]
        return out


__all__ = ["CVDD", "CVDDConfig", "MemberConfig", "member_cache_file", "squeeze_member", "committee_vote", "vote_weights",
           "select_patches"]
