"""A small pre-activation-free ResNet (He et al. 2016, CIFAR-style): a 3x3 stem and three stages
of basic blocks with widths w, 2w, 4w (stride 2 between stages), global average pool, linear head."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.registry import MODELS
from .convnet import make_norm


@dataclass
class ResNetConfig:
    width: int = 16
    blocks: list[int] = field(default_factory=lambda: [1, 1, 1])
    norm: Literal["batch", "instance", "none"] = "batch"


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = make_norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = make_norm(norm, cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), make_norm(norm, cout))

    def forward(self, x):
        out = F.relu(self.n1(self.conv1(x)))
        return F.relu(self.n2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, cfg: ResNetConfig, in_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        c = in_shape[0]
        w = cfg.width
        stages: list[nn.Module] = [nn.Conv2d(c, w, 3, 1, 1, bias=False), make_norm(cfg.norm, w), nn.ReLU(inplace=True)]
        cin = w
        for i, n in enumerate(cfg.blocks):
            cout = w * 2**i
            for j in range(n):
                stages.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1, cfg.norm))
                cin = cout
        self.features = nn.Sequential(*stages)
        self.classifier = nn.Linear(cin, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@MODELS.register("resnet", ResNetConfig)
def resnet(cfg: ResNetConfig, in_shape, num_classes) -> ResNet:
    return ResNet(cfg, in_shape, num_classes)
