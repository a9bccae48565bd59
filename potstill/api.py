"""The Python entry points: bring your own ``nn.Module`` teacher and student and your own data.

    import potstill
    result = potstill.distill(teacher, student, (x_train, y_train), method="kd",
                              val_data=(x_val, y_val), steps=500, temperature=4.0)
    result.model        # the trained student
    result.summary      # {"val": {"acc": ...}, "wall_clock_s": ...}

    syn = potstill.distill_dataset((x_train, y_train), method="dm", ipc=10, steps=1000)
    syn.save("my_set"); syn.save_grid("my_set.png")
    potstill.evaluate_synthetic_set(syn, val_data=(x_val, y_val), test_data=(x_test, y_test))
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .core.config import ConfigError, from_dict
from .core.method import BuildContext, Method
from .core.registry import METHODS
from .core.trainer import OptimConfig, Trainer, TrainerConfig, seed_everything
from .data import ArrayData, DataBundle


@dataclass
class DistillResult:
    model: Any            # the exported artefact (a copy; EMA weights when trainer ema_decay > 0)
    method: Method        # the trained method, with every group's state
    summary: dict


def as_array_data(data, what: str) -> ArrayData | None:
    """(x, y) tensors/arrays, a TensorDataset, or ArrayData -> ArrayData; None for other iterables."""
    if data is None or isinstance(data, ArrayData):
        return data
    if isinstance(data, torch.utils.data.TensorDataset):
        data = data.tensors
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (torch.as_tensor(t) for t in data)
        return ArrayData(x.float(), y.long())
    if torch.is_tensor(data):
        if what != "train_data":
            raise TypeError(f"{what}: evaluation data needs labels: pass (x, y)")
        return ArrayData(data.float(), torch.full((len(data),), -1, dtype=torch.long))
    if isinstance(data, torch.utils.data.DataLoader) or hasattr(data, "__iter__"):
        return None
    raise TypeError(f"{what}: expected (x, y) tensors, a TensorDataset, a DataLoader, got {type(data).__name__}")


def distill(teacher: nn.Module | None, student: nn.Module, train_data, method: str = "kd", *,
            val_data=None, test_data=None, unlabeled_x: torch.Tensor | None = None,
            steps: int = 500, batch_size: int = 128, lr: float = 1e-3, optimizer: str = "adam",
            seed: int = 0, out: str | Path | None = None, trainer: dict | None = None,
            cache_teacher: bool = False, progress: bool = True, **method_kwargs) -> DistillResult:
    """Distil ``teacher`` into ``student`` with a registered method (``potstill list``).

    ``method_kwargs`` are the method's config fields (e.g. ``temperature=4.0, alpha=0.9`` for
    ``kd``); unknown names raise with the list of valid ones. ``trainer`` takes any
    :class:`TrainerConfig` field as a dict and overrides ``steps``/``batch_size``/``lr``/...
    With ``out`` a run folder with metrics and checkpoints is written. ``teacher`` may be None
    for methods without one (``supervised``).
    """
    cls = METHODS.get(method, "method")
    mcfg = from_dict(cls.Config, method_kwargs, "method")
    trainer = dict(trainer or {})
    optim = {g: dict(v or {}) for g, v in (trainer.pop("optim", None) or {}).items()}
    optim["default"] = {"name": optimizer, "lr": lr, **optim.get("default", {})}  # explicit trainer.optim wins
    tcfg_raw = {"steps": steps, "batch_size": batch_size, "seed": seed, "progress": progress, "optim": optim, **trainer}
    tcfg = from_dict(TrainerConfig, tcfg_raw, "trainer")
    if out is not None and Path(out).exists() and any(Path(out).iterdir()):
        raise ConfigError(f"out: {out} is not empty; choose a new folder (or use potstill.run_recipe(..., resume=True))")
    train = as_array_data(train_data, "train_data")
    val, test = as_array_data(val_data, "val_data"), as_array_data(test_data, "test_data")
    if (val_data is not None and val is None) or (test_data is not None and test is None):
        raise TypeError("val_data/test_data must be (x, y) tensors or a TensorDataset")
    if train is not None:
        probe_x = train.x[:2]
    else:
        first = next(iter(train_data))
        probe_x = (first["x"] if isinstance(first, dict) else first[0] if isinstance(first, (list, tuple)) else first)[:2]
    with torch.no_grad():
        was = student.training
        student.eval()
        num_classes = int(student(probe_x.float().to(next(student.parameters()).device)).shape[-1])
        student.train(was)
    unl = ArrayData(unlabeled_x.float(), torch.full((len(unlabeled_x),), -1, dtype=torch.long)) if unlabeled_x is not None else None
    bundle = DataBundle("user", train if train is not None else ArrayData(probe_x, torch.zeros(len(probe_x), dtype=torch.long)),
                        val, test, num_classes, unl)
    seed_everything(seed)
    m = cls.build(mcfg, BuildContext(data=bundle, student_module=student, teacher_module=teacher))
    pool = m.train_data(bundle) if train is not None else train_data
    if cache_teacher and m.cacheable_teacher and isinstance(pool, ArrayData) and hasattr(m, "teacher"):
        m.teacher.attach_cache(pool.x)
    trainer_obj = Trainer(tcfg, out, desc=method)
    result = trainer_obj.fit(m, pool, val, test)
    with trainer_obj.averaged():  # with EMA on, the artefact is the averaged one (as evaluated)
        model = copy.deepcopy(m.export())
    return DistillResult(model, m, result)


#: default image learning rate per dataset-distillation method (the papers' values)
DD_IMAGE_LR = {"dm": 1.0, "datadam": 1.0, "dc": 0.1, "dsa": 0.1}


def _user_bundle(train, val, test, num_classes: int | None, name: str = "user") -> DataBundle:
    k = num_classes or int(max(int(d.y.max()) for d in (train, val, test) if d is not None)) + 1
    return DataBundle(name, train, val, test, k)


def distill_dataset(train_data, method: str = "dm", *, ipc: int = 10, steps: int = 1000, lr: float | None = None,
                    momentum: float = 0.5, num_classes: int | None = None, seed: int = 0,
                    out: str | Path | None = None, trainer: dict | None = None, progress: bool = True,
                    **method_kwargs):
    """Distil labelled images ``(x, y)`` (x: (N, C, H, W), normalised) into ``ipc`` per class.

    ``method`` is any dataset method (``potstill list``: random, herding, kcenter, dc, dsa, dm,
    datadam); ``method_kwargs`` are its config fields (e.g. ``batch_real=64``, ``dsa="none"``,
    ``net={...}``). The images are trained by SGD (``lr`` defaults to the paper's value) for
    ``steps`` steps; coreset methods select and take no steps. Returns a
    :class:`~potstill.data.synthetic_set.SyntheticSet`.
    """
    cls = METHODS.get(method, "method")
    if cls.pillar != "dataset":
        raise ConfigError(f"method: {method!r} is not a dataset-distillation method; use potstill.distill for {cls.pillar}")
    train = as_array_data(train_data, "train_data")
    if train is None:
        raise TypeError("train_data: dataset distillation needs the images as (x, y) tensors or a TensorDataset")
    mcfg = from_dict(cls.Config, {"ipc": ipc, **method_kwargs}, "method")
    bundle = _user_bundle(train, None, None, num_classes)
    seed_everything(seed)
    m = cls.build(mcfg, BuildContext(data=bundle))
    groups = m.param_groups()
    tcfg_raw = {"steps": steps if groups else 0, "batch_size": 1, "seed": seed, "progress": progress,
                "ema_decay": 0.0, "optim": {"default": {"name": "sgd", "lr": lr or DD_IMAGE_LR.get(method, 1.0),
                                                        "momentum": momentum}}, **(trainer or {})}
    Trainer(from_dict(TrainerConfig, tcfg_raw, "trainer"), out, desc=method).fit(m, None)
    return m.export()


def evaluate_synthetic_set(syn, *, val_data=None, test_data=None, num_classes: int | None = None, **protocol) -> dict:
    """Judge a synthetic set by the dd-v1 protocol on your validation/test data.

    ``protocol`` takes any :class:`~potstill.eval.synthetic_set.SynEvalConfig` field
    (``epochs``, ``seeds``, ``model={...}``, ``lr``, ``dsa`` ...). Returns mean +- std accuracy.
    """
    from .eval.synthetic_set import SynEvalConfig, evaluate_synthetic

    val, test = as_array_data(val_data, "val_data"), as_array_data(test_data, "test_data")
    if val is None and test is None:
        raise TypeError("pass val_data and/or test_data as (x, y)")
    images = syn.images if hasattr(syn, "images") else syn[0]
    k = num_classes or getattr(syn, "num_classes", None)
    bundle = _user_bundle(ArrayData(images, torch.zeros(len(images), dtype=torch.long)), val, test, k)
    return evaluate_synthetic(syn, bundle, from_dict(SynEvalConfig, protocol, "protocol"))


__all__ = ["distill", "DistillResult", "distill_dataset", "evaluate_synthetic_set", "OptimConfig", "ConfigError"]
