"""The dataset-distillation evaluation protocol (version ``dd-v1``).

Every synthetic set, whatever made it, is judged the same way:

1. build a fresh network (default ConvNet-3: width 128, instance norm, ReLU, average pooling);
2. train it on the synthetic set only: SGD (momentum 0.9, weight decay 5e-4), lr 0.01 multiplied
   by 0.1 after half of the epochs, batches of 256 (the whole set when smaller), cross-entropy
   (soft cross-entropy for soft labels), DSA augmentation of every batch with a fresh seed;
3. measure accuracy on the validation split (carved from the training set) and on the real
   test set, once, at the end - no early stopping, no choice made on the test set;
4. repeat for K seeds; report mean +- std.

**Online labels.** A set whose labels are generated rather than stored (``syn.online``, an
:class:`~potstill.data.synthetic_set.OnlineLabels` such as HeLlO's projector, or a teacher that
relabels every augmentation as SRe2L/FKD do) is trained the same way, except that the target of
every batch is ``online(aug(x))`` - the generator applied to the very augmented batch the network
sees - with soft cross-entropy. The result then records how many labels were generated per run
(epochs x N) and what storing them would cost (epochs x N x K float32).

The number of epochs and the learning rate are the protocol's two knobs. They are chosen with
:func:`select_protocol` on the *validation* split and then frozen in the recipe / benchmark;
every result records the protocol version and its settings. Cross-architecture evaluation is
the same loop with another ``model``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from ..data import ArrayData, DataBundle
from ..data.dsa import DEFAULT_STRATEGY, DSA

PROTOCOL = "dd-v1"


def _default_model() -> dict:
    return {"name": "convnet", "width": 128, "depth": 3, "norm": "instance", "pooling": "avg",
            "first_padding": 3}


@dataclass
class SynEvalConfig:
    model: dict = field(default_factory=_default_model)
    epochs: int = 1000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_at: float = 0.5          # lr x0.1 after this fraction of the epochs
    batch_size: int = 256
    dsa: str = DEFAULT_STRATEGY    # "none" to train without augmentation
    seeds: int = 3
    seed: int = 0                  # seeds used: seed, seed+1, ...
    threads: int = 0               # 0 = leave torch's setting alone
    device: str = "auto"           # auto = the first GPU if there is one, else cpu

    def __post_init__(self):
        if self.epochs < 1 or self.seeds < 1 or self.batch_size < 1:
            raise ValueError("epochs, seeds and batch_size must be >= 1")
        if not self.lr > 0:
            raise ValueError("lr must be > 0")


def _soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


@torch.no_grad()
def accuracy(net: torch.nn.Module, data: ArrayData, batch_size: int = 128) -> float:
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    for i in range(0, len(data), batch_size):
        pred = net(data.x[i:i + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == data.y[i:i + batch_size]).sum())
    return 100.0 * correct / max(1, len(data))


def train_on_synthetic(images: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: SynEvalConfig,
                       seed: int, label_fn=None) -> tuple[torch.nn.Module, dict]:
    """One network trained from scratch on (images, labels) under the protocol.

    ``label_fn`` (online labels): a callable mapping each augmented batch to (B, K) probabilities,
    used as the batch's soft target instead of ``labels`` (it runs under ``no_grad``)."""
    from ..models import build_model

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    torch.manual_seed(seed)
    net = build_model(cfg.model, tuple(images.shape[1:]), num_classes, "eval.model").to(device)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    dsa = DSA(cfg.dsa)
    x, y = images.detach().to(device), labels.detach().to(device)
    soft = y.dim() == 2 or label_fn is not None
    n, bs = len(x), min(cfg.batch_size, len(x))
    g = torch.Generator().manual_seed(seed)
    decay_epoch = int(cfg.epochs * cfg.decay_at)
    seen, t0 = 0, time.perf_counter()
    net.train()
    for epoch in range(cfg.epochs):
        if epoch == decay_epoch:
            for pg in opt.param_groups:
                pg["lr"] = cfg.lr * 0.1
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            xb = x[idx]
            if dsa:
                xb = dsa(xb, int(torch.randint(2**31 - 1, (1,), generator=g)))
            if label_fn is not None:
                with torch.no_grad():
                    target = label_fn(xb).float()
            else:
                target = y[idx]
            out = net(xb)
            loss = _soft_cross_entropy(out, target) if soft else F.cross_entropy(out, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
    wall = time.perf_counter() - t0
    stats = {"train_s": wall, "images_per_s": seen / max(wall, 1e-9)}
    if label_fn is not None:
        stats["labels_generated"] = seen
    return net, stats


def _stat(values: list[float]) -> dict:
    """The results schema's {mean, std, n} (sample std), rounded, plus the per-seed values."""
    from ..report.results import stat

    st = stat(values)
    return {"mean": round(st["mean"], 3), "std": round(st["std"], 3), "n": st["n"], "values": [round(v, 3) for v in values]}


def evaluate_synthetic(syn, bundle: DataBundle, cfg: SynEvalConfig | None = None, test: bool = True,
                       progress: bool = False, label_fn=None) -> dict[str, Any]:
    """Train ``cfg.seeds`` fresh networks on ``syn`` (a SyntheticSet or (images, labels)); report
    validation and (if ``test``) test accuracy, mean +- std, with the protocol's settings.

    Labels are generated online per augmented batch by ``label_fn`` if given, else by the set's
    ``online`` labels if it has them."""
    from ..core.cpu import tune_allocator

    cfg = cfg or SynEvalConfig()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    tune_allocator()                 # speed only (glibc malloc); a no-op elsewhere
    images, labels = (syn.images, syn.labels) if hasattr(syn, "images") else syn
    if label_fn is None:
        label_fn = getattr(syn, "online", None)
    if isinstance(label_fn, torch.nn.Module):
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
        label_fn.to(dev).eval()
    val, tst, run_stats = [], [], []
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    it = seeds
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(seeds, desc=f"eval {cfg.model.get('name')}", leave=False)
    t0 = time.perf_counter()
    for s in it:
        net, stats = train_on_synthetic(images, labels, bundle.num_classes, cfg, s, label_fn)
        run_stats.append(stats)
        if bundle.val is not None:
            val.append(accuracy(net, bundle.val))
        if test and bundle.test is not None:
            tst.append(accuracy(net, bundle.test))
    out: dict[str, Any] = {"protocol": PROTOCOL, "settings": asdict(cfg), "images": len(images),
                           "label_kind": "online" if label_fn is not None else "soft" if labels.dim() == 2 else "hard",
                           "eval_images_per_s": round(sum(r["images_per_s"] for r in run_stats) / len(run_stats), 1),
                           "wall_clock_s": round(time.perf_counter() - t0, 2)}
    if label_fn is not None:
        generated = run_stats[0]["labels_generated"]
        out["online_labels"] = {"kind": getattr(label_fn, "kind", type(label_fn).__name__),
                                "shipped_bytes": label_fn.label_bytes() if hasattr(label_fn, "label_bytes") else None,
                                "labels_generated_per_run": generated,
                                "bytes_if_stored": generated * bundle.num_classes * 4}
        if isinstance(label_fn, torch.nn.Module):
            label_fn.cpu()
    if val:
        out["val_acc"] = _stat(val)
    if tst:
        out["test_acc"] = _stat(tst)
    return out


def select_protocol(syn, bundle: DataBundle, cfg: SynEvalConfig, epochs: list[int], lrs: list[float],
                    seeds: int = 2, tolerance: float = 0.3) -> tuple[SynEvalConfig, list[dict]]:
    """Pick (epochs, lr) by validation accuracy only (the test split is never touched).

    Among the settings within ``tolerance`` points of the best validation mean, the cheapest
    (fewest epochs) wins. Returns the chosen config and the table of all candidates.
    """
    if bundle.val is None:
        raise ValueError("select_protocol needs a validation split")
    table = []
    for e in epochs:
        for lr in lrs:
            r = evaluate_synthetic(syn, bundle, replace(cfg, epochs=e, lr=lr, seeds=seeds), test=False)
            table.append({"epochs": e, "lr": lr, "val_acc": r["val_acc"]["mean"], "wall_clock_s": r["wall_clock_s"]})
    best = max(t["val_acc"] for t in table)
    ok = [t for t in table if t["val_acc"] >= best - tolerance]
    pick = min(ok, key=lambda t: (t["epochs"], -t["val_acc"]))
    return replace(cfg, epochs=pick["epochs"], lr=pick["lr"]), table


__all__ = ["PROTOCOL", "SynEvalConfig", "train_on_synthetic", "evaluate_synthetic", "select_protocol", "accuracy"]
