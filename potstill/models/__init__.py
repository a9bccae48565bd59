"""Small networks used across the pillars. Every model is built by ``build_model(spec, in_shape, num_classes)``."""
from __future__ import annotations

import torch.nn as nn

from ..core.registry import MODELS, Spec
from . import convnet, denoisers, gcn, gpt, hf, mlp, resnet, vit  # noqa: F401  (registration)


def build_model(spec: Spec | dict | str, in_shape: tuple[int, ...], num_classes: int, key: str = "model") -> nn.Module:
    spec = MODELS.parse(spec, key)
    return MODELS.get(spec.name)(spec.config, tuple(in_shape), int(num_classes))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["build_model", "count_params"]
