"""The one training loop every method runs through.

Per parameter group: its own optimizer, learning-rate schedule, update frequency and gradient
clipping. Each step the method returns one loss per group; each active group's loss is
backpropagated into that group's parameters only (``backward(inputs=...)``), gradients are
averaged across ``torchrun`` processes, then every active group steps.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import torch

from . import distributed as dist
from .callbacks import EMA, Callback, Checkpointer, Evaluator, Logger, Timer
from .checkpoint import atomic_write_text, flatten_optimizer, latest_checkpoint, load_checkpoint, save_checkpoint, unflatten_optimizer
from ..errors import TrainingError
from .config import ConfigError, from_dict, to_dict


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9                   # sgd
    nesterov: bool = False                  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam/adamw
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "step"] = "constant"
    warmup_steps: int = 0                   # linear warm-up from 0
    decay_at: float = 0.5                   # "step" schedule: lr x0.1 after this fraction of steps
    update_every: int = 1                   # step this group on every n-th trainer step
    grad_clip: float = 0.0                  # max global grad norm of the group (0 = off)

    def __post_init__(self):
        if self.lr < 0 or self.update_every < 1 or len(self.betas) != 2:
            raise ValueError("need lr >= 0, update_every >= 1, two betas")

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate for the update made at (0-based) trainer step ``step``; a pure function."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.schedule == "cosine":
            t = (step - self.warmup_steps) / max(1, total - self.warmup_steps)
            return self.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if self.schedule == "step":
            return self.lr * (0.1 if step >= self.decay_at * total else 1.0)
        return self.lr

    def make(self, params) -> torch.optim.Optimizer:
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
                                   weight_decay=self.weight_decay)
        cls = torch.optim.Adam if self.name == "adam" else torch.optim.AdamW
        return cls(params, lr=self.lr, betas=tuple(self.betas), weight_decay=self.weight_decay)


@dataclass
class TrainerConfig:
    steps: int = 1000
    batch_size: int = 128                    # global batch (split across torchrun processes)
    seed: int = 0
    # per parameter group; a group's fields override those of "default" (see `potstill list --config`)
    optim: dict[str, dict[str, Any]] = field(default_factory=lambda: {"default": {}})
    log_every: int = 50
    eval_every: int = 0                      # 0: evaluate on the validation split only at the end
    ckpt_every: int = 0                      # 0: checkpoint only at the end
    keep_checkpoints: int = 2
    ema_decay: float = 0.0                   # 0: no EMA; else evaluate/export the EMA weights
    device: str = "auto"                     # auto | cpu | cuda | cuda:N
    threads: int = 0                         # torch CPU threads (0: torch's default)
    progress: bool = True
    time_limit_s: float = 0.0                # > 0: stop stepping after this much training wall-clock, counted
                                             # across resumes (then checkpoint, export, evaluate)
    precision: str = "fp32"                  # fp32 | bf16 (autocast, CPU or GPU) | fp16 (autocast + loss scaling, GPU)

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("steps must be >= 0 and batch_size >= 1")
        if self.time_limit_s < 0:
            raise ConfigError(f"trainer.time_limit_s: must be >= 0 (0 = no limit), got {self.time_limit_s}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("ema_decay must be in [0, 1)")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"trainer.precision: {self.precision!r} is not one of fp32, bf16, fp16")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"trainer.device: {self.device!r} is not one of auto, cpu, cuda, cuda:N")
        default = from_dict(OptimConfig, self.optim.get("default") or {}, "trainer.optim.default")
        self.optim = {**self.optim, "default": to_dict(default)}
        self._optim = {g: from_dict(OptimConfig, {**self.optim["default"], **(raw or {})}, f"trainer.optim.{g}")
                       for g, raw in self.optim.items()}

    def group_optim(self, group: str) -> OptimConfig:
        return self._optim.get(group) or self._optim["default"]


def check_optim_groups(cfg: TrainerConfig, method) -> dict[str, list[torch.nn.Parameter]]:
    """The method's trainable groups; an optimizer section for a group it lacks is an error."""
    groups = {g: [p for p in ps if p.requires_grad] for g, ps in method.param_groups().items()}
    unknown = sorted(set(cfg.optim) - set(groups) - {"default"})
    if unknown:
        raise ConfigError(f"trainer.optim.{unknown[0]}: {type(method).__name__} has no parameter group "
                          f"{unknown[0]!r}; its groups: {', '.join(groups)} (or 'default')")
    for g, ps in groups.items():
        if not ps:
            raise ValueError(f"parameter group {g!r} of {type(method).__name__} is empty")
    return groups


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_batch(item: Any, device: torch.device) -> dict:
    if isinstance(item, dict):
        batch = item
    elif isinstance(item, (list, tuple)):
        batch = {"x": item[0], "y": item[1]} if len(item) > 1 else {"x": item[0]}
    else:
        batch = {"x": item}
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


class Trainer:
    def __init__(self, cfg: TrainerConfig, out: str | Path | None = None, callbacks: Iterable[Callback] = (),
                 desc: str = "train"):
        self.cfg, self.desc = cfg, desc
        self.out = Path(out) if out is not None else None
        self.extra_callbacks = list(callbacks)
        self.step = 0
        self.method = None
        self.groups: dict[str, list[torch.nn.Parameter]] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.elapsed = Timer()
        self.ema: EMA | None = None
        self.meta: dict = {}
        self.device: torch.device | None = None
        self.scaler = None                         # fp16 loss scaling
        self.last_checkpoint: Path | None = None

    # --- helpers used by callbacks ------------------------------------------------------------
    @contextlib.contextmanager
    def averaged(self):
        """Evaluate/export with the EMA weights when EMA is on."""
        with (self.ema.swap() if self.ema is not None else contextlib.nullcontext()):
            yield

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint (rank 0). Every process must call it: RNG states are gathered."""
        if self.out is None:
            return None
        rng = dist.gather_rng_states()  # collective: each process's CPU (and CUDA) generator state
        if not dist.is_main():
            return None
        tensors = {f"method/{k}": v for k, v in self.method.trainable_state().items()}
        meta = {"step": self.step, "elapsed_s": self.elapsed(), "optim": {}, "callbacks": {}, **self.meta}
        for g, opt in self.optimizers.items():
            t, m = flatten_optimizer(opt, f"optim/{g}")
            tensors.update(t)
            meta["optim"][g] = m
        for cb in self.callbacks:
            t, m = cb.state_dict()
            tensors.update({f"cb/{cb.name}/{k}": v for k, v in t.items()})
            meta["callbacks"][cb.name] = m
        for r, states in enumerate(rng):
            tensors.update({f"rng/{r}/{k}": v for k, v in states.items()})
        meta["world_size"] = len(rng)
        self.last_checkpoint = save_checkpoint(self.out / "checkpoints", self.step, tensors, meta, self.cfg.keep_checkpoints)
        return self.last_checkpoint

    def _restore(self, path: Path) -> None:
        tensors, meta = load_checkpoint(path)
        own = {k[len("method/"):]: v for k, v in tensors.items() if k.startswith("method/")}
        missing = set(self.method.trainable_state()) - set(own)
        if missing:
            raise ConfigError(f"checkpoint {path} does not match this method (missing {sorted(missing)[:5]})")
        self.method.load_state_dict(own, strict=False)
        for g, opt in self.optimizers.items():
            unflatten_optimizer(opt, f"optim/{g}", tensors, meta["optim"][g])
        for cb in self.callbacks:
            prefix = f"cb/{cb.name}/"
            cb.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                               meta["callbacks"].get(cb.name, {}))
        self.step = meta["step"]
        r = dist.rank()
        if meta.get("world_size") == dist.world_size() and f"rng/{r}/cpu" in tensors:
            torch.set_rng_state(tensors[f"rng/{r}/cpu"])
            if f"rng/{r}/cuda" in tensors and torch.cuda.is_available():
                torch.cuda.set_rng_state(tensors[f"rng/{r}/cuda"])
        else:  # resumed on another number of processes: fresh streams, still a function of (seed, step, rank)
            torch.manual_seed(self.cfg.seed * 7919 + r + 1_000_003 * self.step)
        self.elapsed = Timer(meta["elapsed_s"])

    # --- the loop -------------------------------------------------------------------------------
    def autocast(self):
        """The forward passes' precision (``trainer.precision``); fp32 is a no-op."""
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        kind = self.device.type if self.device is not None else "cpu"
        return torch.autocast(kind, dtype=torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16)

    def default_step(self, batch: dict, step: int) -> dict[str, float]:
        active = [g for g in self.groups if step % self.cfg.group_optim(g).update_every == 0]
        if not active:
            return {}
        with self.autocast():
            losses = self.method.loss(batch, step)
        missing = [g for g in active if g not in losses]
        if missing:
            raise KeyError(f"{type(self.method).__name__}.loss returned no loss for group(s) {missing}")
        check_finite({g: losses[g] for g in active}, step, self.last_checkpoint)   # before any weight moves
        for g in active:
            self.optimizers[g].zero_grad(set_to_none=True)
        scale = self.scaler.scale if self.scaler is not None else (lambda x: x)
        for i, g in enumerate(active):
            scale(losses[g]).backward(inputs=self.groups[g], retain_graph=i < len(active) - 1)
        logs = {}
        for g in active:
            cfg = self.cfg.group_optim(g)
            dist.all_reduce_grads(self.groups[g])
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizers[g])
            if cfg.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.groups[g], cfg.grad_clip)
                logs[f"grad_norm/{g}"] = float(norm)
            lr = cfg.lr_at(step, self.cfg.steps)
            for pg in self.optimizers[g].param_groups:
                pg["lr"] = lr
            if self.scaler is not None:
                self.scaler.step(self.optimizers[g])      # skips the step when fp16 gradients overflowed
            else:
                self.optimizers[g].step()
        if self.scaler is not None:
            self.scaler.update()
        logs.update({f"loss/{k}" if not k.startswith("log/") else k: float(v.detach()) for k, v in losses.items()})
        return logs

    def fit(self, method, train_data, val_data=None, test_data=None, resume: bool = False) -> dict:
        """Train ``method`` for ``cfg.steps`` steps; return final val/test metrics.

        ``train_data`` is an :class:`~potstill.data.ArrayData` (deterministic, resumable batches),
        any iterable of batches (``dict`` with ``x``/``y``, or ``(x, y)`` tuples), cycled, or
        ``None`` for methods that sample their own data (they get empty batches).
        """
        from ..data import ArrayData
        from ..data.loader import batches_from
        from .cpu import tune_allocator

        cfg = self.cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        device = self.device = dist.init(cfg.device)
        if device.type == "cpu":
            tune_allocator()
        if cfg.precision == "fp16":
            if device.type != "cuda":
                raise ConfigError("trainer.precision: fp16 needs a GPU (loss scaling); on CPU use bf16")
            self.scaler = torch.amp.GradScaler("cuda")
        self.method = method.to(device)
        self.groups = check_optim_groups(cfg, method)
        self.optimizers = {g: cfg.group_optim(g).make(ps) for g, ps in self.groups.items()}
        dist.broadcast_module(method)

        if self.out is not None and dist.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
        logger = Logger(cfg.log_every, self.out / "metrics.jsonl" if self.out else None, cfg.progress)
        self.ema = EMA(cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.evaluator = Evaluator(cfg.eval_every, val_data, logger)
        self.callbacks = [c for c in (self.ema, logger, self.evaluator) if c is not None]
        self.callbacks += [Checkpointer(cfg.ckpt_every, self.out), *self.extra_callbacks]

        self.step, self.elapsed = 0, Timer()
        ckpt = latest_checkpoint(self.out / "checkpoints") if (resume and self.out is not None) else None
        self.last_checkpoint = ckpt
        if ckpt is not None:
            self._restore(ckpt)
            if logger.path is not None and logger.path.exists() and dist.is_main():
                # keep what the checkpoint knows: train lines up to its step, val lines in its history
                import json

                evals = {h["step"] for h in self.evaluator.history}
                records = [json.loads(ln) for ln in logger.path.read_text().splitlines() if ln]
                keep = [r for r in records if (r["split"] == "train" and r["step"] <= self.step)
                        or (r["split"] == "val" and r["step"] in evals)]
                atomic_write_text(logger.path, "".join(json.dumps(r) + "\n" for r in keep))
        else:
            if resume and logger.path is not None and logger.path.exists() and dist.is_main():
                logger.path.unlink()  # killed before its first checkpoint: start the log over
            torch.manual_seed(cfg.seed * 7919 + dist.rank())
        for cb in self.callbacks:
            cb.on_fit_start(self)

        if train_data is None:  # the method draws its own data (e.g. dataset distillation)
            batches = itertools.repeat({})
        elif isinstance(train_data, ArrayData):
            batches = batches_from(train_data, cfg.batch_size, cfg.seed, self.step, dist.rank(), dist.world_size())
        elif dist.world_size() > 1:
            raise ValueError("under torchrun, pass the training data as tensors/ArrayData so each process takes its "
                             "share of the global batch (a DataLoader would give every process the same batches)")
        else:
            batches = _cycle(train_data)
        step_fn = method.train_step or self.default_step
        method.train()
        self.stopped = None
        while self.step < cfg.steps:
            if cfg.time_limit_s and self._out_of_time():
                self.stopped = "time_limit"
                break
            batch = _to_batch(next(batches), device)
            logs = step_fn(batch, self.step) if method.train_step is None else step_fn(batch, self.step, self)
            self.step += 1
            for cb in self.callbacks:
                cb.on_step_end(self, self.step, logs)
        for cb in self.callbacks:
            cb.on_fit_end(self)

        # checkpoint first: an error in the final evaluation must not cost the training
        if self.out is not None and (cfg.ckpt_every == 0 or self.step % cfg.ckpt_every):
            self.save_checkpoint()
        result: dict[str, Any] = {"steps": self.step}
        if self.stopped:
            result["stopped"] = f"{self.stopped} ({cfg.time_limit_s:g} s) after {self.step} of {cfg.steps} steps"
        if val_data is not None:
            result["val"] = self.evaluator.run(self, self.step)
        if test_data is not None:  # reported once, at the end; never used for any choice
            with self.averaged():
                method.eval()
                result["test"] = method.evaluate(test_data)
                method.train()
        result["val_history"] = self.evaluator.history
        result["wall_clock_s"] = round(self.elapsed(), 3)
        return result

    def _out_of_time(self) -> bool:
        """Past ``time_limit_s``? Under torchrun every process follows rank 0, so all stop at one step."""
        return dist.rank0_says(self.elapsed() >= self.cfg.time_limit_s)


def check_finite(losses: dict[str, torch.Tensor], step: int, last_checkpoint: Path | None = None) -> None:
    """Stop on a NaN/Inf loss, naming the parameter group and step, before it reaches any weight."""
    for g, v in losses.items():
        if not bool(torch.isfinite(v.detach()).all()):
            keep = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
            raise TrainingError(f"step {step}: the loss of parameter group '{g}' is {float(v.detach().float().mean())} "
                                f"(not finite); training stopped before updating any weights; {keep} "
                                "(lower the learning rate, clip gradients, or check the data)")


def _cycle(iterable):
    while True:
        empty = True
        for item in iterable:
            empty = False
            yield item
        if empty:
            raise ValueError("training data yielded no batches")
