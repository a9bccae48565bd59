"""Dataset Condensation with Gradient Matching — Zhao, Mopuri & Bilen, ICLR 2021, arXiv 2006.05929,
and its DSA variant — Zhao & Bilen, ICML 2021, arXiv 2102.08259 (catalog B4).

The synthetic set S is learned so that a network gets, class by class, the same gradient from
S as from real data T, all along the network's own training on S (Algorithm 1):

    for each outer iteration k = 0 .. K-1:        (network theta re-initialised every K steps)
        L = sum_c D( grad_theta CE(theta; A_w(T_c)), grad_theta CE(theta; A_w(S_c)) )   (eq. 9)
        S <- S - eta_S * grad_S L                 (SGD, lr 0.1, momentum 0.5)
        theta <- inner_loop epochs of SGD on S    (lr 0.01; skipped after the last k)

D is the layer-wise distance of eq. 10 (:func:`~potstill.losses.matching.gradient_match_distance`).
K ("outer_loop") and the inner epochs follow the paper's table by IPC: 1 -> (1, 1),
10 -> (10, 50), 20 -> (20, 25), 30 -> (30, 20), 40 -> (40, 15), 50 -> (50, 10).
DSA adds the same differentiable augmentation A_w (one seed) to the real and the synthetic batch
of each class, and to the network's training on S.

One trainer step = one outer iteration k. The network is a submodule, so it is checkpointed and
a resumed run continues exactly. The paper's 1000 iterations are ``trainer.steps = 1000 * K``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...core.registry import METHODS
from ...losses.matching import gradient_match_distance
from .base import SyntheticConfig, SyntheticDataMethod

#: (outer_loop, inner_loop) by IPC, from the DC paper / code
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def default_loops(ipc: int) -> tuple[int, int]:
    """The paper's (outer, inner) for ``ipc``; other IPCs take the nearest smaller entry."""
    return LOOPS[max(k for k in LOOPS if k <= ipc)]


@dataclass
class DCConfig(SyntheticConfig):
    dsa: str = "none"
    batch_real: int = 256
    outer_loop: int = 0          # 0 = by IPC as in the paper
    inner_loop: int = 0          # 0 = by IPC as in the paper
    lr_net: float = 0.01
    batch_train: int = 256       # batch of the network's training on S
    distance: str = "layerwise"  # layerwise (eq. 10) | mse | cos

    def __post_init__(self):
        super().__post_init__()
        if self.batch_real < 1 or self.batch_train < 1 or self.outer_loop < 0 or self.inner_loop < 0:
            raise ValueError("batch_real and batch_train must be >= 1, outer_loop and inner_loop >= 0")
        if self.distance not in ("layerwise", "mse", "cos"):
            raise ValueError(f"distance must be layerwise, mse or cos, not {self.distance!r}")

    @property
    def loops(self) -> tuple[int, int]:
        outer, inner = default_loops(self.ipc)
        return self.outer_loop or outer, self.inner_loop or inner


@dataclass
class DSAConfig(DCConfig):
    dsa: str = "color_crop_cutout_flip_scale_rotate"


@METHODS.register("dc")
class DC(SyntheticDataMethod):
    """Dataset condensation by per-class gradient matching along the network's training on S."""

    Config = DCConfig
    name = "dc"
    catalog_ids = ("B4",)
    paper = "Dataset Condensation with Gradient Matching"
    arxiv = "2006.05929"

    def __init__(self, cfg, data):
        super().__init__(cfg, data)
        self.net = self.random_net()

    def reset_net(self) -> None:
        fresh = self.random_net()
        self.net.load_state_dict(fresh.state_dict())

    def train_net_on_synthetic(self) -> None:
        """``inner_loop`` epochs of plain SGD on the (detached, augmented) synthetic set."""
        x, y = self.images.detach(), self.labels
        bs = min(self.cfg.batch_train, len(x))
        params = list(self.net.parameters())
        for _ in range(self.cfg.loops[1]):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), bs):
                idx = perm[i:i + bs]
                xb = x[idx]
                if self.dsa:
                    xb = self.dsa(xb, int(torch.randint(2**31 - 1, (1,))))
                grads = torch.autograd.grad(F.cross_entropy(self.net(xb), y[idx]), params)
                with torch.no_grad():
                    for p, g in zip(params, grads):
                        p.sub_(self.cfg.lr_net * g)

    def loss(self, batch, step):
        outer, _ = self.cfg.loops
        if step % outer == 0:
            self.reset_net()
        else:
            self.train_net_on_synthetic()
        self.net.train()
        params = [p for p in self.net.parameters() if p.requires_grad]
        total = self.images.new_zeros(())
        for c in range(self.num_classes):
            real, syn = self.siamese(self.real_batch(c, self.cfg.batch_real), self.syn(c))
            target_r = torch.full((len(real),), c, dtype=torch.long, device=real.device)
            target_s = torch.full((len(syn),), c, dtype=torch.long, device=syn.device)
            g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(self.net(real), target_r), params)]
            g_syn = torch.autograd.grad(F.cross_entropy(self.net(syn), target_s), params, create_graph=True)
            total = total + gradient_match_distance(g_real, list(g_syn), self.cfg.distance)
        return {"images": total}


@METHODS.register("dsa")
class DSAMethod(DC):
    """DC with differentiable siamese augmentation on both batches and in the network's training."""

    Config = DSAConfig
    name = "dsa"
    paper = "Dataset Condensation with Differentiable Siamese Augmentation"
    arxiv = "2102.08259"
