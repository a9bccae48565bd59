"""Trainer callbacks: EMA, logging (JSONL + progress bar), evaluation, checkpointing.

A callback sees the trainer after every step. Callbacks with state (EMA, best metrics) give it
to checkpoints through ``state_dict``/``load_state_dict`` (tensors, json-able meta).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import torch

from ..errors import TrainingError
from . import distributed as dist


class Callback:
    name = "callback"

    def on_fit_start(self, trainer) -> None: ...
    def on_step_end(self, trainer, step: int, logs: dict[str, float]) -> None: ...
    def on_fit_end(self, trainer) -> None: ...

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        return {}, {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None: ...


class EMA(Callback):
    """Exponential moving average of every trainable parameter and floating-point buffer:
    θ_ema <- d·θ_ema + (1-d)·θ.

    ``swap()`` puts the averaged weights in place (for evaluation and export) and restores after.
    The decay warms up as min(d, (1+n)/(10+n)) so early averages are not dominated by init.
    """

    name = "ema"

    def __init__(self, decay: float):
        self.decay = decay
        self.params: list[torch.nn.Parameter] = []
        self.shadow: list[torch.Tensor] = []
        self.updates = 0

    def on_fit_start(self, trainer) -> None:
        # trainable parameters and floating-point buffers (e.g. BatchNorm running statistics)
        buffers = [b for n, b in trainer.method.named_buffers() if not n.startswith("teacher.") and b.is_floating_point()]
        self.params = [p for ps in trainer.groups.values() for p in ps] + buffers
        if not self.shadow:
            self.shadow = [p.detach().clone() for p in self.params]
        self.shadow = [s.to(p.device) for s, p in zip(self.shadow, self.params)]

    @torch.no_grad()
    def on_step_end(self, trainer, step, logs) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - d)
        self.updates += 1

    @contextlib.contextmanager
    def swap(self):
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)

    def state_dict(self):
        return {str(i): s for i, s in enumerate(self.shadow)}, {"updates": self.updates}

    def load_state_dict(self, tensors, meta):
        self.shadow = [tensors[str(i)].clone() for i in range(len(tensors))]
        self.updates = meta["updates"]


class Logger(Callback):
    """Mean of each logged value over ``every`` steps -> ``metrics.jsonl`` and the progress bar."""

    name = "logger"

    def __init__(self, every: int, path: Path | None, progress: bool):
        self.every, self.path, self.progress = max(1, every), path, progress
        self.sums: dict[str, float] = {}
        self.count = 0
        self.bar = None

    def on_fit_start(self, trainer) -> None:
        if self.progress and dist.is_main():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=trainer.cfg.steps, initial=trainer.step, desc=trainer.desc, dynamic_ncols=True)

    def write(self, record: dict) -> None:
        if self.path is not None and dist.is_main():
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def on_step_end(self, trainer, step, logs) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
        if step % self.every == 0 or step == trainer.cfg.steps:
            means = {k: v / self.count for k, v in self.sums.items()}
            bad = [k for k, v in means.items() if not math.isfinite(v)]
            self.write({"step": step, "split": "train", "time_s": round(trainer.elapsed(), 3), **means})
            if self.bar is not None:
                short = {k.split("/", 1)[-1]: f"{v:.4g}" for k, v in list(means.items())[:4]}
                self.bar.set_postfix(short, refresh=False)
            self.sums, self.count = {}, 0
            if bad:
                raise TrainingError(f"step {step}: non-finite {bad}; lower the learning rate or enable grad_clip")

    def on_fit_end(self, trainer) -> None:
        if self.bar is not None:
            self.bar.close()

    def state_dict(self):
        return {}, {"sums": self.sums, "count": self.count}

    def load_state_dict(self, tensors, meta):
        self.sums, self.count = dict(meta.get("sums", {})), meta.get("count", 0)


class Evaluator(Callback):
    """Evaluate on the validation split every ``every`` steps (never on the test split)."""

    name = "eval"

    def __init__(self, every: int, data, logger: Logger):
        self.every, self.data, self.logger = every, data, logger
        self.history: list[dict] = []

    def run(self, trainer, step: int) -> dict:
        with trainer.averaged():
            trainer.method.eval()
            metrics = trainer.method.evaluate(self.data)
            trainer.method.train()
        record = {"step": step, "split": "val", **metrics}
        self.history.append(record)
        self.logger.write(record)
        return metrics

    def on_step_end(self, trainer, step, logs) -> None:
        if self.data is not None and self.every > 0 and step % self.every == 0 and step != trainer.cfg.steps:
            self.run(trainer, step)

    def state_dict(self):
        return {}, {"history": self.history}

    def load_state_dict(self, tensors, meta):
        self.history = meta.get("history", [])


class Checkpointer(Callback):
    name = "checkpoint"

    def __init__(self, every: int, root: Path | None):
        self.every, self.root = every, root

    def on_step_end(self, trainer, step, logs) -> None:
        if self.root is not None and self.every > 0 and step % self.every == 0:
            trainer.save_checkpoint()


class Timer:
    def __init__(self, offset: float = 0.0):
        self.offset, self.t0 = offset, time.perf_counter()

    def __call__(self) -> float:
        return self.offset + time.perf_counter() - self.t0
