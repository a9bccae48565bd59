"""The transfer-learning protocol for pre-training sets (version ``transfer-v1``; KRR-ST, catalog D9).

A self-supervised distilled set (images + regression targets, e.g. from ``krr_st``) is judged by
how well a network *pre-trained* on it transfers to another, labelled task (Lee et al., arXiv
2310.06511, Sec. 4):

1. **pre-train** a fresh network (default ConvNet-3, width 32, instance norm) on the set by
   regression: ``MSE(g(A(x)), y)`` with ``g`` = backbone + linear head to R^d, SGD (lr 0.1,
   momentum 0.9, weight decay 1e-3 - the paper's), batches of 256, ``pretrain_epochs`` epochs,
   DSA augmentation ``A`` of every batch (``pretrain_dsa``; the paper: none). The head is dropped.
   Sources that are not a set: ``None`` = no pre-training (the fresh random network), or a given
   backbone (``nn.Module`` with ``embed``, e.g. the SSL teacher itself, as a reference);
2. on the target task, from that backbone:

   * ``finetune``: a new linear head, every weight trained with cross-entropy, SGD (momentum 0.9,
     weight decay 5e-4), lr x0.1 after half the epochs, batches of 64, DSA ``finetune_dsa``;
     (epochs, lr) chosen from ``finetune_epochs`` x ``finetune_lrs``;
   * ``linear``: a linear probe - multinomial logistic regression on the frozen, standardised
     features (full-batch L-BFGS, ``linear_steps`` iterations), its L2 weight chosen from
     ``linear_wds``;

3. every choice is made on the target task's **validation** split (mean over the first
   ``select_seeds`` seeds); then ``seeds`` networks are trained with the chosen settings and the
   **test** split is read once, at the very end. Report mean +- std over seeds.

Every read of a split goes through :func:`accuracy` (tests check that the test split is read only
after all choices). :func:`resize_task` builds e.g. the scikit-learn digits at 28x28 (bilinear
upsampling, then the source's pixel normalisation) as a target for Fashion-MNIST sources.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import ArrayData, DataBundle
from ..data.dsa import DEFAULT_STRATEGY, DSA, parse_strategy

PROTOCOL = "transfer-v1"
MODES = ("finetune", "linear")


def _default_model() -> dict:
    return {"name": "convnet", "width": 32, "depth": 3, "norm": "instance", "pooling": "avg", "first_padding": 3}


@dataclass
class TransferConfig:
    model: dict = field(default_factory=_default_model)
    # --- pre-training on (images, targets)
    pretrain_epochs: int = 300
    pretrain_lr: float = 0.1
    pretrain_momentum: float = 0.9
    pretrain_weight_decay: float = 1e-3
    pretrain_batch_size: int = 256
    pretrain_dsa: str = DEFAULT_STRATEGY
    # --- the target task
    modes: list[str] = field(default_factory=lambda: list(MODES))
    finetune_epochs: list[int] = field(default_factory=lambda: [15, 40])
    finetune_lrs: list[float] = field(default_factory=lambda: [0.01, 0.03])
    finetune_batch_size: int = 64
    finetune_momentum: float = 0.9
    finetune_weight_decay: float = 5e-4
    finetune_dsa: str = "crop_scale_rotate"
    linear_wds: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2])
    linear_steps: int = 200
    # --- seeds and machine
    seeds: int = 3
    seed: int = 0                 # seeds used: seed, seed+1, ...
    select_seeds: int = 2         # the first n seeds choose the settings on the validation split
    threads: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.pretrain_epochs < 0 or self.seeds < 1 or not 1 <= self.select_seeds <= self.seeds:
            raise ValueError("need pretrain_epochs >= 0, seeds >= 1 and 1 <= select_seeds <= seeds")
        if not self.modes or any(m not in MODES for m in self.modes):
            raise ValueError(f"modes must be a non-empty list of {MODES}, got {self.modes}")
        if not self.finetune_epochs or min(self.finetune_epochs) < 1 or not self.finetune_lrs \
                or min(self.finetune_lrs) <= 0:
            raise ValueError("finetune_epochs must be >= 1 and finetune_lrs > 0 (non-empty lists)")
        if not self.linear_wds or min(self.linear_wds) < 0 or self.linear_steps < 1:
            raise ValueError("linear_wds must be >= 0 (non-empty) and linear_steps >= 1")
        if min(self.pretrain_batch_size, self.finetune_batch_size) < 1:
            raise ValueError("batch sizes must be >= 1")
        parse_strategy(self.pretrain_dsa)
        parse_strategy(self.finetune_dsa)


def _device(cfg: TransferConfig) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)


def embed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (net.embed(x) if hasattr(net, "embed") else net(x)).flatten(1)


class Classifier(nn.Module):
    """A backbone's representation (optionally standardised) followed by a linear head."""

    def __init__(self, backbone: nn.Module, head: nn.Linear, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.register_buffer("mean", mean if mean is not None else torch.zeros(head.in_features))
        self.register_buffer("std", std if std is not None else torch.ones(head.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((embed(self.backbone, x) - self.mean) / self.std)


# --- the one place a split is read -----------------------------------------------------------------
@torch.no_grad()
def accuracy(model: nn.Module, data: ArrayData, batch_size: int = 256) -> float:
    """Top-1 accuracy (%) of ``model`` on ``data`` in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(data), batch_size):
        pred = model(data.x[i:i + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == data.y[i:i + batch_size]).sum())
    return 100.0 * correct / max(1, len(data))


# --- step 1: pre-training --------------------------------------------------------------------------
def pretrain(images: torch.Tensor, targets: torch.Tensor, cfg: TransferConfig, seed: int) -> tuple[nn.Module, dict]:
    """A fresh ``cfg.model`` trained to regress ``targets`` from (augmented) ``images``; (network, stats)."""
    from ..models import build_model

    device = _device(cfg)
    torch.manual_seed(seed)
    net = build_model(cfg.model, tuple(images.shape[1:]), targets.shape[1], "transfer.model").to(device)
    x, y = images.detach().float().to(device), targets.detach().float().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.pretrain_lr, momentum=cfg.pretrain_momentum,
                          weight_decay=cfg.pretrain_weight_decay)
    dsa, g = DSA(cfg.pretrain_dsa), torch.Generator().manual_seed(seed)
    n, bs = len(x), min(cfg.pretrain_batch_size, len(x))
    losses, t0 = [], time.perf_counter()
    net.train()
    for _ in range(cfg.pretrain_epochs):
        perm, total = torch.randperm(n, generator=g), 0.0
        for i in range(0, n, bs):
            idx = perm[i:i + bs].to(device)
            xb = dsa(x[idx], int(torch.randint(2**31 - 1, (1,), generator=g))) if dsa else x[idx]
            loss = F.mse_loss(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
        if losses[-1] != losses[-1] or losses[-1] == float("inf"):
            raise FloatingPointError(f"pre-training diverged (loss {losses[-1]}); lower transfer.pretrain_lr")
    return net, {"mse_first": round(losses[0], 5) if losses else None, "mse_last": round(losses[-1], 5) if losses else None,
                 "s": round(time.perf_counter() - t0, 2)}


def initial_backbone(source, in_shape: tuple[int, ...], cfg: TransferConfig, seed: int) -> tuple[nn.Module, dict]:
    """The network a target task starts from: pre-trained on ``source`` (a set with targets or
    ``(images, targets)``), ``source`` itself (an ``nn.Module``), or a fresh one (``None``)."""
    from ..models import build_model

    if source is None:
        torch.manual_seed(seed)
        return build_model(cfg.model, in_shape, 1, "transfer.model").to(_device(cfg)), {}
    if isinstance(source, nn.Module):
        return copy.deepcopy(source).to(_device(cfg)), {}
    images, targets = (source.images, source.targets) if hasattr(source, "images") else source
    if targets is None:
        raise ValueError("the transfer protocol pre-trains on regression targets; this set has none")
    return pretrain(images, targets, cfg, seed)


# --- step 2: the target task -----------------------------------------------------------------------
@torch.no_grad()
def _features(backbone: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    backbone.eval()
    device = next(backbone.parameters()).device
    return torch.cat([embed(backbone, x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)])


def feature_dim(backbone: nn.Module, in_shape: tuple[int, ...]) -> int:
    device = next(backbone.parameters()).device
    return _features(backbone, torch.zeros(2, *in_shape, device=device)).shape[1]


def finetune(backbone: nn.Module, train: ArrayData, num_classes: int, epochs: int, lr: float, cfg: TransferConfig,
             seed: int) -> Classifier:
    """A copy of ``backbone`` with a new linear head, every weight trained with cross-entropy."""
    device = next(backbone.parameters()).device
    torch.manual_seed(seed)
    net = Classifier(copy.deepcopy(backbone), nn.Linear(feature_dim(backbone, tuple(train.x.shape[1:])), num_classes)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=cfg.finetune_momentum, weight_decay=cfg.finetune_weight_decay)
    dsa, g = DSA(cfg.finetune_dsa), torch.Generator().manual_seed(seed)
    x, y = train.x.to(device), train.y.to(device)
    n, bs = len(x), min(cfg.finetune_batch_size, len(x))
    net.train()
    for epoch in range(epochs):
        if epoch == epochs // 2:
            for pg in opt.param_groups:
                pg["lr"] = lr * 0.1
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            idx = perm[i:i + bs].to(device)
            xb = dsa(x[idx], int(torch.randint(2**31 - 1, (1,), generator=g))) if dsa else x[idx]
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def linear_probe(backbone: nn.Module, train: ArrayData, num_classes: int, wd: float, cfg: TransferConfig,
                 seed: int) -> Classifier:
    """Multinomial logistic regression (L2 weight ``wd``) on the frozen backbone's standardised features."""
    f = _features(backbone, train.x).float()
    mean, std = f.mean(0), f.std(0).clamp_min(1e-6)
    z, y = (f - mean) / std, train.y.to(f.device)
    torch.manual_seed(seed)
    head = nn.Linear(f.shape[1], num_classes).to(f.device)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=cfg.linear_steps, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(z), y) + 0.5 * wd * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    frozen = copy.deepcopy(backbone).requires_grad_(False)
    return Classifier(frozen, head, mean, std).eval()


def _candidates(cfg: TransferConfig, mode: str) -> list[dict]:
    if mode == "finetune":   # cheapest first: ties go to fewer epochs, then the smaller lr
        return [{"epochs": e, "lr": lr} for e in sorted(cfg.finetune_epochs) for lr in sorted(cfg.finetune_lrs)]
    return [{"wd": wd} for wd in sorted(cfg.linear_wds, reverse=True)]   # ties go to the stronger L2


def _train(mode: str, backbone: nn.Module, task: DataBundle, cand: dict, cfg: TransferConfig, seed: int) -> Classifier:
    if mode == "finetune":
        return finetune(backbone, task.train, task.num_classes, cand["epochs"], cand["lr"], cfg, seed)
    return linear_probe(backbone, task.train, task.num_classes, cand["wd"], cfg, seed)


def _stat(values: list[float]) -> dict:
    from ..report.results import stat

    st = stat(values)
    return {"mean": round(st["mean"], 3), "std": round(st["std"], 3), "n": st["n"], "values": [round(v, 3) for v in values]}


def initial_backbones(source, in_shape: tuple[int, ...], cfg: TransferConfig,
                      progress: bool = False) -> tuple[list[nn.Module], list[dict]]:
    """One :func:`initial_backbone` per seed (seeds ``cfg.seed ...``): reuse them for several tasks."""
    backbones, pre = [], []
    for s in range(cfg.seed, cfg.seed + cfg.seeds):
        net, stats = initial_backbone(source, in_shape, cfg, s)
        backbones.append(net)
        pre.append(stats)
        if stats and progress:
            print(f"  pretrain seed {s}: mse {stats['mse_first']} -> {stats['mse_last']} ({stats['s']} s)", flush=True)
    return backbones, pre


def evaluate_transfer(source, task: DataBundle, cfg: TransferConfig | None = None, test: bool = True,
                      progress: bool = False, pretrained: tuple[list[nn.Module], list[dict]] | None = None
                      ) -> dict[str, Any]:
    """Pre-train on ``source`` (see :func:`initial_backbone`), transfer to ``task``; per mode: the
    settings chosen on ``task.val``, val and (if ``test``) test accuracy over ``cfg.seeds`` seeds.
    ``pretrained``: the output of :func:`initial_backbones` for ``source`` (then ``source`` is unused;
    the backbones are copied, never changed)."""
    cfg = cfg or TransferConfig()
    if task.val is None:
        raise ValueError("the transfer protocol chooses its settings on the target task's validation split; it has none")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    log = (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)  # noqa: E731
    backbones, pre = pretrained if pretrained is not None else initial_backbones(source, tuple(task.in_shape), cfg,
                                                                                  progress)
    if len(backbones) != len(seeds):
        raise ValueError(f"{len(backbones)} pre-trained backbones for {len(seeds)} seeds")
    out: dict[str, Any] = {"protocol": PROTOCOL, "settings": asdict(cfg), "task": task.name,
                           "task_rows": {"train": len(task.train), "val": len(task.val),
                                         "test": len(task.test) if task.test is not None else 0},
                           "pretrain": pre if any(pre) else None}
    finals: dict[str, list[Classifier]] = {}
    for mode in cfg.modes:
        # choose on the validation split only
        table, trained = [], {}
        for ci, cand in enumerate(_candidates(cfg, mode)):
            vals = []
            for k in range(cfg.select_seeds):
                model = _train(mode, backbones[k], task, cand, cfg, seeds[k])
                trained[(ci, k)] = model
                vals.append(accuracy(model, task.val))
            table.append({**cand, "val_acc": round(sum(vals) / len(vals), 3)})
            log(f"  {mode} {cand}: val {table[-1]['val_acc']:.2f}")
        best = max(range(len(table)), key=lambda i: (table[i]["val_acc"], -i))
        chosen = {k: v for k, v in table[best].items() if k != "val_acc"}
        # the chosen setting for every seed (reusing the selection runs)
        models = [trained[(best, k)] if (best, k) in trained else _train(mode, backbones[k], task, chosen, cfg, seeds[k])
                  for k in range(len(seeds))]
        finals[mode] = models
        out[mode] = {"chosen": chosen, "table": table, "val_acc": _stat([accuracy(m, task.val) for m in models])}
    if test and task.test is not None:      # read once, after every choice was made
        for mode, models in finals.items():
            out[mode]["test_acc"] = _stat([accuracy(m, task.test) for m in models])
    out["wall_clock_s"] = round(time.perf_counter() - t0, 2)
    return out


# --- target tasks ----------------------------------------------------------------------------------
def resize_task(bundle: DataBundle, size: int, mean: float, std: float, name: str | None = None) -> DataBundle:
    """Every split of ``bundle`` resized to ``size`` x ``size`` (bilinear) and renormalised to (mean, std).

    Pixels are first mapped back to [0, 1] with ``bundle.normalization``; e.g. the 8x8 digits
    become 28x28 images normalised like Fashion-MNIST, a target task for a Fashion-MNIST source.
    """
    norm = bundle.normalization
    if not norm:
        raise ValueError(f"{bundle.name}: resizing needs the bundle's pixel normalisation")
    m0 = torch.tensor(norm["mean"]).view(1, -1, 1, 1)
    s0 = torch.tensor(norm["std"]).view(1, -1, 1, 1)

    def convert(d: ArrayData | None) -> ArrayData | None:
        if d is None:
            return None
        px = (d.x * s0 + m0).clamp(0, 1)
        px = F.interpolate(px, size=(size, size), mode="bilinear", align_corners=False)
        return ArrayData((px - mean) / std, d.y.clone(), d.index)

    c = bundle.train.x.shape[1]
    return DataBundle(name or f"{bundle.name}{size}", convert(bundle.train), convert(bundle.val), convert(bundle.test),
                      bundle.num_classes, convert(bundle.unlabeled), bundle.class_names,
                      {"mean": [mean] * c, "std": [std] * c}, bundle.info)


__all__ = ["PROTOCOL", "TransferConfig", "accuracy", "pretrain", "initial_backbone", "initial_backbones", "finetune", "linear_probe",
           "evaluate_transfer", "resize_task", "Classifier"]
