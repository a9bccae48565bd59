"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT license) from the original idx files.

Default location is the Debian package ``dataset-fashion-mnist``; ``POTSTILL_DATA`` or the
``path`` field point at another folder holding the four ``*-idx?-ubyte[.gz]`` files.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.registry import DATASETS
from . import ArrayData, DataBundle, DataError, carve

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "install it with `apt-get install -y dataset-fashion-mnist`, or set POTSTILL_DATA / data.path to a folder with the idx files"
MEAN, STD = 0.2860, 0.3530
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (LeCun's format): magic (0, 0, dtype, ndim), big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read idx file: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte idx file")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: idx header for {ndim} dimensions is cut short ({len(raw)} bytes)")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims, dtype=object)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} bytes (truncated?)")
    return data.reshape(dims)


def data_dir(path: str | None = None) -> Path:
    return Path(path or os.environ.get("POTSTILL_DATA") or DEFAULT_DIR)


def find_file(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"Fashion-MNIST file {folder / (stem + '.gz')} not found; {INSTALL_HINT}")


def available(path: str | None = None) -> bool:
    try:
        find_file(data_dir(path), "t10k-labels-idx1-ubyte")
        return True
    except DataError:
        return False


def load_raw(path: str | None = None):
    folder = data_dir(path)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(find_file(folder, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(find_file(folder, f"{prefix}-labels-idx1-ubyte"))
        if len(x) != len(y):
            raise DataError(f"{folder}: {prefix} images ({len(x)}) and labels ({len(y)}) differ in count")
        out[split] = (x, y)
    return out


#: pixel scalings: "standard" (zero mean, unit std: classifiers, dataset distillation) or
#: "symmetric" ([-1, 1]: diffusion models, whose EDM preconditioning assumes data std ~0.5)
PIXELS = {"standard": (MEAN, STD), "symmetric": (0.5, 0.5)}


def to_arrays(x: np.ndarray, y: np.ndarray, pixels: str = "standard") -> ArrayData:
    mean, std = PIXELS[pixels]
    xt = (torch.from_numpy(x.astype(np.float32) / 255.0) - mean) / std
    return ArrayData(xt.unsqueeze(1), torch.from_numpy(y.astype(np.int64)))


@dataclass
class FashionMNISTConfig:
    path: str | None = None       # folder with the idx files (default: POTSTILL_DATA or the Debian path)
    val_size: int = 5000          # carved from the 60k training images, class-stratified
    train_size: int | None = None  # keep only this many labelled training images; the rest -> unlabeled
    split_seed: int = 0
    pixels: str = "standard"      # standard: (x - 0.286) / 0.353 | symmetric: 2x - 1, in [-1, 1]
    #: few-class tasks: the new label of each of the 10 classes, e.g. [0,0,0,0,0,1,0,1,1,1] =
    #: clothing vs footwear and bags (the old labels stay in info["fine_labels"] of each split)
    classes_map: list[int] | None = None

    def __post_init__(self):
        if self.pixels not in PIXELS:
            raise ValueError(f"pixels must be one of {', '.join(PIXELS)}, not {self.pixels!r}")
        if self.classes_map is not None:
            m = self.classes_map
            if len(m) != 10 or min(m) < 0 or sorted(set(m)) != list(range(max(m) + 1)) or max(m) < 1:
                raise ValueError(f"classes_map must give each of the 10 classes a label 0..K-1 (K >= 2, all used), got {m}")


@DATASETS.register("fmnist", FashionMNISTConfig)
def fmnist(cfg: FashionMNISTConfig) -> DataBundle:
    raw = load_raw(cfg.path)
    train, val, unlabeled = carve(to_arrays(*raw["train"], cfg.pixels), cfg.val_size, cfg.train_size, cfg.split_seed)
    test = to_arrays(*raw["test"], cfg.pixels)
    mean, std = PIXELS[cfg.pixels]
    if cfg.classes_map is None:
        return DataBundle("fmnist", train, val, test, 10, unlabeled, CLASSES, {"mean": [mean], "std": [std]})
    m = torch.tensor(cfg.classes_map)
    k = int(m.max()) + 1
    fine = {"train": train.y.clone(), "val": val.y.clone(), "test": test.y.clone()}
    relabel = lambda d: None if d is None else ArrayData(d.x, torch.where(d.y >= 0, m[d.y.clamp_min(0)], d.y))  # noqa: E731
    names = [" / ".join(CLASSES[i] for i in range(10) if cfg.classes_map[i] == c) for c in range(k)]
    return DataBundle("fmnist", relabel(train), relabel(val), relabel(test), k, relabel(unlabeled), names,
                      {"mean": [mean], "std": [std]}, {"fine_labels": fine})
