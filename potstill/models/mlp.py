"""Multi-layer perceptron on flattened inputs."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..core.registry import MODELS


@dataclass
class MLPConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    dropout: float = 0.0


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig, in_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        dims = [math.prod(in_shape), *cfg.hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(dims[-1], num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@MODELS.register("mlp", MLPConfig)
def mlp(cfg: MLPConfig, in_shape, num_classes) -> MLP:
    return MLP(cfg, in_shape, num_classes)
