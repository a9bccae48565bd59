"""Linear Projections of Teacher Embeddings for Few-Class Distillation (LELP) — Loo, Iliopoulos, Hu &
Vee, arXiv 2409.20449 (catalog K10).

With two or three classes a teacher's soft labels carry little ("dark knowledge" needs many
classes). LELP finds structure inside each class in the teacher's final embeddings e(x) and
hands it to the student as S pseudo-subclasses per class (paper §3):

1. remove what the classifier reads: project the embeddings onto the null space of the teacher's
   classifier weights W (C × d),  ē = (I − W⁺W) e   (KD already passes on W's directions);
2. per class c, PCA of its training points' ē: the top-S directions v_{c,1..S}, mixed by a random
   S × S orthonormal matrix Q_c so that every mixed direction u_{c,s} = Σ_j Q_{c,sj} v_{c,j} has the
   same variance in expectation (σ̄_c² = the mean of the S eigenvalues);
3. the teacher's distribution over the C·S pseudo-subclasses (the paper's Eq. 5): its class
   probability split by a softmax over the projections at subclass temperature β,
      z_{c,s}(x) = ⟨ē(x) − μ_c, u_{c,s}⟩ / σ̄_c,
      q_{c,s}(x) = softmax(z^T(x) / τ)_c · softmax_s(z_{c,s}(x) / β);
4. the student has a C·S head and learns q (one cross-entropy over all C·S outputs, as subclass
   distillation, Müller et al. 2020), plus CE on the true class from its summed subclass mass:
      L = α · τ² · KL(q || softmax(z^S / τ)) + (1 − α) · CE(y, Σ_s softmax(z^S)_{c,s}).

The student's class prediction is the class of its largest subclass mass (``export`` sums the
subclass probabilities). The pseudo-label of a training point is (its class, the subclass of its
largest projection): a refinement of the true classes (``pseudo_labels``).

Our reading where the text available to us is silent: the projections are centred on the class
mean μ_c and scaled by σ̄_c (so β is free of the embedding's scale); β defaults to τ (the paper's
grid of β was not available to us; at β = 1 the unit-scale projections split a class so sharply
that a small student learnt the digits task worse than KD: 54% vs 82% validation accuracy, 80
steps, against 80% at β = 4); ``rotate: false`` keeps the plain principal directions. The paper
runs α = 0 (distillation only); the recipes use the α of our KD recipe so the two rows differ
only in the targets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.config import ConfigError
from ...core.method import Method
from ...core.registry import METHODS
from ...core.teacher import Teacher
from ...losses import soft_target_kd


@dataclass
class LELPConfig:
    k: int = 5                    # S: pseudo-subclasses (principal directions) per class
    beta: float = 4.0             # β: subclass temperature of the split within a class (= τ by default)
    temperature: float = 4.0      # τ: temperature of the class part (and of the student), as KD
    alpha: float = 0.9            # weight of the distillation term (1 − α on the true-class CE)
    rotate: bool = True           # mix the S directions by a random orthonormal matrix (equal variance)
    seed: int = 0                 # draws the mixing matrices
    max_points: int = 20000       # training points used for the PCA

    def __post_init__(self):
        if self.k < 1 or self.beta <= 0 or self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise ValueError("k >= 1, beta > 0, temperature > 0, alpha in [0, 1]")


def null_space_projector(w: torch.Tensor) -> torch.Tensor:
    """I − W⁺W: the projector onto the directions the classifier rows W (C × d) do not read."""
    return torch.eye(w.shape[1], dtype=w.dtype) - torch.linalg.pinv(w) @ w


def class_directions(emb: torch.Tensor, y: torch.Tensor, num_classes: int, k: int):
    """Per class: mean (C, d), top-k principal directions (C, k, d) and their projections' std (C, k)."""
    d = emb.shape[1]
    mu, v, sd = torch.zeros(num_classes, d), torch.zeros(num_classes, k, d), torch.ones(num_classes, k)
    for c in range(num_classes):
        e = emb[y == c]
        if len(e) < 2:
            raise ConfigError(f"LELP: class {c} has {len(e)} training points; need at least 2 for its directions")
        mu[c] = e.mean(0)
        _, s, vh = torch.linalg.svd(e - mu[c], full_matrices=False)
        kk = min(k, len(s))
        v[c, :kk], sd[c, :kk] = vh[:kk], (s[:kk] / (len(e) - 1) ** 0.5).clamp_min(1e-6)
    return mu, v, sd


def mix_directions(v: torch.Tensor, sd: torch.Tensor, seed: int = 0):
    """Per class, u = Q v for a random orthonormal Q (S × S), and σ̄ = √(mean eigenvalue).

    Each mixed direction's variance Σ_j Q_sj² σ_j² has expectation mean_j σ_j² (a row of a random
    orthonormal matrix is uniform on the sphere), so no subclass is tied to the top component."""
    g = torch.Generator().manual_seed(seed)
    c, k, _ = v.shape
    q = torch.linalg.qr(torch.randn(c, k, k, generator=g, dtype=v.dtype))[0]
    return torch.einsum("csj,cjd->csd", q, v), sd.pow(2).mean(1).sqrt()


class SubclassHead(nn.Module):
    """Wraps a C·k-output student: ``forward`` gives class logits log Σ_j exp(z_{c,j})."""

    def __init__(self, net: nn.Module, num_classes: int, k: int):
        super().__init__()
        self.net, self.num_classes, self.k = net, num_classes, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return torch.logsumexp(z.view(len(z), self.num_classes, self.k), dim=2)

    def export_meta(self) -> dict:
        return {"subclasses": self.k}          # potstill.load_model rebuilds the wrapper


@METHODS.register("lelp")
class LELP(Method):
    """LELP: pseudo-subclasses from linear projections of teacher embeddings for few-class distillation."""

    Config = LELPConfig
    name = "lelp"
    pillar = "kd"
    catalog_ids = ("K10",)
    paper = "Linear Projections of Teacher Embeddings for Few-Class Distillation"
    arxiv = "2409.20449"
    cacheable_teacher = False         # set per instance: True when the embedding is a tap (``features``)

    def __init__(self, cfg: LELPConfig, student: nn.Module, teacher, num_classes: int, directions):
        super().__init__(cfg)
        self.student, self.teacher, self.num_classes = student, teacher, num_classes
        self.cacheable_teacher = "features" in teacher.tap_names
        mu, v, sd, proj = directions
        for name, t in (("mu", mu), ("v", v), ("sd", sd), ("proj", proj)):
            self.register_buffer(name, t.float(), persistent=False)

    @classmethod
    def build(cls, cfg, ctx):
        from ...models import build_model

        data, c = ctx.data, ctx.data.num_classes
        if ctx.student_module is not None:      # Python API: the module must already have C·k outputs
            student = ctx.student()
        elif ctx.student_spec is None:
            raise ConfigError("this method needs a student: add a 'student: {name: <model>, ...}' section")
        else:
            student = build_model(ctx.student_spec, data.in_shape, c * cfg.k, "student")
        teacher = ctx.teacher()
        head = getattr(teacher.model, "classifier", None)
        if not isinstance(head, nn.Linear) or not hasattr(teacher.model, "embed"):
            raise ConfigError("teacher.model: LELP reads the teacher's final embeddings (a model with embed() and a "
                              "linear classifier, e.g. convnet)")
        proj = null_space_projector(head.weight.detach().float())
        keep = data.train.y >= 0
        x, y = data.train.x[keep][:cfg.max_points], data.train.y[keep][:cfg.max_points]
        with torch.no_grad():
            emb = torch.cat([teacher.model.embed(x[i:i + 512]) for i in range(0, len(x), 512)]) @ proj
            trunk = getattr(teacher.model, "features", None)   # embed = features(x).flatten(1) (e.g. convnet)?
            if isinstance(trunk, nn.Module) and torch.equal(trunk(x[:4]).flatten(1), teacher.model.embed(x[:4])):
                teacher = Teacher(teacher.model, ("features",))    # tapped: teacher.cache stores it per example
        mu, v, sd = class_directions(emb, y, c, cfg.k)
        if cfg.rotate:
            v, sd = mix_directions(v, sd, cfg.seed)
        else:
            sd = sd.pow(2).mean(1).sqrt()
        return cls(cfg, student, teacher, c, (mu, v, sd, proj))

    def projections(self, e: torch.Tensor) -> torch.Tensor:
        """z_{c,s} = ⟨ē − μ_c, u_{c,s}⟩ / σ̄_c for embeddings e (B, d): (B, C, S)."""
        coord = torch.einsum("bd,csd->bcs", e @ self.proj, self.v) - torch.einsum("cd,csd->cs", self.mu, self.v)[None]
        return coord / self.sd[None, :, None]

    def teacher_embed_logits(self, x: torch.Tensor, index: torch.Tensor | None = None):
        """The teacher's final embedding e(x) and logits (from its cache when one is attached)."""
        with torch.no_grad():
            if self.cacheable_teacher:
                out = self.teacher(x, index=index)
                return out.features["features"].flatten(1).float(), out.logits.float()
            e = self.teacher.model.embed(x)
            return e.float(), self.teacher.model.classifier(e).float()

    def teacher_targets(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """q_{c,s} = softmax(z^T / τ)_c · softmax_s(z_{c,s} / β), flattened to (B, C·S); rows sum to 1."""
        e, z = self.teacher_embed_logits(x, index)
        p = F.softmax(z / self.cfg.temperature, -1)
        split = F.softmax(self.projections(e) / self.cfg.beta, -1)
        return (p[:, :, None] * split).flatten(1)

    def pseudo_labels(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pseudo-subclass of each point: y·S + the subclass of its largest projection within class y."""
        with torch.no_grad():
            z = self.projections(self.teacher_embed_logits(x)[0])
        return y * self.cfg.k + z[torch.arange(len(x)), y].argmax(1)

    def param_groups(self):
        return {"student": list(self.student.parameters())}

    def loss(self, batch, step):
        x, y = batch["x"], batch["y"]
        zs = self.student(x)
        t = self.cfg.temperature               # τ·log q as logits at temperature τ: the target is q itself
        soft = soft_target_kd(zs, t * self.teacher_targets(x, batch.get("index")).clamp_min(1e-12).log(), t)
        keep = y >= 0
        class_logits = torch.logsumexp(zs.view(len(zs), self.num_classes, self.cfg.k), dim=2)
        hard = F.cross_entropy(class_logits[keep], y[keep]) if keep.any() else zs.sum() * 0
        return {"student": self.cfg.alpha * soft + (1 - self.cfg.alpha) * hard,
                "log/soft": soft.detach(), "log/hard": hard.detach()}

    def export(self):
        return SubclassHead(self.student, self.num_classes, self.cfg.k)
