"""DisWOT: Student Architecture Search for Distillation WithOut Training — Dong, Li & Wei, CVPR 2023,
arXiv 2303.15678 (catalog K8).

Which student will distil best from a teacher can be guessed before training anything: DisWOT
compares a randomly initialised teacher and candidate student on one batch with two similarity
matrices, each row-normalised (``F.normalize(., dim=1)``) as in the authors' published core code:

* semantic (the score): the Grad-CAM class-channel weights of the classifier, g = ∂CE/∂W_fc
  (C × d), one batch of labelled images; the authors compare per-class channel Gram matrices,
  which needs equal widths, so to rank students of different widths we compare the class Gram
  matrices instead (C × C, independent of d):
      D_sem = ||norm(g_T g_T^T) − norm(g_S g_S^T)||²_F / C
* relational: the samples' similarity G = f f^T of the flattened pre-pooling feature maps,
      D_rel = ||norm(G^T) − norm(G^S)||²_F / B²
* score = −(D_sem + D_rel): higher = more alike = expected to distil better. The score of a
  random network varies with its initialisation: average it over several (``inits`` in the
  benchmark); the teacher's matrices are computed once per initialisation (:func:`similarity_matrices`).

``evolve`` searches a space of ConvNet students (width, depth) with this score under a parameter
budget: a population of random candidates, each generation mutating one gene of the best half.
Nothing is trained; a score costs one forward/backward pass of the student (and of the teacher once).

``diswot`` (the method) uses DisWOT's similarities as a distillation loss next to Hinton KD on a
trained teacher: L = KD + β (D_sem + D_rel), where, so that it is differentiable in the student's
activations, the semantic term compares spatial Grad-CAM maps CAM_i = ReLU(Σ_ch a_{i,ch} F_{i,ch}),
a_{i,ch} = mean_{h,w} ∂z_{i,y_i}/∂F_{i,ch} (resized to a common h × w, L2-normalised):
D_cam = mean_i ||CAM^T_i − CAM^S_i||². An earlier version scored students with D_cam and a cosine
relation matrix; its ranking was worse (see benchmarks/results/kd_seed.md).
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


def _conv_features(trunk: nn.Module, x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    f = trunk(x)
    if f.dim() != 4:
        raise ConfigError(f"DisWOT needs convolutional feature maps (B, ch, h, w); {type(model).__name__}'s "
                          f"features are {tuple(f.shape)}")
    return f


def cam_and_features(model: nn.Module, x: torch.Tensor, y: torch.Tensor, create_graph: bool = False):
    """(Grad-CAM maps (B, h, w) of each sample's class, feature maps (B, ch, h, w))."""
    trunk, head = feature_head(model)
    f = _conv_features(trunk, x, model)
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


def relation_matrix(f: torch.Tensor) -> torch.Tensor:
    """Row-normalised sample similarity ``norm(f f^T)`` of flattened features (B × B)."""
    f = f.flatten(1)
    return F.normalize(f @ f.T, dim=1)


def relation_distance(f_t: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
    """``||norm(G^T) - norm(G^S)||^2_F / B^2`` with ``G = f f^T``."""
    return (relation_matrix(f_t) - relation_matrix(f_s)).pow(2).sum() / len(f_t) ** 2


def classifier_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂CE/∂W of the classifier's last linear layer (C × d), the pre-pooling feature maps)."""
    trunk, head = feature_head(model)
    last = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ConfigError(f"DisWOT needs a linear classifier head, {type(model).__name__} has none")
    f = _conv_features(trunk, x, model)
    g = torch.autograd.grad(F.cross_entropy(head(f.flatten(1)), y), last[-1].weight)[0]
    return g, f.detach()


def similarity_matrices(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DisWOT's two matrices of one network on one batch: (class Gram C × C, sample relations B × B)."""
    g, f = classifier_gradient(model, x, y)
    return F.normalize(g @ g.T, dim=1), relation_matrix(f)


def score_from(t: tuple[torch.Tensor, torch.Tensor], s: tuple[torch.Tensor, torch.Tensor]) -> float:
    """``-(D_sem + D_rel)`` from two networks' :func:`similarity_matrices`."""
    d_sem = (t[0] - s[0]).pow(2).sum() / len(t[0])
    d_rel = (t[1] - s[1]).pow(2).sum() / len(t[1]) ** 2
    return -float(d_sem + d_rel)


def diswot_score(teacher: nn.Module, student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """−(D_sem + D_rel) of the two networks on one batch (both usually randomly initialised)."""
    return score_from(similarity_matrices(teacher, x, y), similarity_matrices(student, x, y))


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
