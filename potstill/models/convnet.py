"""ConvNet of the dataset-distillation literature (Gidaris & Komodakis 2018; used by DC/DSA/DM/MTT).

``depth`` blocks of [3x3 conv -> norm -> ReLU -> 2x2 pool], then one linear classifier.
``features`` is the conv trunk (tap it by name for feature distillation), ``classifier`` the head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from ..core.registry import MODELS


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":  # as in the DC code: GroupNorm with one group per channel, affine
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


@dataclass
class ConvNetConfig:
    width: int = 128
    depth: int = 3
    norm: Literal["instance", "batch", "none"] = "instance"
    pooling: Literal["avg", "max", "none"] = "avg"
    #: padding of the first conv; the dataset-distillation code uses 3 on 28x28 one-channel
    #: images (a 32x32 feature map, 4x4 after three poolings)
    first_padding: int = 1

    def __post_init__(self):
        if self.width < 1 or self.depth < 1 or self.first_padding < 0:
            raise ValueError("width and depth must be >= 1, first_padding >= 0")


class ConvNet(nn.Module):
    def __init__(self, cfg: ConvNetConfig, in_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        channels, h, w = in_shape
        layers: list[nn.Module] = []
        for d in range(cfg.depth):
            pad = cfg.first_padding if d == 0 else 1
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            layers += [nn.Conv2d(channels, cfg.width, 3, padding=pad), make_norm(cfg.norm, cfg.width), nn.ReLU(inplace=True)]
            if cfg.pooling != "none":
                layers.append(nn.AvgPool2d(2) if cfg.pooling == "avg" else nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            channels = cfg.width
        if h < 1 or w < 1:
            raise ValueError(f"ConvNet depth {cfg.depth} pools a {in_shape[1]}x{in_shape[2]} input to nothing")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * h * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@MODELS.register("convnet", ConvNetConfig)
def convnet(cfg: ConvNetConfig, in_shape, num_classes) -> ConvNet:
    return ConvNet(cfg, in_shape, num_classes)
