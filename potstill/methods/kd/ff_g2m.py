"""Extracting Low-/High-Frequency Knowledge from Graph Neural Networks and Injecting it into MLPs
(FF-G2M) — Wu, Lin, Huang, Zhao, Gao & Li, AAAI 2023, arXiv 2305.10758 (catalog K12).

A GNN teacher (``gnn`` method, e.g. a GCN) is distilled into an MLP that sees only node features,
so inference needs no graph. Two kinds of knowledge, both on the teacher's logits z^T:

* low-frequency (LFD), what neighbours share: the student at node i matches the teacher's
  distribution at each neighbour j (and at i itself):
      L_LFD = mean_{(i,j) ∈ E ∪ self-loops} KL(softmax(z^T_j) || softmax(z^S_i));
* high-frequency (HFD), what tells neighbours apart: the absolute logit difference across each
  edge, as a distribution over classes,
      L_HFD = mean_{(i,j) ∈ E, i ≠ j} KL(softmax(|z^T_i − z^T_j| / τ) || softmax(|z^S_i − z^S_j| / τ));
* L = λ · CE(train nodes) + (1 − λ) · (L_LFD + L_HFD)   (``potstill/losses/graph.py``).

``lfd: false`` / ``hfd: false`` switch the parts off; ``neighbours: false`` keeps LFD on the
self-loops only, which is plain logit KD from a GNN (GLNN, Zhang et al., arXiv 2110.08727): the
comparison row. Full batch over all nodes of one graph (transductive), as the paper's code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.method import Method
from ...core.registry import METHODS
from ...losses.graph import high_frequency_kd, neighbour_kd
from .gnn import full_graph_batches, graph_of


@dataclass
class FFG2MConfig:
    lam: float = 0.4            # λ: weight of the labelled nodes' cross-entropy
    tau: float = 1.5            # τ of the high-frequency term
    lfd: bool = True
    hfd: bool = True
    neighbours: bool = True     # false: LFD on self-loops only (= GLNN logit KD)

    def __post_init__(self):
        if not 0.0 <= self.lam <= 1.0 or self.tau <= 0:
            raise ValueError("lam in [0, 1] and tau > 0")


@METHODS.register("ff_g2m")
class FFG2M(Method):
    """FF-G2M: low- and high-frequency knowledge of a GNN teacher distilled into an MLP."""

    Config = FFG2MConfig
    name = "ff_g2m"
    pillar = "kd"
    catalog_ids = ("K12",)
    paper = "Extracting Low-/High- Frequency Knowledge from Graph Neural Networks and Injecting it into MLPs"
    arxiv = "2305.10758"

    def __init__(self, cfg: FFG2MConfig, student: nn.Module, teacher_logits: torch.Tensor, graph: dict):
        super().__init__(cfg)
        self.student, self.graph = student, graph
        self.register_buffer("teacher_logits", teacher_logits.detach().float(), persistent=False)

    @classmethod
    def build(cls, cfg, ctx):
        g = graph_of(ctx.data)
        teacher = ctx.teacher()
        model = teacher.model
        if not hasattr(model, "set_graph"):
            from ...core.config import ConfigError

            raise ConfigError("teacher.model: ff_g2m distils a graph network (teacher.model.name=gcn)")
        model.set_graph(g["edge_index"], len(g["x"])).eval()
        with torch.no_grad():                   # the teacher is frozen: its logits once, for all nodes
            z = model(g["x"])
        return cls(cfg, ctx.student(), z, g)

    def train_data(self, bundle):
        return full_graph_batches(self.graph)

    def param_groups(self):
        return {"student": list(self.student.parameters())}

    def loss(self, batch, step):
        cfg, y = self.cfg, batch["y"]
        zs, zt = self.student(batch["x"]), self.teacher_logits
        e = self.graph["edge_index"].to(zs.device)
        ce = F.cross_entropy(zs[y >= 0], y[y >= 0])
        lfd = neighbour_kd(zs, zt, e if cfg.neighbours else e[:, :0]) if cfg.lfd else zs.sum() * 0
        hfd = high_frequency_kd(zs, zt, e, cfg.tau) if cfg.hfd else zs.sum() * 0
        return {"student": cfg.lam * ce + (1 - cfg.lam) * (lfd + hfd), "log/ce": ce.detach(),
                "log/lfd": lfd.detach(), "log/hfd": hfd.detach()}

    def export(self):
        return self.student
