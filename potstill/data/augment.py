"""Batch augmentations drawn from torch's global RNG (so checkpoints restore them exactly).

Only what training recipes here need: random integer shifts (replicate-padded crop) and
horizontal flips. Written with tensor ops (torchvision does not import beside this torch).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    shift: int = 0       # random translation of up to ±shift pixels in each direction
    flip: bool = False   # random horizontal flip with probability 1/2

    def __post_init__(self):
        if self.shift < 0:
            raise ValueError("augment.shift must be >= 0")

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.flip


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in [-max_shift, max_shift]², edges replicated."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), device="cpu")
    out = torch.empty_like(x)
    for oy, ox in torch.unique(offsets, dim=0).tolist():
        rows = ((offsets[:, 0] == oy) & (offsets[:, 1] == ox)).nonzero().squeeze(1).to(x.device)
        out[rows] = padded[rows, :, oy:oy + h, ox:ox + w]
    return out


def random_flip(x: torch.Tensor) -> torch.Tensor:
    flip = (torch.rand(len(x), device="cpu") < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augment(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    if x.dim() != 4 or not cfg.active:
        return x
    if cfg.shift:
        x = random_shift(x, cfg.shift)
    if cfg.flip:
        x = random_flip(x)
    return x
