"""DisWOT: Student Architecture Search for Distillation WithOut Training — Dong, Li & Wei, CVPR 2023,
arXiv 2303.15678 (catalog K8).

Which student will distil best from a teacher can be guessed before training anything: DisWOT
compares a randomly initialised teacher and candidate student on one batch, with two similarities
of their last feature maps F (B × ch × h × w):

* semantic: the Grad-CAM map of each sample's class, CAM_i = ReLU(Σ_ch a_{i,ch} F_{i,ch}) with
  a_{i,ch} = mean_{h,w} ∂z_{i,y_i}/∂F_{i,ch}, resized to a common h × w and L2-normalised;
      D_sem = mean_i ||CAM^T_i − CAM^S_i||²
* relational: the samples' similarity matrix G = f f^T of the row-normalised flattened features,
      D_rel = ||G^T − G^S||²_F / B²
* score = −(D_sem + D_rel): higher = more alike = expected to distil better.

``evolve`` searches a space of ConvNet students (width, depth) with this score under a parameter
budget: a population of random candidates, each generation mutating one gene of the best half.
Nothing is trained; a score costs one forward/backward pass of both networks.

``diswot`` (the method) uses the same two distances as a distillation loss next to Hinton KD on a
trained teacher: L = KD + β (D_sem + D_rel).

Taken as our choice where the paper's code is terse: the semantic term uses spatial Grad-CAM maps
(which compares networks of different widths) rather than channel-by-class gradient Gram
matrices, and the two terms are summed with equal weight.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.config import ConfigError
from ...core.method import Method
from ...core.registry import METHODS
from .hinton import hinton_terms


def feature_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(trunk, head) of a network whose logits are ``head(trunk(x).flatten(1))`` (e.g. ``convnet``)."""
    if not (hasattr(model, "features") and hasattr(model, "classifier")):
        raise ConfigError(f"DisWOT needs a network with a 'features' trunk and a 'classifier' head "
                          f"(e.g. convnet), got {type(model).__name__}")
    return model.features, model.classifier


def cam_and_features(model: nn.Module, x: torch.Tensor, y: torch.Tensor, create_graph: bool = False):
    """(Grad-CAM maps (B, h, w) of each sample's class, feature maps (B, ch, h, w))."""
    trunk, head = feature_head(model)
    f = trunk(x)
    if f.dim() != 4:
        raise ConfigError(f"DisWOT needs convolutional feature maps (B, ch, h, w); {type(model).__name__}'s "
                          f"features are {tuple(f.shape)}")
    if not f.requires_grad:
        f.requires_grad_(True)
    z = head(f.flatten(1))
    grad = torch.autograd.grad(z.gather(1, y[:, None]).sum(), f, create_graph=create_graph)[0]
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * f).sum(1))
    return cam, f


def _common(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])
    return F.adaptive_avg_pool2d(a[:, None], (h, w)).flatten(1), F.adaptive_avg_pool2d(b[:, None], (h, w)).flatten(1)


def semantic_distance(cam_t: torch.Tensor, cam_s: torch.Tensor) -> torch.Tensor:
    a, b = _common(cam_t, cam_s)
    return (F.normalize(a, dim=1) - F.normalize(b, dim=1)).pow(2).sum(1).mean()


def relation_distance(f_t: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
    gt = F.normalize(f_t.flatten(1), dim=1)
    gs = F.normalize(f_s.flatten(1), dim=1)
    b = len(gt)
    return (gt @ gt.T - gs @ gs.T).pow(2).sum() / b ** 2


def diswot_score(teacher: nn.Module, student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """−(D_sem + D_rel) of the two networks on one batch (both usually randomly initialised)."""
    cam_t, f_t = cam_and_features(teacher, x, y)
    cam_s, f_s = cam_and_features(student, x, y)
    with torch.no_grad():
        return -float(semantic_distance(cam_t, cam_s) + relation_distance(f_t, f_s))


def evolve(score, space: dict[str, list], population: int = 10, generations: int = 20, seed: int = 0,
           allowed=lambda genes: True) -> list[tuple[float, dict]]:
    """Regularised evolution over ``space`` ({gene: choices}); ``score(genes)`` is maximised.

    Returns every distinct candidate scored, best first (score, genes)."""
    rng = random.Random(seed)
    seen: dict[tuple, float] = {}

    def evaluate(genes):
        key = tuple(sorted(genes.items()))
        if key not in seen:
            seen[key] = score(genes)
        return seen[key]

    def sample():
        for _ in range(1000):
            g = {k: rng.choice(v) for k, v in space.items()}
            if allowed(g):
                return g
        raise ValueError("no candidate of the search space satisfies the constraint")

    pop = [sample() for _ in range(population)]
    for _ in range(generations):
        ranked = sorted(pop, key=evaluate, reverse=True)
        parents = ranked[:max(1, population // 2)]
        children = []
        while len(children) < population - len(parents):
            child = dict(rng.choice(parents))
            gene = rng.choice(list(space))
            child[gene] = rng.choice(space[gene])
            if allowed(child):
                children.append(child)
        pop = parents + children
    return sorted(((s, dict(k)) for k, s in seen.items()), key=lambda t: t[0], reverse=True)


@dataclass
class DisWOTConfig:
    temperature: float = 4.0
    alpha: float = 0.9
    beta: float = 1.0             # weight of D_sem + D_rel next to KD

    def __post_init__(self):
        if self.temperature <= 0 or not 0 <= self.alpha <= 1 or self.beta < 0:
            raise ValueError("temperature > 0, alpha in [0, 1], beta >= 0")


@METHODS.register("diswot")
class DisWOT(Method):
    """DisWOT's semantic and relational similarities used as a distillation loss next to Hinton KD."""

    Config = DisWOTConfig
    name = "diswot"
    pillar = "kd"
    catalog_ids = ("K8",)
    paper = "DisWOT: Student Architecture Search for Distillation WithOut Training"
    arxiv = "2303.15678"

    def __init__(self, cfg: DisWOTConfig, student: nn.Module, teacher):
        super().__init__(cfg)
        self.student, self.teacher = student, teacher

    @classmethod
    def build(cls, cfg, ctx):
        student, teacher = ctx.student(), ctx.teacher()
        probe = torch.zeros(2, *ctx.data.in_shape)
        for who, net in (("student", student), ("teacher.model", teacher.model)):
            f = feature_head(net)[0](probe)
            if f.dim() != 4:
                raise ConfigError(f"{who}: DisWOT needs convolutional feature maps (B, ch, h, w); "
                                  f"{type(net).__name__}'s features are {tuple(f.shape)}")
        return cls(cfg, student, teacher)

    def param_groups(self):
        return {"student": list(self.student.parameters())}

    def loss(self, batch, step):
        x, y = batch["x"], batch["y"]
        keep = y >= 0
        with torch.enable_grad():
            cam_t, f_t = cam_and_features(self.teacher.model, x, y.clamp_min(0))
        cam_t, f_t = cam_t.detach(), f_t.detach()
        cam_s, f_s = cam_and_features(self.student, x, y.clamp_min(0), create_graph=True)
        z_s = self.student.classifier(f_s.flatten(1))
        with torch.no_grad():
            z_t = self.teacher.model.classifier(f_t.flatten(1))
        kd, logs = hinton_terms(z_s, z_t, y, self.cfg.temperature, self.cfg.alpha)
        sem = semantic_distance(cam_t[keep], cam_s[keep]) if keep.any() else kd * 0
        rel = relation_distance(f_t, f_s)
        return {"student": kd + self.cfg.beta * (sem + rel), **logs, "log/sem": sem.detach(), "log/rel": rel.detach()}

    def export(self):
        return self.student
