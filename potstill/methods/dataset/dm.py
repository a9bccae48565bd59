"""Dataset Condensation with Distribution Matching — Zhao & Bilen, WACV 2023, arXiv 2110.04181 (catalog B5).

Synthetic images of each class are moved so that, in the embedding space of a *randomly
initialised* network psi (a new one every step), their mean embedding matches the real one
(eq. 4, an empirical MMD with a linear kernel), under the same DSA transform A_w for both:

    min_S  E_{psi ~ P_psi, w ~ Omega}  sum_c || mean_i psi(A_w(x_c,i)) - mean_j psi(A_w(s_c,j)) ||^2

One trainer step = one outer iteration: draw psi, draw ``batch_real`` real images per class,
one SGD step on the images (paper defaults: lr 1.0, momentum 0.5, 20k iterations, 256 real
images per class). The network is never trained; it only needs no gradient of its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.registry import METHODS
from ...losses.matching import mean_embedding_distance
from .base import SyntheticConfig, SyntheticDataMethod


@dataclass
class DMConfig(SyntheticConfig):
    batch_real: int = 256     # real images per class per step

    def __post_init__(self):
        super().__post_init__()
        if self.batch_real < 1:
            raise ValueError("batch_real must be >= 1")


def embed(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.embed(x) if hasattr(net, "embed") else net(x)


@METHODS.register("dm")
class DM(SyntheticDataMethod):
    """Distribution matching: per-class mean embeddings in random networks, with DSA."""

    Config = DMConfig
    name = "dm"
    catalog_ids = ("B5",)
    paper = "Dataset Condensation with Distribution Matching"
    arxiv = "2110.04181"

    def loss(self, batch, step):
        net = self.random_net().requires_grad_(False)
        net.train()
        reals, syns = self.class_batches(self.cfg.batch_real)
        fr, fs = self.forward_by_class(net, lambda n, x: [embed(n, x)], reals, syns)
        loss = sum(mean_embedding_distance(r[0], s[0]) for r, s in zip(fr, fs))
        return {"images": loss}
