"""potstill: knowledge, dataset and generative distillation through one trainer.

Python API: :func:`distill` (your modules, your tensors), :func:`distill_dataset` and
:func:`evaluate_synthetic_set` (dataset distillation), :func:`run_recipe` (a YAML recipe),
:func:`load_model` (a run's exported classifier), and the lower-level
:class:`Method` / :class:`Trainer` for custom loops.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import data, losses, methods, models  # noqa: F401  (registration)
from .api import DistillResult, distill, distill_dataset, evaluate_synthetic_set
from .core.config import ConfigError
from .core.method import BuildContext, Method
from .core.registry import DATASETS, METHODS, MODELS
from .core.run import RunConfig, load_denoiser, load_model, resolve
from .core.run import run as _run
from .core.teacher import FeatureTaps, Teacher
from .core.trainer import OptimConfig, Trainer, TrainerConfig
from .data import ArrayData, DataBundle, DataError, load_dataset
from .data.synthetic_set import SyntheticSet
from .models import build_model, count_params


def run_recipe(recipe, out, overrides=None, resume: bool = False) -> dict:
    """``potstill run`` as a call: resolve the YAML recipe (+ dotted overrides) and train it."""
    return _run(resolve(recipe, overrides), out, resume=resume)


__all__ = ["distill", "DistillResult", "distill_dataset", "evaluate_synthetic_set", "SyntheticSet", "run_recipe", "load_model", "load_denoiser", "resolve", "RunConfig", "Method", "BuildContext",
           "Trainer", "TrainerConfig", "OptimConfig", "Teacher", "FeatureTaps", "ConfigError", "DataError",
           "ArrayData", "DataBundle", "load_dataset", "build_model", "count_params", "METHODS", "MODELS", "DATASETS"]
