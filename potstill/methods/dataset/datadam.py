"""DataDAM: Efficient Dataset Distillation with Attention Matching — Sajedi et al., ICCV 2023,
arXiv 2310.00093 (catalog D2).

Like DM, the synthetic images are matched to real ones inside randomly initialised networks
(a new one every step) under siamese DSA, class by class. Two terms:

* Spatial Attention Matching (eq. 2-3): for every block l but the last, the attention map
  a_l(x) = vec( sum_c |f_l,c(x)|^p ), L2-normalised per image; match the class means
  L_SAM = sum_c sum_l || mean_i a_l(x_c,i) - mean_j a_l(s_c,j) ||^2 ;
* the last layer's embeddings matched by MMD with a linear kernel (as DM),
  L_MMD = sum_c || mean_i psi(x_c,i) - mean_j psi(s_c,j) ||^2 ;

    L = 100 * ( L_SAM + lambda * L_MMD ),   lambda = 0.01 ("task balance").

``f_l`` are the outputs of each block's ReLU (the reference code hooks the ReLUs). The paper
studies p in {1, 2, 4, 8} and settles on p = 4, our default (the released script calls its
attention function with exponent 1; ``power: 1`` reproduces that). The factor 100 and
lambda follow the reference code; 64 real images per class; SGD on the images, lr 1, momentum
0.5. The paper's hyperparameter table (in its repository) agrees (lr 1 for IPC <= 50, lambda 0.01
at low resolution, p = 4) but lists 8,000 iterations where the released script runs 20,000; our
recipes keep the script's 20,000.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ...core.registry import METHODS
from ...losses.matching import attention_map, mean_embedding_distance
from .base import SyntheticConfig, SyntheticDataMethod


@dataclass
class DataDAMConfig(SyntheticConfig):
    batch_real: int = 64
    power: float = 4.0             # p in a(f) = sum_c |f_c|^p
    task_balance: float = 0.01     # lambda on the last-layer MMD term
    scale: float = 100.0           # overall factor of the reference code

    def __post_init__(self):
        super().__post_init__()
        if self.batch_real < 1 or self.power <= 0 or self.task_balance < 0:
            raise ValueError("batch_real must be >= 1, power > 0, task_balance >= 0")


def block_activations(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of every ReLU of ``net.features`` in order, then the flattened embedding."""
    feats = getattr(net, "features", None)
    if not isinstance(feats, nn.Sequential):
        raise TypeError(f"DataDAM needs a network with a 'features' nn.Sequential trunk (e.g. convnet), "
                        f"not {type(net).__name__}")
    outs = []
    for layer in feats:
        x = layer(x)
        if isinstance(layer, nn.ReLU):
            outs.append(x)
    return outs + [x.flatten(1)]


@METHODS.register("datadam")
class DataDAM(SyntheticDataMethod):
    """DataDAM: spatial attention maps of every block plus last-layer MMD, in random networks."""

    Config = DataDAMConfig
    name = "datadam"
    catalog_ids = ("D2",)
    paper = "DataDAM: Efficient Dataset Distillation with Attention Matching"
    arxiv = "2310.00093"

    def attention_and_embedding(self, net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        acts = block_activations(net, x)
        # attention for all blocks but the last; the last block is matched by its embedding
        return [attention_map(a, self.cfg.power) for a in acts[:-2]] + [acts[-1]]

    def loss(self, batch, step):
        net = self.random_net().requires_grad_(False)
        net.train()
        reals, syns = self.class_batches(self.cfg.batch_real)
        fr, fs = self.forward_by_class(net, self.attention_and_embedding, reals, syns)
        sam = sum(mean_embedding_distance(a, b) for r, s in zip(fr, fs) for a, b in zip(r[:-1], s[:-1]))
        mmd = sum(mean_embedding_distance(r[-1], s[-1]) for r, s in zip(fr, fs))
        loss = self.cfg.scale * (sam + self.cfg.task_balance * mmd)
        return {"images": loss, "log/sam": sam.detach(), "log/mmd": mmd.detach()}
