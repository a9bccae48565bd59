"""Frozen teachers with forward-hook feature taps and an optional on-disk output cache."""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .config import ConfigError


class FeatureTaps:
    """Record the outputs of named submodules with forward hooks.

    ``taps = FeatureTaps(model, ["features.4"])``; inside ``with taps.recording(): model(x)``,
    ``taps.outputs["features.4"]`` receives that module's output (with its graph when the model
    is being trained). Outside ``recording()`` the hooks keep nothing, so a tapped model that is
    later used on its own holds no feature maps. ``key`` names the setting in errors.
    """

    def __init__(self, model: nn.Module, names: list[str] | tuple[str, ...], key: str = "taps"):
        modules = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        self._on = False
        for name in names:
            if name not in modules:
                valid = ", ".join(n for n in modules if n) or "(none)"
                raise ConfigError(f"{key}: no module named {name!r} to tap; modules: {valid}")
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def fn(_module, _inputs, output):
            if self._on:
                self.outputs[name] = output

        return fn

    @contextlib.contextmanager
    def recording(self):
        self.outputs.clear()
        self._on = True
        try:
            yield self.outputs
        finally:
            self._on = False

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@dataclass
class TeacherOutput:
    logits: torch.Tensor
    features: dict[str, torch.Tensor]


class Teacher(nn.Module):
    """A frozen network: eval mode (always), ``requires_grad=False``, run under ``no_grad``.

    ``taps`` names submodules whose outputs are returned in ``features``. With a cache attached
    (:meth:`attach_cache`), calls that pass the examples' ``index`` read precomputed outputs.
    The wrapped module is put in eval mode with ``requires_grad=False`` (in place).
    """

    def __init__(self, model: nn.Module, taps: list[str] | tuple[str, ...] = (), key: str = "teacher taps"):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tap_names = tuple(taps)
        self._taps = FeatureTaps(model, self.tap_names, key)
        self._cache: dict[str, torch.Tensor] | None = None

    def train(self, mode: bool = True) -> "Teacher":  # a teacher never leaves eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> TeacherOutput:
        if self._cache is not None and index is not None:
            if len(index) and int(index.max()) >= len(self._cache["logits"]):
                raise IndexError(f"teacher cache holds {len(self._cache['logits'])} rows; got index {int(index.max())} "
                                 "(the cache belongs to another training pool)")
            idx = index.to(self._cache["logits"].device)
            dev = x.device
            return TeacherOutput(self._cache["logits"][idx].to(dev),
                                 {n: self._cache[f"feat/{n}"][idx].to(dev) for n in self.tap_names})
        with self._taps.recording() as feats:
            logits = self.model(x)
        return TeacherOutput(logits, {n: feats[n] for n in self.tap_names})

    def fingerprint(self, x: torch.Tensor) -> str:
        h = hashlib.sha256()
        for k, v in self.model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        h.update(repr(self.tap_names).encode())
        h.update(str(tuple(x.shape)).encode())
        h.update(x.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @torch.no_grad()
    def attach_cache(self, x: torch.Tensor, cache_dir: str | Path | None = None, batch_size: int = 1000,
                     progress: bool = False) -> Path | None:
        """Precompute outputs for every row of ``x`` (rows are then addressed by index).

        With ``cache_dir`` the outputs are stored as ``teacher-<hash>.safetensors`` (hash of the
        teacher's weights, the taps and the inputs), so a later run with the same teacher and
        data skips the teacher entirely.
        """
        from safetensors.torch import load_file

        from .checkpoint import atomic_save_safetensors

        path = None
        if cache_dir is not None:
            path = Path(cache_dir) / f"teacher-{self.fingerprint(x)}.safetensors"
            if path.is_file():
                self._cache = load_file(str(path))
                return path
        device = next(self.model.parameters()).device
        chunks: dict[str, list[torch.Tensor]] = {}
        rng = range(0, len(x), batch_size)
        if progress:
            from tqdm import tqdm

            rng = tqdm(rng, desc="teacher cache", leave=False)
        for i in rng:
            out = self.forward(x[i:i + batch_size].to(device))
            chunks.setdefault("logits", []).append(out.logits.float().cpu())
            for n, f in out.features.items():
                chunks.setdefault(f"feat/{n}", []).append(f.float().cpu())
        self._cache = {k: torch.cat(v).contiguous() for k, v in chunks.items()}
        if path is not None:
            atomic_save_safetensors(self._cache, path)
        return path


@dataclass
class TeacherConfig:
    model: dict[str, Any] | None = None  # {name: convnet, width: 128, ...}
    checkpoint: str = ""                 # safetensors weights (a run's export/model.safetensors)
    cache: bool = False                  # precompute teacher outputs once per run (methods that allow it)
    cache_dir: str = ""                  # keep the cache on disk here (reused across runs)


def load_teacher(cfg: TeacherConfig, data, taps=(), key: str = "teacher taps") -> Teacher:
    from ..models import build_model
    from .checkpoint import load_module_weights

    if cfg.model is None:
        raise ConfigError("teacher.model: say which network the teacher is, e.g. {name: convnet, width: 128}")
    pretrained = cfg.model.get("name") == "hf_causal_lm" and cfg.model.get("path")   # weights come with the folder
    if not cfg.checkpoint and not pretrained:
        raise ConfigError("teacher.checkpoint: give the teacher's weights (e.g. runs/teacher/export/model.safetensors)")
    model = build_model(cfg.model, data.in_shape, data.num_classes, "teacher.model")
    if cfg.checkpoint:
        load_module_weights(model, cfg.checkpoint, "teacher.checkpoint")
    return Teacher(model, taps, key)
