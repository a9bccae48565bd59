"""Batch augmentations drawn from torch's global RNG (so checkpoints restore them exactly).

Only what training recipes here need: random integer shifts (replicate-padded crop),
horizontal flips and, with ``dsa``, the dataset-distillation protocol's own DSA augmentation
(:mod:`potstill.data.dsa`, the same transforms and the same strategy string as ``eval.dsa``, one
seed per batch drawn from the global RNG) - e.g. for a teacher that will label DSA views online.
Written with tensor ops (torchvision does not import beside this torch).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .dsa import DSA, parse_strategy


@dataclass
class AugmentConfig:
    shift: int = 0       # random translation of up to ±shift pixels in each direction
    flip: bool = False   # random horizontal flip with probability 1/2
    dsa: str = "none"    # then DSA views as the DD protocol's eval.dsa, e.g. color_crop_cutout_flip_scale_rotate

    def __post_init__(self):
        if self.shift < 0:
            raise ValueError("augment.shift must be >= 0")
        try:
            parse_strategy(self.dsa)
        except ValueError as e:
            raise ValueError(f"augment.dsa: {e}") from None

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.flip or bool(parse_strategy(self.dsa))


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
    if parse_strategy(cfg.dsa):
        x = random_dsa(x, cfg.dsa)
    return x


def random_dsa(x: torch.Tensor, strategy: str) -> torch.Tensor:
    """The DD protocol's DSA (:class:`potstill.data.dsa.DSA`, default settings, as ``eval.dsa``) with a
    seed drawn from torch's global RNG: one call, one family (``mode="single"``), per-image parameters."""
    dsa = DSA(strategy)
    return dsa(x, int(torch.randint(2**31 - 1, (1,)))) if dsa else x


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = False) -> torch.Tensor:
    """torchvision's RandomResizedCrop, per image, in torch ops (differentiable w.r.t. ``x``).

    Each image gets its own crop of area fraction ``s ~ U(scale)`` and aspect ratio ``r`` with
    ``log r ~ U(log ratio)`` (side fractions ``sqrt(s r)`` and ``sqrt(s / r)``, clipped to 1),
    at a uniformly random position inside the image, resized back to the input size by bilinear
    sampling; with ``flip`` each crop is mirrored horizontally with probability 1/2. (torchvision
    retries a draw that does not fit; clipping the sides instead keeps the draw count fixed.)
    Parameters come from torch's global RNG on the CPU, like the rest of this module.
    """
    import math

    if x.dim() != 4:
        raise ValueError(f"random_resized_crop needs (N, C, H, W) images, got shape {tuple(x.shape)}")
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale}")
    n = len(x)
    area = lo + (hi - lo) * torch.rand(n)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    r = log_r.exp()
    w = (area * r).sqrt().clamp(max=1.0)          # side fractions of the crop
    h = (area / r).sqrt().clamp(max=1.0)
    cx = (1 - w) * (2 * torch.rand(n) - 1)        # crop centre in [-1 + w, 1 - w] (normalised coords)
    cy = (1 - h) * (2 * torch.rand(n) - 1)
    sx = torch.where(torch.rand(n) < 0.5, -w, w) if flip else w
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, h, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
