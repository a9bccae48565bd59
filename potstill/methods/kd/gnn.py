"""A graph neural network trained with cross-entropy on the labelled nodes (teachers for graph KD).

Full batch and transductive: every step runs the GNN on the features of all nodes of the graph
(``info["graph"]`` of a graph dataset such as ``csbm``) and takes the loss on the training nodes;
evaluation reads the logits of the split's nodes (``ArrayData.index``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.config import ConfigError
from ...core.method import Method
from ...core.registry import METHODS


@dataclass
class GNNConfig:
    pass


def graph_of(bundle) -> dict:
    g = (bundle.info or {}).get("graph")
    if g is None:
        raise ConfigError(f"data: {bundle.name} is not a graph dataset (no info['graph']); use e.g. data.name=csbm")
    return g


def full_graph_batches(g: dict) -> list[dict]:
    """The one batch of a full-batch method: all nodes' features, labels only on the training nodes."""
    y = torch.full_like(g["y"], -1)
    y[g["train_idx"]] = g["y"][g["train_idx"]]
    return [{"x": g["x"], "y": y}]


@torch.no_grad()
def node_metrics(logits: torch.Tensor, data) -> dict[str, float]:
    if data.index is None:
        raise ValueError("graph evaluation needs the split's node ids (ArrayData.index)")
    z, y = logits[data.index].float(), data.y
    return {"acc": float((z.argmax(-1) == y).float().mean()), "nll": float(F.cross_entropy(z, y))}


@METHODS.register("gnn")
class GNN(Method):
    """Plain cross-entropy training of a graph network on the labelled nodes (graph teachers)."""

    Config = GNNConfig
    name = "gnn"
    pillar = "kd"
    paper = "baseline: semi-supervised node classification with a GCN (Kipf & Welling, arXiv 1609.02907)"

    def __init__(self, cfg: GNNConfig, model: nn.Module, graph: dict):
        super().__init__(cfg)
        if not hasattr(model, "set_graph"):
            raise ConfigError("student: gnn needs a graph model (student.name=gcn)")
        self.model, self.graph = model.set_graph(graph["edge_index"], len(graph["x"])), graph

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, ctx.student(), graph_of(ctx.data))

    def train_data(self, bundle):
        return full_graph_batches(self.graph)

    def param_groups(self):
        return {"model": list(self.model.parameters())}

    def loss(self, batch, step):
        z, y = self.model(batch["x"]), batch["y"]
        return {"model": F.cross_entropy(z[y >= 0], y[y >= 0])}

    @torch.no_grad()
    def evaluate(self, data, batch_size: int = 512):
        was = self.model.training
        self.model.eval()
        out = node_metrics(self.model(self.graph["x"].to(next(self.model.parameters()).device)).cpu(), data)
        self.model.train(was)
        return out

    def export(self):
        return self.model
