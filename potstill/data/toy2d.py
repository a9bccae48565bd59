"""Toy 2-D distributions with known modes, for fast generative experiments.

``ring``: ``modes`` Gaussians (std ``std``) evenly spaced on a circle of radius ``radius``;
``grid``: a sqrt(modes) x sqrt(modes) square grid of Gaussians spaced ``radius`` apart, centred.
Labels are the mode index (class-conditional generation); the mode centres and std travel in
``bundle.info`` for the mode-coverage metrics. Train/val/test are independent draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..core.registry import DATASETS
from . import ArrayData, DataBundle, DataError


@dataclass
class Toy2DConfig:
    kind: Literal["ring", "grid"] = "ring"
    modes: int = 8
    std: float = 0.05
    radius: float = 2.0
    train_size: int = 20000
    val_size: int = 2000
    test_size: int = 5000
    seed: int = 0


def centers(cfg: Toy2DConfig) -> torch.Tensor:
    if cfg.kind == "ring":
        a = torch.arange(cfg.modes, dtype=torch.float64) * 2 * math.pi / cfg.modes
        return (cfg.radius * torch.stack([a.cos(), a.sin()], 1)).float()
    side = int(round(math.sqrt(cfg.modes)))
    if side * side != cfg.modes:
        raise DataError(f"data.modes={cfg.modes}: a grid needs a square number of modes")
    r = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * cfg.radius
    return torch.cartesian_prod(r, r)


def draw(cfg: Toy2DConfig, n: int, generator: torch.Generator) -> ArrayData:
    c = centers(cfg)
    y = torch.randint(len(c), (n,), generator=generator)
    x = c[y] + cfg.std * torch.randn(n, 2, generator=generator)
    return ArrayData(x, y)


@DATASETS.register("toy2d", Toy2DConfig)
def toy2d(cfg: Toy2DConfig) -> DataBundle:
    if cfg.modes < 1 or cfg.std <= 0 or min(cfg.train_size, cfg.val_size, cfg.test_size) < 1:
        raise DataError("data: toy2d needs modes >= 1, std > 0 and positive split sizes")
    g = torch.Generator().manual_seed(cfg.seed)
    train, val, test = (draw(cfg, n, g) for n in (cfg.train_size, cfg.val_size, cfg.test_size))
    return DataBundle(f"toy2d-{cfg.kind}{cfg.modes}", train, val, test, len(centers(cfg)),
                      class_names=[str(i) for i in range(cfg.modes)],
                      info={"centers": centers(cfg).tolist(), "std": cfg.std})
