"""Generated node-classification graphs: a contextual stochastic block model with set homophily.

``csbm``: ``nodes`` nodes with labels drawn uniformly from ``classes``; node features
x_i = μ_{y_i} + ε_i in ``features`` dimensions, ε ~ N(0, I), class means μ_c = ``signal`` · u_c for
random unit vectors u_c (so the features alone are informative but noisy). ``nodes · degree / 2``
undirected edges: each picks a random node i and, with probability ``homophily``, a random other
node of i's class, else a node of another class (self-loops and duplicates dropped): any other class
(``cross: uniform``) or class (y_i + 1) mod ``classes`` (``cross: cyclic``, a fixed class-compatibility
pattern as in the synthetic graphs of Zhu et al., H2GCN, arXiv 2006.11468: at low homophily each
class then has its own neighbour classes, so the graph stays informative). The
measured edge homophily (the share of edges joining two nodes of one class) is in
``info["graph"]["homophily"]``: at 1/classes the graph says nothing about the labels, below it
neighbours are mostly of other classes (heterophily).

The splits are node sets of the one graph (transductive, class-stratified): ``train``/``val``/
``test`` hold those nodes' features and labels with ``index`` = their node ids; the whole graph
(features of every node, labels, ``edge_index`` (2, E) with both directions) is in
``info["graph"]``. GNNs read it; MLP students use the node features only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.registry import DATASETS
from . import ArrayData, DataBundle, DataError, stratified_split


@dataclass
class CSBMConfig:
    nodes: int = 2000
    classes: int = 5
    features: int = 32
    homophily: float = 0.8        # probability an edge joins two nodes of the same class
    degree: float = 10.0          # average degree
    signal: float = 1.0           # distance of each class mean from the origin, in noise std units
    cross: str = "uniform"        # a cross-class edge goes to any other class (uniform) or to class y+1 (cyclic)
    train_per_class: int = 20
    val_per_class: int = 30
    seed: int = 0

    def __post_init__(self):
        if self.classes < 2 or self.nodes < self.classes * (self.train_per_class + self.val_per_class + 1):
            raise ValueError("need classes >= 2 and nodes > classes * (train_per_class + val_per_class + 1)")
        if not 0.0 <= self.homophily <= 1.0 or self.degree <= 0 or self.features < 1:
            raise ValueError("homophily in [0, 1], degree > 0, features >= 1")
        if self.cross not in ("uniform", "cyclic"):
            raise ValueError(f"cross must be uniform or cyclic, got {self.cross!r}")


def make_csbm(cfg: CSBMConfig) -> dict:
    g = torch.Generator().manual_seed(cfg.seed)
    n, k = cfg.nodes, cfg.classes
    y = torch.randint(k, (n,), generator=g)
    means = torch.randn(k, cfg.features, generator=g)
    means = cfg.signal * means / means.norm(dim=1, keepdim=True)
    x = means[y] + torch.randn(n, cfg.features, generator=g)
    members = [torch.nonzero(y == c).flatten() for c in range(k)]
    others = [torch.nonzero(y != c).flatten() if cfg.cross == "uniform" else members[(c + 1) % k] for c in range(k)]
    m = int(n * cfg.degree / 2)
    src = torch.randint(n, (m,), generator=g)
    same = torch.rand(m, generator=g) < cfg.homophily
    u = torch.rand(m, generator=g)
    dst = torch.empty(m, dtype=torch.long)
    for c in range(k):
        sel = y[src] == c
        pool_same, pool_diff = members[c], others[c]
        dst[sel & same] = pool_same[(u[sel & same] * len(pool_same)).long().clamp_max(len(pool_same) - 1)]
        dst[sel & ~same] = pool_diff[(u[sel & ~same] * len(pool_diff)).long().clamp_max(len(pool_diff) - 1)]
    keep = src != dst
    e = torch.stack([src[keep], dst[keep]])
    e = torch.cat([e, e.flip(0)], 1)
    e = torch.unique(e, dim=1)
    return {"x": x, "y": y, "edge_index": e, "homophily": float((y[e[0]] == y[e[1]]).float().mean())}


@DATASETS.register("csbm", CSBMConfig)
def csbm(cfg: CSBMConfig) -> DataBundle:
    gr = make_csbm(cfg)
    x, y = gr["x"], gr["y"]
    ids = torch.arange(cfg.nodes)
    train_idx, rest = stratified_split(y, cfg.train_per_class * cfg.classes, cfg.seed + 1)
    val_local, test_local = stratified_split(y[rest], cfg.val_per_class * cfg.classes, cfg.seed + 2)
    val_idx, test_idx = rest[val_local], rest[test_local]
    if len(test_idx) == 0:
        raise DataError("data.nodes leaves no test nodes")
    split = lambda idx: ArrayData(x[idx], y[idx], ids[idx])  # noqa: E731
    info = {"graph": {**gr, "train_idx": train_idx, "val_idx": val_idx, "test_idx": test_idx}}
    return DataBundle("csbm", split(train_idx), split(val_idx), split(test_idx), cfg.classes,
                      class_names=[str(c) for c in range(cfg.classes)], info=info)
