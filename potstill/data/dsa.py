"""Differentiable Siamese Augmentation (DSA).

Zhao & Bilen, *Dataset Condensation with Differentiable Siamese Augmentation*, ICML 2021,
arXiv 2102.08259.

Every transform is a differentiable function of the images whose random parameters are drawn
*once* per call from a seed. "Siamese" means the real and the synthetic batch are transformed
with the *same* parameters, and the gradient flows through the transform back into the synthetic
pixels. Parameters are drawn per image (``dsa.sample(n, seed)``: the i-th image gets the i-th
row) or once for a whole batch (``dsa.sample(1, seed)``: ``apply`` gives that one row to every
image). The DSA paper's code (also DM's, DataDAM's) matches siamese batches the second way: one
transform for the class's whole real batch and its synthetic images (``theta[:] = theta[0]``).
Outside matching (training a network on augmented data) each image gets its own draw.

Families (defaults as in the paper's code):

* ``color``   – brightness x + b, b ~ U(-0.5, 0.5); saturation (mixing with the channel mean,
  factor ~ U(0, 2); a no-op on one channel); contrast (x - mean) * c + mean, c ~ U(0.5, 1.5);
* ``crop``    – a translation by up to 1/8 of the side, zero padding;
* ``cutout``  – a zeroed square of half the side at a random centre;
* ``flip``    – horizontal flip with probability 1/2;
* ``scale``   – independent x/y scaling by a factor in [1/1.2, 1.2];
* ``rotate``  – rotation by an angle in [-15, 15] degrees.

``mode="single"`` (the DSA default) applies one family per call, chosen from the seed;
``mode="all"`` applies every family in turn. Geometric transforms are one ``affine_grid`` +
``grid_sample`` (bilinear), so they need no torchvision.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """``"color_crop_flip"`` -> ("color", "crop", "flip"); ``"none"`` or "" -> ()."""
    if strategy in ("", "none", "None"):
        return ()
    parts = tuple(strategy.split("_"))
    bad = [p for p in parts if p not in FAMILIES]
    if bad:
        raise ValueError(f"unknown DSA transform {bad[0]!r} in strategy {strategy!r}; choose from {', '.join(FAMILIES)}")
    return parts


@dataclass
class DSAParams:
    """Random parameters of one call, one row per image (``apply`` uses the first len(x) rows)."""

    families: tuple[str, ...]
    values: dict[str, torch.Tensor]


class DSA:
    def __init__(self, strategy: str = DEFAULT_STRATEGY, mode: str = "single", scale: float = 1.2,
                 rotate_deg: float = 15.0, crop: float = 0.125, cutout: float = 0.5,
                 brightness: float = 1.0, saturation: float = 2.0, contrast: float = 0.5):
        if mode not in ("single", "all"):
            raise ValueError(f"DSA mode must be 'single' or 'all', not {mode!r}")
        self.families, self.mode = parse_strategy(strategy), mode
        self.scale, self.rotate_deg, self.crop, self.cutout = scale, rotate_deg, crop, cutout
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast

    def __bool__(self) -> bool:
        return bool(self.families)

    def sample(self, n: int, seed: int | torch.Generator) -> DSAParams:
        """Draw the parameters for up to ``n`` images from ``seed`` (an int or a Generator)."""
        g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
        if not self.families:
            return DSAParams((), {})
        if self.mode == "single":
            families = (self.families[int(torch.randint(len(self.families), (1,), generator=g))],)
        else:
            families = self.families
        u = lambda *shape: torch.rand(n, *shape, generator=g)  # noqa: E731
        v: dict[str, torch.Tensor] = {}
        for f in families:
            if f == "color":
                v["brightness"] = (u() - 0.5) * self.brightness
                v["saturation"] = u() * self.saturation
                v["contrast"] = u() + self.contrast
            elif f == "crop":
                v["shift"] = (u(2) * 2 - 1) * self.crop          # fraction of the side, per axis
            elif f == "cutout":
                v["centre"] = u(2)                                # in [0, 1) of the side
            elif f == "flip":
                v["flip"] = u() < 0.5
            elif f == "scale":
                lo = 1.0 / self.scale
                v["scale"] = u(2) * (self.scale - lo) + lo
            elif f == "rotate":
                v["angle"] = (u() * 2 - 1) * math.radians(self.rotate_deg)
        return DSAParams(families, v)

    def apply(self, x: torch.Tensor, p: DSAParams) -> torch.Tensor:
        n = x.shape[0]
        if n == 0 or not p.families:
            return x
        if any(1 < len(t) < n for t in p.values.values()):
            raise ValueError(f"DSA parameters were sampled for fewer than {n} images")
        # one row: the same transform for the whole batch (shared siamese); else row i for image i
        rows = {k: (t[:n] if len(t) > 1 else t.expand(n, *t.shape[1:])).to(x.device) for k, t in p.values.items()}
        for f in p.families:
            if f == "color":
                x = _color(x, rows)
            elif f == "cutout":
                x = _cutout(x, rows["centre"], self.cutout)
            elif f == "flip":
                x = torch.where(rows["flip"].view(-1, 1, 1, 1), x.flip(3), x)
            else:
                x = _affine(x, f, rows)
        return x

    def __call__(self, x: torch.Tensor, seed: int | torch.Generator) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], seed))


def _color(x: torch.Tensor, r: dict) -> torch.Tensor:
    x = x + r["brightness"].view(-1, 1, 1, 1).to(x.dtype)
    mean_c = x.mean(dim=1, keepdim=True)
    x = (x - mean_c) * r["saturation"].view(-1, 1, 1, 1).to(x.dtype) + mean_c
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * r["contrast"].view(-1, 1, 1, 1).to(x.dtype) + mean


def _cutout(x: torch.Tensor, centre: torch.Tensor, ratio: float) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio / 2 + 0.5), int(w * ratio / 2 + 0.5)
    cy = (centre[:, 0] * (h + 1 - h % 2)).long().view(-1, 1, 1)
    cx = (centre[:, 1] * (w + 1 - w % 2)).long().view(-1, 1, 1)
    ys = torch.arange(h, device=x.device).view(1, -1, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, -1)
    inside = ((ys - cy).abs() < ch) & ((xs - cx).abs() < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _affine(x: torch.Tensor, family: str, r: dict) -> torch.Tensor:
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    if family == "scale":
        theta[:, 0, 0], theta[:, 1, 1] = r["scale"][:, 0], r["scale"][:, 1]
    elif family == "rotate":
        a = r["angle"].to(x.dtype)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), torch.sin(-a)
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a), torch.cos(a)
    elif family == "crop":  # translation; grid coordinates span 2 units per side
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2], theta[:, 1, 2] = 2 * r["shift"][:, 0], 2 * r["shift"][:, 1]
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


__all__ = ["DSA", "DSAParams", "FAMILIES", "DEFAULT_STRATEGY", "parse_strategy"]
