"""scikit-learn's bundled 8x8 handwritten digits (1797 images): small enough for tests."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.registry import DATASETS
from . import ArrayData, DataBundle, DataError, carve, stratified_split


@dataclass
class DigitsConfig:
    test_size: int = 360
    val_size: int = 180
    train_size: int | None = None
    split_seed: int = 0


@DATASETS.register("digits", DigitsConfig)
def digits(cfg: DigitsConfig) -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (torch.tensor(d.images, dtype=torch.float32) / 16.0 - 0.5) / 0.5
    full = ArrayData(x.unsqueeze(1), torch.tensor(d.target, dtype=torch.long))
    if not 0 < cfg.test_size < len(full) - 2:
        raise DataError(f"data.test_size={cfg.test_size} must be in [1, {len(full) - 3}]")
    test_idx, rest_idx = stratified_split(full.y, cfg.test_size, 12345)  # fixed: the test set never moves
    train, val, unlabeled = carve(full.subset(rest_idx), cfg.val_size, cfg.train_size, cfg.split_seed)
    return DataBundle("digits", train, val, full.subset(test_idx), 10, unlabeled, [str(i) for i in range(10)],
                      {"mean": [0.5], "std": [0.5]})
