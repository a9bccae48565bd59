"""Expert trajectories for trajectory matching: train N networks on real data, keep every epoch.

As in MTT (Cazenavette et al., arXiv 2203.11932, sec. 3.1): each expert is a freshly initialised
copy of the distillation network trained with plain SGD (lr 0.01, no momentum, no weight decay)
on the real training split with DSA augmentation; its flattened parameters are stored at
initialisation and after every epoch (:mod:`potstill.data.trajectories`). Two variants of the
seed papers change only how the experts are trained:

* **FTD** (Du et al., arXiv 2211.11004, sec. 4.1): sharpness-aware minimisation (Foret et al.,
  arXiv 2010.01412) for *flat* trajectories (``sam_rho > 0``): at w, g = grad L(w);
  e = rho g / ||g|| (``sam_adaptive``: e = rho w^2 g / ||w g||, as FTD's code); the update
  direction is g_p = grad L(w + e), minus ``gsam_alpha`` times the part of g orthogonal to g_p
  (the surrogate-gap term of GSAM, Zhuang et al., arXiv 2203.08065, which FTD's code uses;
  0 = plain SAM).
* **AST / smooth experts** (Shen et al., arXiv 2310.10541, sec. 3.2) slow the rate of parameter
  change so the student can follow: the "clipping loss" scales the loss by
  ``clip_start + clip_step * e`` in the first ``clip_epochs`` epochs (0.5, 0.55, ..., 0.95 in the
  authors' code), and a gradient penalty on the *input*,
  ``grad_penalty * mean((||d sum(f(x)) / dx||_channels - 1)^2)`` on the un-augmented batch,
  is added (both switchable: 0 = off).

Generation is resumable: a finished expert is written atomically before the next starts, and
the unfinished one's state (weights, optimizer, sampler, snapshots) is saved after each epoch in
``partial_expert.safetensors``, so a killed run loses less than one epoch and continues bit for
bit. It shows a progress bar. Buffers are cached by their settings
(:func:`expert_buffer`) so MTT, FTD, DATM and AST runs with the same experts share one.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...core.config import ConfigError
from ...data import DataBundle, DataError
from ...data.dsa import DEFAULT_STRATEGY, DSA, parse_strategy
from ...data.trajectories import ZCA, ExpertBuffer


@dataclass
class ExpertConfig:
    num: int = 5                    # experts (MTT: 100)
    epochs: int = 20                # epochs each (MTT: 50)
    lr: float = 0.01                # MTT's lr_teacher
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    dsa: str = DEFAULT_STRATEGY     # augmentation of the real batches ("none": off)
    zca: bool = False               # ZCA-whiten the data (regularisation 0.1), recorded in the buffer
    decay_at: float = 0.0           # > 0: lr x ``decay`` after this fraction of the epochs
    decay: float = 0.1
    sam_rho: float = 0.0            # FTD: > 0 trains with sharpness-aware minimisation of this radius
    sam_adaptive: bool = False      # FTD's code: ASAM-style perturbation scaled by |w|
    gsam_alpha: float = 0.0         # FTD's code: GSAM surrogate-gap weight (0.4 there)
    clip_epochs: int = 0            # AST: loss scaled by clip_start + clip_step * epoch for these epochs
    clip_start: float = 0.5
    clip_step: float = 0.05
    grad_penalty: float = 0.0       # AST: weight of the input-gradient penalty (2 in AST's code)
    seed: int = 0                   # expert i is initialised and shuffled from seed + i
    device: str = "auto"

    def __post_init__(self):
        if self.num < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("experts.num, experts.epochs and experts.batch_size must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"experts.lr must be > 0, got {self.lr}")
        if self.sam_rho < 0 or self.clip_epochs < 0 or self.grad_penalty < 0 or self.gsam_alpha < 0:
            raise ValueError("experts.sam_rho, gsam_alpha, clip_epochs and grad_penalty must be >= 0")
        if not 0 <= self.decay_at < 1:
            raise ValueError(f"experts.decay_at must be in [0, 1), got {self.decay_at}")
        parse_strategy(self.dsa)

    def training_meta(self) -> dict:
        """What makes two buffers interchangeable (``num`` and ``device`` do not)."""
        return {k: v for k, v in asdict(self).items() if k not in ("num", "device")}


def flatten(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def layout(net: torch.nn.Module) -> list[list]:
    return [[n, list(p.shape)] for n, p in net.named_parameters()]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def expert_objective(net, x, y, cfg: ExpertConfig, epoch: int, x_clean: torch.Tensor | None = None) -> torch.Tensor:
    """The loss an expert descends: CE (AST: scaled early on) plus AST's input-gradient penalty."""
    loss = F.cross_entropy(net(x), y)
    if epoch < cfg.clip_epochs:
        loss = loss * (cfg.clip_start + cfg.clip_step * epoch)
    if cfg.grad_penalty > 0:
        xc = (x if x_clean is None else x_clean).detach().requires_grad_(True)
        (gx,) = torch.autograd.grad(net(xc).sum(), xc, create_graph=True)
        loss = loss + cfg.grad_penalty * (gx.norm(dim=1) - 1).pow(2).mean()
    return loss


def _sam_step(net, opt, cfg: ExpertConfig, objective) -> torch.Tensor:
    """One (G)SAM update: the gradient at the worst-case neighbour w + e moves w."""
    params = [p for p in net.parameters()]
    loss = objective()
    grads = torch.autograd.grad(loss, params)
    if cfg.sam_adaptive:
        scaled = [p.detach().abs() * g for p, g in zip(params, grads)]
        norm = torch.sqrt(sum(s.pow(2).sum() for s in scaled)) + 1e-12
        eps = [cfg.sam_rho * p.detach().pow(2) * g / norm for p, g in zip(params, grads)]
    else:
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads)) + 1e-12
        eps = [cfg.sam_rho * g / norm for g in grads]
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.add_(e)
    grads_p = torch.autograd.grad(objective(), params)
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.sub_(e)
        if cfg.gsam_alpha > 0:   # remove alpha x (g minus its projection on g_p)
            dot = sum((a * b).sum() for a, b in zip(grads, grads_p))
            nn_p = sum(b.pow(2).sum() for b in grads_p) + 1e-12
            grads_p = [b - cfg.gsam_alpha * (a - dot / nn_p * b) for a, b in zip(grads, grads_p)]
        for p, g in zip(params, grads_p):
            p.grad = g
    opt.step()
    return loss.detach()


@torch.no_grad()
def _accuracy(net, x, y, batch: int = 1024) -> float:
    net.eval()
    correct = sum(int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    net.train()
    return correct / max(len(x), 1)


def train_experts(cfg: ExpertConfig, net_spec: dict, data: DataBundle, root: str | Path,
                  progress: bool = True) -> ExpertBuffer:
    """Train (or finish training) ``cfg.num`` experts into the buffer folder ``root``."""
    from tqdm import tqdm

    from ...models import build_model

    dev = _device(cfg.device)
    x_train, y_train = data.train.x, data.train.y
    zca = ZCA.fit(x_train) if cfg.zca else None
    if zca is not None:
        x_train = zca.apply(x_train)
    probe = build_model(net_spec, tuple(data.in_shape), data.num_classes, "method.net")
    meta = {"net": net_spec, "data": {"name": data.name, "normalization": data.normalization,
                                      "in_shape": list(data.in_shape), "num_classes": data.num_classes,
                                      "train_size": len(x_train)},
            "training": cfg.training_meta(), "epochs": cfg.epochs,
            "num_params": sum(p.numel() for p in probe.parameters()), "layout": layout(probe)}
    buf = ExpertBuffer.start(root, meta, zca)
    x_train, y_train = x_train.to(dev), y_train.to(dev)
    x_val = data.val.x if data.val is not None else None
    if x_val is not None and zca is not None:
        x_val = zca.apply(x_val)
    dsa = DSA(cfg.dsa)
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    for i in range(len(buf), cfg.num):
        g = torch.Generator().manual_seed(cfg.seed + i)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + i)
            net = build_model(net_spec, tuple(data.in_shape), data.num_classes, "method.net").to(dev)
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        snaps = [flatten(net).cpu()]
        first, spent = _resume_partial(Path(root), i, net, opt, g, snaps)
        t0 = time.time() - spent                       # this expert's training seconds, across resumes
        bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=first * steps_per_epoch, desc=f"expert {i + 1}/{cfg.num}",
                   disable=None if progress else True, leave=False)
        for epoch in range(first, cfg.epochs):
            if cfg.decay_at > 0 and epoch == int(cfg.decay_at * cfg.epochs):
                for pg in opt.param_groups:
                    pg["lr"] = cfg.lr * cfg.decay
            perm = torch.randperm(len(x_train), generator=g).to(dev)
            for b in range(steps_per_epoch):
                idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                clean = x_train[idx]
                x = dsa(clean, int(torch.randint(2**31 - 1, (1,), generator=g))) if dsa else clean
                objective = lambda: expert_objective(net, x, y_train[idx], cfg, epoch, clean)  # noqa: E731
                if cfg.sam_rho > 0:
                    loss = _sam_step(net, opt, cfg, objective)
                else:
                    loss = objective()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"expert {i}: loss became {float(loss)}; lower experts.lr")
                bar.update(1)
            snaps.append(flatten(net).cpu())
            info = {"train_loss_last": float(loss.detach()), "train_s": round(time.time() - t0, 3)}
            if epoch + 1 < cfg.epochs:
                _save_partial(Path(root), i, epoch + 1, net, opt, g, snaps, info)
        bar.close()
        if x_val is not None:
            info["val_acc"] = _accuracy(net, x_val.to(dev), data.val.y.to(dev))
        buf.append(torch.stack(snaps), info)
        (Path(root) / PARTIAL).unlink(missing_ok=True)
    return buf


#: the unfinished expert's state after its last whole epoch, so a killed run loses < 1 epoch
PARTIAL = "partial_expert.safetensors"


def _save_partial(root: Path, expert: int, epochs_done: int, net, opt, g: torch.Generator, snaps: list, info: dict):
    from ...core.checkpoint import atomic_save_safetensors, flatten_optimizer

    opt_tensors, opt_meta = flatten_optimizer(opt, "opt")
    tensors = {**{f"net/{k}": v for k, v in net.state_dict().items()}, **opt_tensors,
               "snaps": torch.stack(snaps), "generator": g.get_state()}
    meta = {"expert": expert, "epochs_done": epochs_done, "optimizer": opt_meta, "info": info}
    atomic_save_safetensors(tensors, root / PARTIAL, metadata={"potstill": json.dumps(meta)})


def _resume_partial(root: Path, expert: int, net, opt, g: torch.Generator, snaps: list) -> tuple[int, float]:
    """Load the partial state of ``expert`` if the folder holds one: (epochs it had done, seconds spent)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ...core.checkpoint import unflatten_optimizer

    path = root / PARTIAL
    if not path.is_file():
        return 0, 0.0
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["potstill"])
        tensors = load_file(str(path))
    except Exception as e:  # safetensors and json raise their own types
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e}); delete it to restart this expert") from None
    if meta.get("expert") != expert:   # left over from another expert: stale, start this one afresh
        return 0, 0.0
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net/")})
    unflatten_optimizer(opt, "opt", tensors, meta["optimizer"])
    g.set_state(tensors["generator"])
    snaps[:] = list(tensors["snaps"].unbind(0))
    return int(meta["epochs_done"]), float(meta["info"].get("train_s", 0.0))


def buffer_key(cfg: ExpertConfig, net_spec: dict, data: DataBundle) -> str:
    blob = {"training": cfg.training_meta(), "net": net_spec, "data": data.name,
            "normalization": data.normalization, "train_size": len(data.train)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def expert_buffer(cfg: ExpertConfig, net_spec: dict, data: DataBundle, path: str = "",
                  progress: bool = True) -> ExpertBuffer:
    """The buffer at ``path`` (or in the cache, keyed by the settings), trained or finished on demand.

    A buffer made for another network, dataset or normalisation is refused with a clear error.
    """
    from ...demo import cache_root

    root = Path(path) if path else cache_root() / "experts" / f"{data.name}-{buffer_key(cfg, net_spec, data)}"
    if not path or not (root / "buffer.json").is_file():
        return train_experts(cfg, net_spec, data, root, progress)   # new, or finishes an interrupted one
    buf = ExpertBuffer.load(root, min_experts=1)   # a buffer the user named is used as it was made
    m, d = buf.meta, buf.meta.get("data", {})
    if m.get("net") != net_spec:
        raise ConfigError(f"method.buffer: {root} was made with network {m.get('net')}, not {net_spec}")
    if d.get("name") != data.name or list(d.get("in_shape", [])) != list(data.in_shape) \
            or d.get("normalization") != data.normalization:
        raise ConfigError(f"method.buffer: {root} was made on {d.get('name')} {d.get('in_shape')}, "
                          f"not {data.name} {list(data.in_shape)} with this normalisation")
    return buf

__all__ = ["ExpertConfig", "train_experts", "expert_buffer", "expert_objective", "flatten"]
