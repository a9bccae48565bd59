"""A user's own data: ``.npz`` files with arrays ``x`` (N, C, H, W), (N, H, W) or (N, D) and ``y`` (N,) ints."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.registry import DATASETS
from . import ArrayData, DataBundle, DataError, carve


def read_npz(path: str) -> ArrayData:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise DataError(f"{p}: missing array(s) {missing}; found {f.files} (need 'x' and 'y')")
            x, y = f["x"], f["y"]
    except DataError:
        raise
    except Exception as e:  # a corrupt archive surfaces as zipfile, zlib, EOF, Key or Value errors from numpy
        raise DataError(f"{p}: not a readable .npz ({type(e).__name__}: {e})") from None
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise DataError(f"{p}: 'y' must be a 1-D integer array, got {y.dtype} {y.shape}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim not in (2, 4) or len(x) != len(y):
        raise DataError(f"{p}: 'x' must be (N,C,H,W), (N,H,W) or (N,D) with N={len(y)}; got {x.shape}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{p}: 'x' contains NaN or inf")
    return ArrayData(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))


@dataclass
class NpzConfig:
    path: str = ""
    test_path: str | None = None  # else a test split is carved too
    val_size: int = 0             # 0 -> 10% of the training rows
    test_size: int = 0            # used only without test_path; 0 -> 10%
    standardize: bool = True      # scale x by the training mean/std
    train_size: int | None = None
    split_seed: int = 0


@DATASETS.register("npz", NpzConfig)
def npz(cfg: NpzConfig) -> DataBundle:
    if not cfg.path:
        raise DataError("data.path: give the .npz file with arrays x and y")
    full = read_npz(cfg.path)
    if cfg.test_path:
        test = read_npz(cfg.test_path)
        rest = full
    else:
        rest, test, _ = carve(full, cfg.test_size or max(1, len(full) // 10), None, 9_999, val_key="test_size")
    train, val, unlabeled = carve(rest, cfg.val_size or max(1, len(rest) // 10), cfg.train_size, cfg.split_seed)
    if cfg.standardize:
        mean, std = train.x.mean(), train.x.std().clamp_min(1e-8)
        train, val, test = (ArrayData((d.x - mean) / std, d.y) for d in (train, val, test))
        if unlabeled is not None:
            unlabeled = ArrayData((unlabeled.x - mean) / std, unlabeled.y)
    labels = torch.cat([train.y, val.y, test.y])
    if labels.min() < 0:
        raise DataError(f"{cfg.path}: labels must be >= 0")
    return DataBundle(Path(cfg.path).stem, train, val, test, int(labels.max()) + 1, unlabeled)
