"""A small graph convolutional network (Kipf & Welling, arXiv 1609.02907), written with dense torch ops.

    H^{l+1} = act(Â H^l W^l),   Â = D̃^{-1/2} (A + I) D̃^{-1/2}      (kind: gcn)
    H^{l+1} = act(H^l W_self^l + mean_{j ∈ N(i)} H^l_j W_nbr^l)        (kind: sage; separates a node
                                                                      from its neighbours, which
                                                                      copes with heterophily)

The graph is not a parameter: ``set_graph(edge_index, n)`` attaches it (a sparse Â, not saved in
checkpoints), and ``forward(x)`` takes the features of *all* ``n`` nodes and returns every node's
logits. No graph library needed: a sparse matrix product is all a GCN layer is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..core.registry import MODELS


@dataclass
class GCNConfig:
    hidden: list[int] = field(default_factory=lambda: [64])
    kind: str = "gcn"             # gcn | sage
    dropout: float = 0.5

    def __post_init__(self):
        if self.kind not in ("gcn", "sage"):
            raise ValueError(f"kind must be gcn or sage, got {self.kind!r}")


def normalized_adjacency(edge_index: torch.Tensor, n: int, self_loops: bool = True, mean: bool = False) -> torch.Tensor:
    """Sparse Â: symmetric D^{-1/2}(A + I)D^{-1/2}, or the row-normalised mean over neighbours."""
    e = edge_index
    if self_loops:
        loops = torch.arange(n).repeat(2, 1)
        e = torch.cat([e, loops], 1)
    w = torch.ones(e.shape[1])
    deg = torch.zeros(n).index_add_(0, e[0], w)
    if mean:
        w = w / deg.clamp_min(1)[e[0]]
    else:
        w = w * deg.clamp_min(1).rsqrt()[e[0]] * deg.clamp_min(1).rsqrt()[e[1]]
    return torch.sparse_coo_tensor(e, w, (n, n), check_invariants=True).coalesce()


class GCN(nn.Module):
    def __init__(self, cfg: GCNConfig, in_dim: int, num_classes: int):
        super().__init__()
        self.cfg = cfg
        dims = [in_dim, *cfg.hidden, num_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.nbr = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:])) \
            if cfg.kind == "sage" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.adj: torch.Tensor | None = None

    def set_graph(self, edge_index: torch.Tensor, n: int) -> "GCN":
        self.adj = normalized_adjacency(edge_index, n, self_loops=self.cfg.kind == "gcn", mean=self.cfg.kind == "sage")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adj is None:
            raise RuntimeError("GCN has no graph: call set_graph(edge_index, n) first")
        if len(x) != self.adj.shape[0]:
            raise ValueError(f"a GCN takes the features of all {self.adj.shape[0]} nodes, got {len(x)} rows")
        adj = self.adj.to(x.device)
        h = x
        for i, lin in enumerate(self.layers):
            h = self.drop(h)
            if self.nbr is None:
                h = torch.sparse.mm(adj, lin(h))
            else:
                h = lin(h) + torch.sparse.mm(adj, self.nbr[i](h))
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h


@MODELS.register("gcn", GCNConfig)
def gcn(cfg: GCNConfig, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(in_shape) != 1:
        raise ValueError(f"gcn takes node feature vectors, got inputs of shape {in_shape}")
    return GCN(cfg, in_shape[0], num_classes)
