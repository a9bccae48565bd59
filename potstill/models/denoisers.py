"""Raw denoiser networks ``F(x_in, c_noise, cond)`` for EDM preconditioning.

* ``toy_denoiser`` – an MLP for 2-D data: [x, Fourier(c_noise), class embedding] -> x-shaped output;
* ``unet`` – a small U-Net for images: one resolution per entry of ``channels`` (28 -> 14 with
  the default two; sides must be divisible by 2^(levels-1)), a residual block per level on the
  way down and up with skip connections, GroupNorm and SiLU, the noise and class embeddings
  added in every block (after Ho et al., arXiv 2006.11239, and EDM's DDPM++ shrunk to CPU size).

Class conditioning uses ``num_classes + 1`` embeddings: label ``num_classes`` (or ``cond=None``)
means "no condition", which classifier-free guidance needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.registry import MODELS


class NoiseEmbedding(nn.Module):
    """Fourier features of c_noise followed by a 2-layer MLP."""

    def __init__(self, dim: int, freqs: int = 16):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(1000), freqs)))
        self.mlp = nn.Sequential(nn.Linear(2 * freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        a = c_noise.float().reshape(-1, 1) * self.freqs
        return self.mlp(torch.cat([a.sin(), a.cos()], 1))


class Conditioning(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.noise = NoiseEmbedding(dim)
        self.label = nn.Embedding(num_classes + 1, dim)

    def forward(self, c_noise, cond):
        if cond is None:
            cond = torch.full((len(c_noise),), self.num_classes, dtype=torch.long, device=c_noise.device)
        if c_noise.numel() == 1 and len(cond) > 1:
            c_noise = c_noise.reshape(1).expand(len(cond))
        return self.noise(c_noise) + self.label(cond.long())


@dataclass
class ToyDenoiserConfig:
    hidden: int = 256
    depth: int = 3
    emb: int = 64


class ToyDenoiser(nn.Module):
    def __init__(self, cfg: ToyDenoiserConfig, in_shape, num_classes: int):
        super().__init__()
        d = math.prod(in_shape)
        self.in_shape = tuple(in_shape)
        self.cond = Conditioning(cfg.emb, num_classes)
        self.inp = nn.Linear(d + cfg.emb, cfg.hidden)
        self.blocks = nn.ModuleList([nn.Linear(cfg.hidden + cfg.emb, cfg.hidden) for _ in range(cfg.depth - 1)])
        self.out = nn.Linear(cfg.hidden, d)

    def trunk(self, x, c_noise, cond=None):
        e = self.cond(c_noise, cond)
        h = F.silu(self.inp(torch.cat([x.flatten(1), e], 1)))
        for blk in self.blocks:
            h = h + F.silu(blk(torch.cat([h, e], 1)))
        return h

    def features(self, x, c_noise, cond=None) -> torch.Tensor:
        """The last hidden layer (B, hidden): what a GAN head on this network reads."""
        return self.trunk(x, c_noise, cond)

    def forward(self, x, c_noise, cond=None):
        return self.out(self.trunk(x, c_noise, cond)).reshape(x.shape)


@dataclass
class UNetConfig:
    channels: list[int] = field(default_factory=lambda: [32, 64])
    emb: int = 128
    groups: int = 8


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, groups: int):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(min(groups, cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.e = nn.Linear(emb, cout)
        self.n2, self.c2 = nn.GroupNorm(min(groups, cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.c1(F.silu(self.n1(x))) + self.e(e)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig, in_shape, num_classes: int):
        super().__init__()
        c_in, h, w = in_shape
        if h % 2 ** (len(cfg.channels) - 1) or w % 2 ** (len(cfg.channels) - 1):
            raise ValueError(f"unet: image side {h}x{w} must be divisible by {2 ** (len(cfg.channels) - 1)}")
        self.cond = Conditioning(cfg.emb, num_classes)
        ch = cfg.channels
        self.stem = nn.Conv2d(c_in, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        prev = ch[0]
        for c in ch:
            self.down.append(ResBlock(prev, c, cfg.emb, cfg.groups))
            prev = c
        self.mid = ResBlock(prev, prev, cfg.emb, cfg.groups)
        self.up = nn.ModuleList()
        for c in reversed(ch):
            self.up.append(ResBlock(prev + c, c, cfg.emb, cfg.groups))
            prev = c
        self.head = nn.Sequential(nn.GroupNorm(min(cfg.groups, prev), prev), nn.SiLU(), nn.Conv2d(prev, c_in, 3, padding=1))

    def encode(self, x, c_noise, cond=None):
        e = self.cond(c_noise, cond)
        h = self.stem(x)
        skips = []
        for i, blk in enumerate(self.down):
            h = blk(h, e)
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
        return self.mid(h, e), skips, e

    def features(self, x, c_noise, cond=None) -> torch.Tensor:
        """The bottleneck, average-pooled (B, channels[-1]): what a GAN head on this network reads."""
        return self.encode(x, c_noise, cond)[0].mean((2, 3))

    def forward(self, x, c_noise, cond=None):
        h, skips, e = self.encode(x, c_noise, cond)
        for i, blk in enumerate(self.up):
            h = blk(torch.cat([h, skips.pop()], 1), e)
            if i < len(self.up) - 1:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.head(h)


@MODELS.register("toy_denoiser", ToyDenoiserConfig)
def toy_denoiser(cfg, in_shape, num_classes):
    return ToyDenoiser(cfg, in_shape, num_classes)


@MODELS.register("unet", UNetConfig)
def unet(cfg, in_shape, num_classes):
    return UNet(cfg, in_shape, num_classes)
