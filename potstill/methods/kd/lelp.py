"""Linear Projections of Teacher Embeddings for Few-Class Distillation (LELP) — Loo, Iliopoulos, Hu &
Vee, arXiv 2409.20449 (catalog K10).

With two or three classes a teacher's soft labels carry little ("dark knowledge" needs many
classes). LELP finds structure inside each class in the teacher's final embeddings e(x) and
hands it to the student as pseudo-subclasses:

1. remove what the classifier reads: project the embeddings onto the null space of the teacher's
   classifier weights W (C × d),  ē = (I − W⁺W) e;
2. per class c, PCA of its training points' ē: the top-k directions v_{c,1..k} (unit vectors),
   with the projections' standard deviations σ_{c,j} and the class mean μ_c;
3. sub-logits: class c splits into k subclasses,  z_{c,j}(x) = z_c(x) + s · ⟨ē(x) − μ_c, v_{c,j}⟩ / σ_{c,j},
   so the subclasses of a class share its logit and differ by where the point lies along the
   class's main directions of variation;
4. the student has a C·k head; the loss is
      L = α · T² · KL(softmax(z^T_sub / T) || softmax(z^S_sub / T)) + (1 − α) · CE(y, p^S_class),
   p^S_class(c) = Σ_j softmax(z^S_sub)_{c,j} (as in subclass distillation, Müller et al. 2020).

The student's class prediction is the class of its largest subclass mass (``export`` sums the
subclass probabilities). The pseudo-label of a training point is (its class, the direction it
projects most on): a refinement of the true classes (``pseudo_labels``).

The paper's exact sub-logit form and scaling were not available to us: step 3 (with ``scale`` s)
is our reading of "linear projections of teacher embeddings", written down here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.config import ConfigError
from ...core.method import Method
from ...core.registry import METHODS
from ...losses import soft_target_kd


@dataclass
class LELPConfig:
    k: int = 5                    # pseudo-subclasses per class
    scale: float = 1.0            # s: how far the sub-logits spread around the class logit
    temperature: float = 4.0
    alpha: float = 0.9
    max_points: int = 20000       # training points used for the PCA

    def __post_init__(self):
        if self.k < 1 or self.scale < 0 or self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise ValueError("k >= 1, scale >= 0, temperature > 0, alpha in [0, 1]")


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
    cacheable_teacher = False         # the teacher's embeddings are read through a hook every step

    def __init__(self, cfg: LELPConfig, student: nn.Module, teacher, num_classes: int, directions):
        super().__init__(cfg)
        self.student, self.teacher, self.num_classes = student, teacher, num_classes
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
        mu, v, sd = class_directions(emb, y, c, cfg.k)
        return cls(cfg, student, teacher, c, (mu, v, sd, proj))

    def teacher_sub_logits(self, x: torch.Tensor) -> torch.Tensor:
        """z^T_{c,j} = z^T_c + s ⟨ē − μ_c, v_{c,j}⟩ / σ_{c,j}, flattened to (B, C·k)."""
        with torch.no_grad():
            e = self.teacher.model.embed(x)
            z = self.teacher.model.classifier(e)
            pe = e @ self.proj
            coord = torch.einsum("bd,ckd->bck", pe, self.v) - torch.einsum("cd,ckd->ck", self.mu, self.v)[None]
            sub = z[:, :, None] + self.cfg.scale * coord / self.sd[None]
        return sub.flatten(1)

    def pseudo_labels(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pseudo-subclass of each point: y·k + the direction of its largest teacher sub-logit within y."""
        sub = self.teacher_sub_logits(x).view(len(x), self.num_classes, self.cfg.k)
        return y * self.cfg.k + sub[torch.arange(len(x)), y].argmax(1)

    def param_groups(self):
        return {"student": list(self.student.parameters())}

    def loss(self, batch, step):
        x, y = batch["x"], batch["y"]
        zs = self.student(x)
        soft = soft_target_kd(zs, self.teacher_sub_logits(x), self.cfg.temperature)
        keep = y >= 0
        class_logits = torch.logsumexp(zs.view(len(zs), self.num_classes, self.cfg.k), dim=2)
        hard = F.cross_entropy(class_logits[keep], y[keep]) if keep.any() else zs.sum() * 0
        return {"student": self.cfg.alpha * soft + (1 - self.cfg.alpha) * hard,
                "log/soft": soft.detach(), "log/hard": hard.detach()}

    def export(self):
        return SubclassHead(self.student, self.num_classes, self.cfg.k)
