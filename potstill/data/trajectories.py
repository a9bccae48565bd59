"""Expert trajectories on disk: the buffer every trajectory-matching method reads.

A buffer is a folder::

    buffer.json              format, network spec, data (name, normalisation, input shape,
                             classes), how the experts were trained (optimizer, lr, epochs,
                             augmentation, SAM / clipping / gradient penalty), the parameter
                             layout (names and shapes, in ``named_parameters`` order), optional
                             ZCA, and per expert its file, SHA-256 and validation accuracy
    expert_000.safetensors   "trajectory": (epochs + 1, P) float32 - the flattened parameters at
    expert_001.safetensors   initialisation and after every epoch
    zca.safetensors          (only with ZCA) "mean" (D,), "whiten" (D, D), "unwhiten" (D, D)

Every file is written atomically and ``buffer.json`` is rewritten after each finished expert,
so an interrupted generation resumes at the next expert and never leaves a half-written one.
:meth:`ExpertBuffer.load` validates everything it reads (missing files, checksums, shapes,
dtypes, the parameter count against the layout) and raises :class:`~potstill.errors.DataError`
naming the file.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import DataError
from .synthetic_set import _sha256

FORMAT = "potstill-experts-v1"


# --------------------------------------------------------------------------------------------
# ZCA whitening (Cazenavette et al. use kornia's ZCAWhitening with regularisation 0.1; it is a
# 784x784 eigendecomposition here, so we write it in torch and keep its exact inverse, which
# the export needs to hand un-whitened images to the evaluation protocol).
# --------------------------------------------------------------------------------------------
@dataclass
class ZCA:
    mean: torch.Tensor       # (D,)
    whiten: torch.Tensor     # (D, D)
    unwhiten: torch.Tensor   # (D, D), the inverse of ``whiten``

    @classmethod
    def fit(cls, x: torch.Tensor, eps: float = 0.1) -> "ZCA":
        """W = U diag(1/sqrt(lambda + eps)) U^T of the images' covariance (x: (N, C, H, W))."""
        flat = x.reshape(len(x), -1).double()
        mean = flat.mean(0)
        cov = (flat - mean).T @ (flat - mean) / max(len(flat) - 1, 1)
        lam, u = torch.linalg.eigh(cov)
        lam = lam.clamp_min(0)
        w = u @ torch.diag((lam + eps).rsqrt()) @ u.T
        w_inv = u @ torch.diag((lam + eps).sqrt()) @ u.T
        return cls(mean.float(), w.float(), w_inv.float())

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1)
        return ((flat - self.mean.to(x)) @ self.whiten.to(x)).reshape(x.shape)

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(len(z), -1)
        return (flat @ self.unwhiten.to(z) + self.mean.to(z)).reshape(z.shape)


# --------------------------------------------------------------------------------------------
@dataclass
class ExpertBuffer:
    root: Path
    meta: dict[str, Any]
    trajectories: list[torch.Tensor] = field(default_factory=list)   # each (epochs + 1, P)
    zca: ZCA | None = None

    @property
    def epochs(self) -> int:
        return int(self.meta["epochs"])

    @property
    def num_params(self) -> int:
        return int(self.meta["num_params"])

    def __len__(self) -> int:
        return len(self.trajectories)

    def snapshot(self, expert: int, epoch: int) -> torch.Tensor:
        """The flat parameters of ``expert`` after ``epoch`` epochs (0 = initialisation)."""
        if not 0 <= epoch <= self.epochs:
            raise ValueError(f"epoch {epoch} is outside the buffer's 0..{self.epochs}")
        return self.trajectories[expert][epoch]

    # --- writing -------------------------------------------------------------------------------
    @staticmethod
    def start(root: str | Path, meta: dict[str, Any], zca: ZCA | None = None) -> "ExpertBuffer":
        """Open ``root`` for writing: a new buffer, or the finished experts of an interrupted one
        with the same ``meta`` (anything else already there is an error, not overwritten)."""
        from ..core.checkpoint import atomic_save_safetensors, atomic_write_json

        root = Path(root)
        meta = {"format": FORMAT, **meta, "zca": zca is not None, "experts": []}
        if (root / "buffer.json").is_file():
            old = ExpertBuffer.load(root)
            mine = {k: v for k, v in meta.items() if k != "experts"}
            theirs = {k: v for k, v in old.meta.items() if k != "experts"}
            if mine != theirs:
                diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                raise DataError(f"{root}: holds a buffer made with other settings ({', '.join(diff)}); "
                                "choose another folder")
            return old
        root.mkdir(parents=True, exist_ok=True)
        if zca is not None:
            atomic_save_safetensors({"mean": zca.mean, "whiten": zca.whiten, "unwhiten": zca.unwhiten},
                                    root / "zca.safetensors")
            meta["zca_sha256"] = _sha256(root / "zca.safetensors")
        atomic_write_json(root / "buffer.json", meta)
        return ExpertBuffer(root, meta, [], zca)

    def append(self, trajectory: torch.Tensor, info: dict[str, Any]) -> None:
        """Write one finished expert (atomically) and record it in ``buffer.json``."""
        from ..core.checkpoint import atomic_save_safetensors, atomic_write_json

        trajectory = trajectory.detach().float().cpu().contiguous()
        want = (self.epochs + 1, self.num_params)
        if tuple(trajectory.shape) != want:
            raise ValueError(f"an expert trajectory must be {want}, got {tuple(trajectory.shape)}")
        name = f"expert_{len(self.trajectories):03d}.safetensors"
        atomic_save_safetensors({"trajectory": trajectory}, self.root / name)
        self.meta["experts"].append({"file": name, "sha256": _sha256(self.root / name), **info})
        atomic_write_json(self.root / "buffer.json", self.meta)
        self.trajectories.append(trajectory)

    # --- reading ------------------------------------------------------------------------------
    @staticmethod
    def load(root: str | Path, min_experts: int = 0) -> "ExpertBuffer":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        root = Path(root)
        meta_path = root / "buffer.json"
        if not meta_path.is_file():
            raise DataError(f"{meta_path}: no such file (an expert buffer is a folder with buffer.json)")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{meta_path}: not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{meta_path}: not a {FORMAT} buffer")
        for key, kind in (("epochs", int), ("num_params", int), ("experts", list), ("layout", list)):
            if not isinstance(meta.get(key), kind):
                raise DataError(f"{meta_path}: '{key}' is missing or not a {kind.__name__}")
        if meta["epochs"] < 1 or meta["num_params"] < 1:
            raise DataError(f"{meta_path}: epochs and num_params must be >= 1")
        layout_count = sum(math.prod(shape) for _, shape in meta["layout"])
        if layout_count != meta["num_params"]:
            raise DataError(f"{meta_path}: layout holds {layout_count} parameters but num_params is {meta['num_params']}")
        buf = ExpertBuffer(root, meta)
        want = (meta["epochs"] + 1, meta["num_params"])
        for entry in meta["experts"]:
            path = root / str(entry.get("file", ""))
            if not path.is_file():
                raise DataError(f"{path}: expert file listed in buffer.json is missing")
            if _sha256(path) != entry.get("sha256"):
                raise DataError(f"{path}: checksum does not match buffer.json (file corrupted or replaced)")
            try:
                t = load_file(str(path)).get("trajectory")
            except (SafetensorError, OSError, ValueError) as e:
                raise DataError(f"{path}: unreadable safetensors file ({e})") from None
            if t is None or t.dtype != torch.float32 or tuple(t.shape) != want:
                got = "no 'trajectory' tensor" if t is None else f"{t.dtype} {tuple(t.shape)}"
                raise DataError(f"{path}: expected a float32 'trajectory' of shape {want}, found {got}")
            if not torch.isfinite(t).all():
                raise DataError(f"{path}: trajectory holds NaN or Inf")
            buf.trajectories.append(t)
        if meta.get("zca"):
            path = root / "zca.safetensors"
            if not path.is_file() or _sha256(path) != meta.get("zca_sha256"):
                raise DataError(f"{path}: missing or does not match buffer.json")
            z = load_file(str(path))
            buf.zca = ZCA(z["mean"], z["whiten"], z["unwhiten"])
        if len(buf) < min_experts:
            raise DataError(f"{root}: holds {len(buf)} finished experts, {min_experts} needed")
        return buf


__all__ = ["ExpertBuffer", "ZCA", "FORMAT"]
