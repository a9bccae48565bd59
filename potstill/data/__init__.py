"""Datasets as in-memory tensors, deterministic batching, and the dataset registry.

Every dataset loader returns a :class:`DataBundle` with ``train``/``val``/``test`` splits (the
validation split is carved from the training set; the test set is only read for final numbers)
and, where some training images are held back without labels, an ``unlabeled`` split.
Labels of unlabeled images are ``-1``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.registry import DATASETS, Spec
from ..errors import PotstillError


class DataError(PotstillError, RuntimeError):
    """Missing or malformed data; the message names the file and how to fix it."""


@dataclass
class ArrayData:
    x: torch.Tensor  # (N, C, H, W) or (N, D), float32, normalised
    y: torch.Tensor  # (N,) int64, -1 = no label
    index: torch.Tensor | None = None   # (N,) ids of the rows in their source (e.g. graph nodes), if any

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise DataError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        if self.index is not None and len(self.index) != len(self.x):
            raise DataError(f"index has {len(self.index)} entries for {len(self.x)} rows")

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, idx: torch.Tensor) -> "ArrayData":
        return ArrayData(self.x[idx], self.y[idx], None if self.index is None else self.index[idx])

    @staticmethod
    def concat(*parts: "ArrayData") -> "ArrayData":
        index = None if any(p.index is None for p in parts) else torch.cat([p.index for p in parts])
        return ArrayData(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]), index)


@dataclass
class DataBundle:
    name: str
    train: ArrayData
    val: ArrayData | None
    test: ArrayData | None
    num_classes: int
    unlabeled: ArrayData | None = None
    class_names: list[str] | None = None
    #: per-channel mean/std the images were normalised with (to render them as pictures)
    normalization: dict | None = None
    #: anything else a dataset knows that metrics need (e.g. toy2d's mode centres)
    info: dict | None = None

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def stratified_split(y: torch.Tensor, n_take: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (taken, rest): ``n_take`` examples with class proportions kept, chosen by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    classes = torch.unique(y)
    taken = []
    for c in classes:
        idx = perm[y[perm] == c]
        k = round(n_take * len(idx) / len(y))
        taken.append(idx[:k])
    taken = torch.cat(taken)
    # rounding may leave us off by a few: fix up from the remaining permutation
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[taken] = True
    if mask.sum() < n_take:
        extra = perm[~mask[perm]][: n_take - int(mask.sum())]
        mask[extra] = True
    elif mask.sum() > n_take:
        drop = perm[mask[perm]][: int(mask.sum()) - n_take]
        mask[drop] = False
    return torch.nonzero(mask).squeeze(1), torch.nonzero(~mask).squeeze(1)


def carve(train: ArrayData, val_size: int, train_size: int | None, seed: int, key: str = "data",
          val_key: str = "val_size"):
    """Split a labelled training set into (train, val, unlabeled-remainder or None).

    ``key`` prefixes the config keys named in errors (``data.val_size=...``).
    """
    if val_size < 1 or val_size >= len(train):
        raise DataError(f"{key}.{val_key}={val_size} must be in [1, {len(train) - 1}] "
                        "(a validation split is required: choices are made on it, never on the test set)")
    val_idx, rest_idx = stratified_split(train.y, val_size, seed)
    rest = train.subset(rest_idx)
    val = train.subset(val_idx)
    unlabeled = None
    if train_size is not None:
        if not 0 < train_size <= len(rest):
            raise DataError(f"{key}.train_size={train_size} must be in [1, {len(rest)}] (after the validation split)")
        keep, drop = stratified_split(rest.y, train_size, seed + 1)
        if len(drop):
            unlabeled = ArrayData(rest.x[drop], torch.full((len(drop),), -1, dtype=torch.long))
        rest = rest.subset(keep)
    return rest, val, unlabeled


def load_dataset(spec: Spec | dict | str, key: str = "data") -> DataBundle:
    spec = DATASETS.parse(spec, key)
    return DATASETS.get(spec.name)(spec.config)


from . import digits, fmnist, graph, npz, text, toy2d  # noqa: E402,F401  (registration)
from .loader import BatchSampler, batches_from  # noqa: E402,F401
