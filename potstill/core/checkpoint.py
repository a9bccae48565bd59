"""Checkpoints as safetensors + JSON (never pickle), written atomically.

A checkpoint is a folder ``step-NNNNNNN/`` with ``state.safetensors`` (all tensors) and
``meta.json`` (everything else). It is written under a temporary name and renamed into place,
then the one-line ``latest`` file is replaced atomically, so a run killed at any moment leaves
either the previous checkpoint or the new one, never half of one. (Atomic against a killed
process; no fsync, so not against a power cut.)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError
from .config import ConfigError


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    clean, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        # safetensors refuses tensors that share storage (tied weights, e.g. a transformers LM head):
        # store a copy of the second one; loading assigns the same values to both names
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        clean[k] = v.clone() if ptr in seen and v.numel() else v
        seen.add(ptr)
    _atomic_write(Path(path), lambda tmp: save_file(clean, tmp, metadata=metadata))


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    _atomic_write(Path(path), write)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    _atomic_write(Path(path), write)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def load_module_weights(module: nn.Module, path: str | Path, key: str = "checkpoint") -> None:
    """Load safetensors weights into ``module``; errors name the file and the mismatched keys."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: weights file not found: {path}")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise ConfigError(f"{key}: {path} is not a readable safetensors file: {e}") from None
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad_shape = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        detail = "; ".join(s for s in (
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {unexpected[:5]}" if unexpected else "",
            f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in bad_shape[:3]]}" if bad_shape else "",
        ) if s)
        raise ConfigError(f"{key}: {path} does not fit the model ({detail}); check the model config")
    module.load_state_dict(state)


def init_from(module: nn.Module, path: str | Path, key: str) -> nn.Module:
    """Start ``module`` from the weights at ``path`` (e.g. a run's export/model.safetensors), if given."""
    if path:
        load_module_weights(module, path, key)
    return module


# --- optimizer state <-> (tensors, json) -------------------------------------------------------
def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, state_meta = {}, {}
    for pid, st in sd["state"].items():
        entry = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}/{pid}/{k}"] = v
                entry[k] = "__tensor__"
            else:
                entry[k] = v
        state_meta[str(pid)] = entry
    return tensors, {"state": state_meta, "param_groups": sd["param_groups"]}


def unflatten_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = {k: (tensors[f"{prefix}/{pid}/{k}"] if v == "__tensor__" else v) for k, v in entry.items()}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# --- checkpoint folders ------------------------------------------------------------------------
def save_checkpoint(root: str | Path, step: int, tensors: dict[str, torch.Tensor], meta: dict, keep: int = 2) -> Path:
    root = Path(root)
    final = root / f"step-{step:07d}"
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".step-*"):  # temporaries of a process killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:07d}."))
        atomic_save_safetensors(tensors, tmp / "state.safetensors")
        atomic_write_json(tmp / "meta.json", meta)
        if final.exists():  # same step saved again (a finished run resumed): move the old one aside first
            os.replace(final, tmp.with_name(tmp.name + ".old"))
        os.replace(tmp, final)
        atomic_write_text(root / "latest", final.name + "\n")
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {final.name} in {root}: {e.strerror or e}; "
                              "earlier checkpoints are untouched") from e
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp.with_name(tmp.name + ".old"), ignore_errors=True)
    if keep > 0:
        for old in sorted((p for p in root.glob("step-*") if p.is_dir()), key=_step_of)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def latest_checkpoint(root: str | Path) -> Path | None:
    root = Path(root)
    pointer = root / "latest"
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if (path / "meta.json").is_file() and (path / "state.safetensors").is_file():
            return path
    # no (valid) pointer: the newest complete checkpoint folder, if any
    complete = [p for p in root.glob("step-*") if (p / "meta.json").is_file() and (p / "state.safetensors").is_file()]
    return max(complete, key=_step_of) if complete else None


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a checkpoint folder; a missing or corrupt file is a :class:`CheckpointError`."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        tensors = load_file(str(path / "state.safetensors"))
        meta = json.loads((path / "meta.json").read_text())
    except Exception as e:  # safetensors, json and the OS each raise their own types
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                              "delete it to resume from the one before") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"checkpoint {path}: meta.json lacks an integer 'step'")
    return tensors, meta


def cache_digest(settings: dict, *tensors: torch.Tensor) -> str:
    """16 hex digits naming a cached artefact: its settings (JSON, sorted keys) and the exact bytes of
    the tensors it was computed from (e.g. the training split). Equal inputs, equal name."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
