"""HeLlO: Heavy Labels Out! Dataset Distillation with Label Space Lightening — Yu, Liu, Chen, Ye & Wang,
ICCV 2025, arXiv 2408.08201 (catalog D1).

**The problem.** SRe2L-style methods train the student on soft labels from the teacher, one per
augmented crop per epoch: K x N x C floats (K iterations), 38x the images on ImageNet-1K at
IPC 1. HeLlO ships a tiny *image-to-label projector* instead and generates every label online,
on the augmented batch the student is trained on.

**The projector.** A frozen generic feature model E and a linear head whose weight is a fixed
matrix W0 plus a low-rank update (LoRA-like):

    g(x) = s * (W0 + B A) e(x) + b,        e(x) = E(x) / ||E(x)||,
    labels(x) = softmax(g(x) / T)

with A (r x D), B (C x r), bias b (C) and logit scale s = exp(log_s). As in LoRA, B starts at
zero (A Gaussian / sqrt(D)), so the initial projector *is* the prototype classifier ``s W0 e(x)``.
The factors are fitted so that the projector reproduces the original teacher f's soft labels,

    min_{A, B, b, s}  E_x KL( softmax(f(a(x)) / T) || softmax(g(a(x)) / T) ),

over DSA augmentations a (the protocol's own augmentation, so the fit sees the views the student
will be labelled on) of ``batch_real`` random real training images plus the synthetic images.

**Image refinement** (``refine: true``, optional as in the paper): the synthetic images are a
second parameter group that minimises the same teacher-vs-projector KL on their augmentations,
with gradients through both networks, so the images move to where the cheap projector labels them
like the teacher. Images start from random real images of their class (``init: real``; the paper
starts from representative real patches).

**Our frozen encoder E** (``encoder``). The paper uses CLIP's image encoder (pre-trained on
other data, with no label of the target task) and initialises W0 from CLIP text embeddings of the
class names. Nothing like CLIP exists for Fashion-MNIST or 8x8 digits here, and using the BN
teacher (or another net trained with the labels) would smuggle the teacher in as the "generic"
model. So E is, by default, a ConvNet trained *without labels* on the unlabelled training images
by rotation prediction (Gidaris, Singh & Komodakis, ICLR 2018, arXiv 1803.07728: predict which
of 0/90/180/270 degrees an image was rotated by) - a generic self-supervised feature model that
never read a class label. Alternatives: ``objective: random`` (the seeded random initialisation:
zero training, weakest features) or ``checkpoint`` (any potstill classifier's weights, e.g. a net
trained on other data). E's features are its conv trunk average-pooled to ``pool`` x ``pool``
(D = width * pool^2; ``pool: 0`` flattens it). Use batch norm (or none) in E: with instance norm
every channel is re-centred per image, so its spatial average is nearly the same for every image
and pooled features collapse. E is frozen throughout (eval mode, no gradient to its weights) and,
like CLIP in the paper, is **not counted as label storage**: it is the user's own model, the same
for every IPC. It is written beside the exported set (``synthetic.frozen.safetensors``) so the set
can be re-evaluated; a rotation-trained E is cached in ``cache_dir`` (keyed by its settings and
the training images) so the benchmark's cells train it once.

**W0, the class prototypes** (``prototypes``). The paper's text embeddings cost nothing to ship.
Here:

* ``synthetic`` (default, zero storage): W0 = the normalised mean of e(x) over each class's
  *synthetic* images. The user recomputes it from the shipped images and E (class membership is
  the row order, ``ipc`` rows per class), so nothing extra is stored. During fitting W0 follows
  the current images (recomputed every step, no gradient through it).
* ``real``: W0 = the normalised mean of e(x) over ``prototype_images`` real training images per
  class (0: all); then W0 (C x D floats) must be shipped and **is** counted.

**Label storage** (``label_bytes``) = the shipped tensors, float32: A (r x D) + B (C x r) + b (C) +
log_s (1) [+ W0 (C x D) with ``prototypes: real``] - independent of N and of the number of
epochs. E.g. r = 4, D = 128, C = 10: 4 (4*128 + 10*4 + 10 + 1) = 2252 bytes, against N x C x 4
(4000 at IPC 10) for static per-image soft labels and epochs x N x C x 4 (4 MB for 1000 epochs at
IPC 10) for per-augmentation ones.

**Export** (``labels``): ``projector`` (HeLlO: the set carries the projector, online labels),
``teacher`` (the heavy reference on the same images: the teacher relabels every augmented batch
online, as FKD/SRe2L's stored per-crop labels; ``label_bytes`` is then the teacher's own weights,
and the protocol reports what storing those labels would cost, epochs x N x C x 4) or ``static``
(one stored soft label per image, ``softmax(f(x) / T)`` of the un-augmented image, N x C x 4).
The three share the same training (same images), only the export differs.

**Not verified against the paper / differences.** The paper's code was not available ("coming
soon"); the exact fitting loss, its data (real vs synthetic images, crops), whether LoRA also
adapts layers inside CLIP, the learnable scale and bias, the image-update loss and the patch
selection are our reading of the abstract and summaries. Here the low-rank update is on the head
only, the fit uses KL at temperature T on DSA views, and the refinement uses the same KL.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.config import ConfigError
from ...core.method import Method
from ...core.registry import METHODS
from ...core.teacher import Teacher
from ...data.dsa import DEFAULT_STRATEGY, DSA, parse_strategy
from ...data.synthetic_set import OnlineLabels, SyntheticSet, register_online_labels
from ...losses import kl_divergence
from .base import ClassIndex, initial_images


# --- the frozen generic encoder E --------------------------------------------------------------------
def _default_encoder_model() -> dict:
    return {"name": "convnet", "width": 32, "depth": 3, "norm": "batch", "pooling": "avg", "first_padding": 1}


@dataclass
class EncoderConfig:
    model: dict = field(default_factory=_default_encoder_model)
    checkpoint: str = ""            # weights trained elsewhere (a potstill classifier); empty: built here
    head_outputs: int = 0           # output units of the checkpoint's classifier head (0: the dataset's classes)
    objective: Literal["rotation", "random"] = "rotation"   # without checkpoint: label-free pretext training, or none
    epochs: int = 2                 # rotation: passes over the unlabelled images
    lr: float = 2e-3
    batch_size: int = 128           # images per step (each in its 4 rotations)
    train_size: int = 10000         # unlabelled training images used (0: all)
    shift: int = 1                  # random translation (pixels) while training
    pool: int = 2                   # features: trunk average-pooled to pool x pool (D = width pool^2); 0: flat
    seed: int = 1
    cache_dir: str = ""             # rotation: keep the trained weights here, keyed by these settings and the data

    def __post_init__(self):
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1 or self.train_size < 0 or self.shift < 0 \
                or self.head_outputs < 0 or self.pool < 0:
            raise ValueError("encoder: epochs and batch_size must be >= 1, lr > 0, train_size, shift, head_outputs, "
                             "pool >= 0")


class FrozenEncoder(nn.Module):
    """E(x): the frozen feature model (eval mode, weights without gradient; inputs keep theirs)."""

    def __init__(self, model: nn.Module, pool: int, spec: dict):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.pool = int(pool)
        self.info = dict(spec)          # model spec, in_shape, head_outputs, pool, how it was made
        with torch.no_grad():
            self.dim = int(self(torch.zeros(1, *spec["in_shape"])).shape[1])

    def train(self, mode: bool = True) -> "FrozenEncoder":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool and hasattr(self.model, "features"):
            f = self.model.features(x)
            return F.adaptive_avg_pool2d(f, self.pool).flatten(1) if f.dim() == 4 else f.flatten(1)
        return self.model.embed(x)

    @classmethod
    def rebuild(cls, info: dict, state: dict[str, torch.Tensor]) -> "FrozenEncoder":
        from ...models import build_model

        model = build_model(info["model"], tuple(info["in_shape"]), int(info["head_outputs"]), "encoder.model")
        model.load_state_dict(state)
        return cls(model, info["pool"], info)


def train_rotation(model: nn.Module, x: torch.Tensor, cfg: EncoderConfig) -> float:
    """Rotation prediction (no class label read): each image in its four 90-degree rotations, CE on
    the rotation index. Returns the last epoch's rotation accuracy."""
    from ...data.augment import random_shift

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = cfg.epochs * max(1, -(-len(x) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    hits = total = 0
    for _ in range(cfg.epochs):
        hits = total = 0
        perm = torch.randperm(len(x))
        for i in range(0, len(x), cfg.batch_size):
            xb = random_shift(x[perm[i:i + cfg.batch_size]], cfg.shift).to(dev)
            xr = torch.cat([torch.rot90(xb, k, (2, 3)) for k in range(4)])
            yr = torch.arange(4, device=dev).repeat_interleave(len(xb))
            out = model(xr)
            loss = F.cross_entropy(out, yr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            hits += int((out.argmax(1) == yr).sum())
            total += len(yr)
    model.cpu()
    return hits / max(1, total)


def _cache_file(cfg: EncoderConfig, data) -> Path | None:
    """Where a rotation-trained encoder is kept: a name derived from its settings and the training images."""
    if not cfg.cache_dir or cfg.checkpoint or cfg.objective != "rotation":
        return None
    from ...core.checkpoint import cache_digest

    digest = cache_digest({**asdict(cfg), "cache_dir": ""}, data.train.x.float())
    return Path(cfg.cache_dir) / f"hello_encoder_{digest}.safetensors"


def build_encoder(cfg: EncoderConfig, data, key: str = "method.encoder") -> FrozenEncoder:
    """E: loaded from ``checkpoint``, or built from ``seed`` and (``rotation``) trained on the unlabelled
    training images (kept in ``cache_dir`` if given). Seeded and independent of the caller's random stream."""
    from ...core.checkpoint import atomic_save_safetensors, atomic_write_json, load_module_weights
    from ...models import build_model

    in_shape = tuple(data.in_shape)
    cache = _cache_file(cfg, data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.checkpoint:
            heads, source = cfg.head_outputs or data.num_classes, f"checkpoint {cfg.checkpoint}"
        elif cfg.objective == "rotation":
            heads, source = 4, "rotation prediction on the unlabelled training images"
            if in_shape[1] != in_shape[2]:
                raise ConfigError(f"{key}.objective: rotation needs square images, got {in_shape[1]}x{in_shape[2]}")
        else:
            heads, source = data.num_classes, f"random initialisation (seed {cfg.seed})"
        model = build_model(cfg.model, in_shape, heads, f"{key}.model")
        if not hasattr(model, "embed") and not hasattr(model, "features"):
            raise ConfigError(f"{key}.model: {type(model).__name__} exposes no features (needs embed() or .features)")
        info = {"model": dict(cfg.model), "in_shape": list(in_shape), "head_outputs": heads, "pool": cfg.pool,
                "source": source}
        if cfg.checkpoint:
            load_module_weights(model, cfg.checkpoint, f"{key}.checkpoint")
        elif cache is not None and cache.is_file() and cache.with_suffix(".json").is_file():
            load_module_weights(model, cache, f"{key}.cache_dir")
            info.update({k: v for k, v in json.loads(cache.with_suffix(".json").read_text()).items()
                         if k in ("rotation_acc", "train_images")})
        elif cfg.objective == "rotation":
            x = data.train.x
            if cfg.train_size and cfg.train_size < len(x):
                x = x[torch.randperm(len(x))[:cfg.train_size]]
            info["rotation_acc"] = round(train_rotation(model, x, cfg), 4)
            info["train_images"] = len(x)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                atomic_save_safetensors(model.state_dict(), cache)
                atomic_write_json(cache.with_suffix(".json"), info)
    return FrozenEncoder(model, cfg.pool, info)


@torch.no_grad()
def class_prototypes(encoder: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                     batch: int = 512) -> torch.Tensor:
    """W0: per class, the normalised mean of the normalised features e(x) (a class without images: 0)."""
    dev = next(encoder.parameters()).device
    feats = torch.cat([F.normalize(encoder(x[i:i + batch].to(dev)).float(), dim=1) for i in range(0, len(x), batch)])
    sums = torch.zeros(num_classes, feats.shape[1], device=dev).index_add_(0, y.to(dev), feats)
    return F.normalize(sums, dim=1)


# --- the online label generators ---------------------------------------------------------------------
@register_online_labels
class LowRankProjector(OnlineLabels):
    """HeLlO's projector: ``softmax((s (W0 + B A) e(x) + b) / T)`` on a frozen encoder E."""

    kind = "hello_projector"

    def __init__(self, encoder: FrozenEncoder, w0: torch.Tensor, rank: int, temperature: float,
                 prototypes: str, init_scale: float = 10.0):
        super().__init__()
        k, d = w0.shape
        if d != encoder.dim:
            raise ValueError(f"prototypes have {d} features, the encoder gives {encoder.dim}")
        self.num_classes, self.rank, self.temperature, self.prototypes = k, rank, temperature, prototypes
        self.encoder = encoder
        self.register_buffer("w0", w0.detach().float().clone())
        self.A = nn.Parameter(torch.randn(rank, d) / math.sqrt(d))
        self.B = nn.Parameter(torch.zeros(k, rank))        # zero: the update B A starts at zero
        self.bias = nn.Parameter(torch.zeros(k))
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def weight(self) -> torch.Tensor:
        return self.w0 + self.B @ self.A

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        e = F.normalize(self.encoder(x).float(), dim=1)
        return self.log_scale.exp() * e @ self.weight().t() + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.logits(x) / self.temperature, dim=1)

    def set_prototypes(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """``prototypes: synthetic``: W0 from the given (shipped) images and their classes."""
        self.w0.copy_(class_prototypes(self.encoder, images, labels, self.num_classes))

    # what is shipped (counted) and what the user already has (the encoder, not counted)
    def shipped(self) -> dict[str, torch.Tensor]:
        out = {"A": self.A.detach(), "B": self.B.detach(), "bias": self.bias.detach(),
               "log_scale": self.log_scale.detach().reshape(1)}
        if self.prototypes == "real":
            out["w0"] = self.w0
        return out

    def frozen(self) -> dict[str, torch.Tensor]:
        return dict(self.encoder.model.state_dict())

    def spec(self) -> dict:
        return {"rank": self.rank, "temperature": self.temperature, "prototypes": self.prototypes,
                "num_classes": self.num_classes, "feature_dim": int(self.w0.shape[1]), "encoder": self.encoder.info}

    @classmethod
    def restore(cls, spec, shipped, frozen, images, labels) -> "LowRankProjector":
        encoder = FrozenEncoder.rebuild(spec["encoder"], frozen)
        k, d, r = int(spec["num_classes"]), int(spec["feature_dim"]), int(spec["rank"])
        want = {"A": (r, d), "B": (k, r), "bias": (k,), "log_scale": (1,)}
        if spec["prototypes"] == "real":
            want["w0"] = (k, d)
        got = {n: tuple(t.shape) for n, t in shipped.items()}
        if got != want:
            raise ValueError(f"projector tensors {got} do not match the spec {want}")
        proj = cls(encoder, shipped.get("w0", torch.zeros(k, d)), r, float(spec["temperature"]), spec["prototypes"])
        with torch.no_grad():
            for n in ("A", "B", "bias"):
                getattr(proj, n).copy_(shipped[n])
            proj.log_scale.copy_(shipped["log_scale"][0])
        if spec["prototypes"] == "synthetic":
            proj.set_prototypes(images, labels)
        return proj.requires_grad_(False)


@register_online_labels
class TeacherLabels(OnlineLabels):
    """The heavy reference: the teacher relabels every augmented batch, ``softmax(f(a(x)) / T)`` - what
    SRe2L/FKD store as per-crop soft labels (epochs x N x C floats). Shipping the generator means
    shipping the teacher, so ``label_bytes`` is the teacher's weights."""

    kind = "teacher"

    def __init__(self, model: nn.Module, temperature: float, num_classes: int, model_spec: dict | None = None,
                 in_shape: tuple[int, ...] | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.temperature, self.num_classes = temperature, num_classes
        self.model_spec, self.in_shape = model_spec, in_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.model(x).float() / self.temperature, dim=1)

    def shipped(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    def spec(self) -> dict:
        if self.model_spec is None or self.in_shape is None:
            raise ValueError("the teacher's model spec is unknown (built from a module, not a recipe)")
        return {"model": self.model_spec, "in_shape": list(self.in_shape), "temperature": self.temperature,
                "num_classes": self.num_classes}

    @classmethod
    def restore(cls, spec, shipped, frozen, images, labels) -> "TeacherLabels":
        from ...models import build_model

        model = build_model(spec["model"], tuple(spec["in_shape"]), int(spec["num_classes"]), "teacher.model")
        model.load_state_dict(shipped)
        return cls(model, float(spec["temperature"]), int(spec["num_classes"]), spec["model"], tuple(spec["in_shape"]))


# --- the method -----------------------------------------------------------------------------------------
@dataclass
class HeLlOConfig:
    ipc: int = 10
    init: Literal["real", "noise"] = "real"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    rank: int = 4                    # r of the low-rank update B A (0: prototypes, scale and bias only)
    prototypes: Literal["synthetic", "real"] = "synthetic"   # W0 from the shipped images (free) or real ones (counted)
    prototype_images: int = 0        # prototypes: real - real images per class (0: all)
    temperature: float = 1.0         # T of the teacher's labels and of the projector's
    init_scale: float = 10.0         # initial logit scale s of the cosine prototype classifier
    augment: str = DEFAULT_STRATEGY  # DSA views the projector is fitted on ("none": off)
    batch_real: int = 128            # augmented real images per fitting step (0: synthetic images only)
    refine: bool = False             # also update the images to reduce the teacher-vs-projector KL
    labels: Literal["projector", "teacher", "static"] = "projector"   # what the exported set carries

    def __post_init__(self):
        if self.ipc < 1 or self.rank < 0 or self.prototype_images < 0 or self.batch_real < 0:
            raise ValueError(f"need ipc >= 1, rank >= 0, prototype_images >= 0, batch_real >= 0; got ipc={self.ipc}, "
                             f"rank={self.rank}, prototype_images={self.prototype_images}, "
                             f"batch_real={self.batch_real}")
        if not self.temperature > 0 or not self.init_scale > 0:
            raise ValueError(f"temperature and init_scale must be > 0, got {self.temperature}, {self.init_scale}")
        try:
            parse_strategy(self.augment)
        except ValueError as e:
            raise ValueError(f"augment: {e}") from None


@METHODS.register("hello")
class HeLlO(Method):
    """HeLlO: ship a low-rank image-to-label projector on a frozen encoder instead of soft labels."""

    Config = HeLlOConfig
    name = "hello"
    pillar = "dataset"
    catalog_ids = ("D1",)
    paper = "Heavy Labels Out! Dataset Distillation with Label Space Lightening"
    arxiv = "2408.08201"

    def __init__(self, cfg: HeLlOConfig, data, teacher: nn.Module, encoder: FrozenEncoder,
                 teacher_spec: dict | None = None):
        super().__init__(cfg)
        self.num_classes, self.in_shape = data.num_classes, tuple(data.in_shape)
        self.source = {"dataset": data.name, "normalization": data.normalization, "class_names": data.class_names}
        self.real = ClassIndex(data.train, data.num_classes)
        k, ipc = data.num_classes, cfg.ipc
        x = initial_images(self.real, k, ipc, cfg.init, self.in_shape)
        self.images = nn.Parameter(x.clone(), requires_grad=cfg.refine)
        self.register_buffer("labels", torch.arange(k).repeat_interleave(ipc))
        self.teacher = Teacher(teacher)             # frozen, eval mode, not checkpointed
        self.teacher_spec = teacher_spec
        if cfg.prototypes == "real":
            xs = [self.real.sample(c, cfg.prototype_images or len(self.real.rows[c])) for c in range(k)]
            w0 = class_prototypes(encoder, torch.cat(xs), torch.arange(k).repeat_interleave(
                torch.tensor([len(v) for v in xs])), k)
        else:
            w0 = class_prototypes(encoder, self.images.detach(), self.labels, k)
        self.projector = LowRankProjector(encoder, w0, cfg.rank, cfg.temperature, cfg.prototypes, cfg.init_scale)
        self.dsa = DSA(cfg.augment)

    @classmethod
    def build(cls, cfg, ctx):
        spec = getattr(ctx.teacher_spec, "model", None)
        return cls(cfg, ctx.data, ctx.teacher().model, build_encoder(cfg.encoder, ctx.data), spec)

    def train_data(self, bundle):
        return None

    def param_groups(self):
        p = self.projector
        groups = {"projector": [p.A, p.B, p.bias, p.log_scale]}
        if self.cfg.refine:
            groups["images"] = [self.images]
        return groups

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return self.dsa(x, int(torch.randint(2**31 - 1, (1,)))) if self.dsa else x

    def loss(self, batch, step):
        cfg, f, g = self.cfg, self.teacher.model, self.projector
        dev = self.images.device
        if cfg.prototypes == "synthetic":
            g.set_prototypes(self.images.detach(), self.labels)
        syn = self.augment(self.images)
        if cfg.refine:                                       # gradients reach the images through f and g
            t_syn, p_syn = f(syn), g.logits(syn)
        else:
            with torch.no_grad():
                t_syn = f(syn)
            p_syn = g.logits(syn)
        kl_syn = kl_divergence(t_syn, p_syn, cfg.temperature)
        out = {"log/kl_syn": kl_syn.detach(), "log/scale": g.log_scale.exp().detach(),
               "log/agree_syn": (t_syn.argmax(1) == p_syn.argmax(1)).float().mean().detach()}
        fit = kl_syn
        if cfg.batch_real:
            idx = torch.randint(len(self.real.data.x), (cfg.batch_real,))
            real = self.augment(self.real.data.x[idx].to(dev))
            with torch.no_grad():
                t_real = f(real)
            p_real = g.logits(real)
            kl_real = kl_divergence(t_real, p_real, cfg.temperature)
            n_s, n_r = len(syn), len(real)
            fit = (n_s * kl_syn + n_r * kl_real) / (n_s + n_r)
            out["log/kl_real"] = kl_real.detach()
        out["projector"] = fit
        if cfg.refine:
            out["images"] = kl_syn
        return out

    @torch.no_grad()
    def export(self) -> SyntheticSet:
        cfg, k = self.cfg, self.num_classes
        x, y = self.images.detach().cpu(), self.labels.cpu()
        meta = {"method": self.name, "augmentation": "none", **self.source, "rank": cfg.rank,
                "prototypes": cfg.prototypes, "encoder": self.projector.encoder.info, "export_labels": cfg.labels}
        if cfg.labels == "static":
            f = self.teacher.model
            probs = torch.cat([F.softmax(f(x[i:i + 500].to(self.images.device)).float() / cfg.temperature, 1).cpu()
                               for i in range(0, len(x), 500)])
            meta["labels"] = (f"static: one soft label per image, softmax(teacher(x) / {cfg.temperature:g}), "
                              "N x C float32")
            return SyntheticSet(x, probs, k, meta)
        if cfg.labels == "teacher":
            gen = TeacherLabels(copy.deepcopy(self.teacher.model).cpu(), cfg.temperature, k, self.teacher_spec,
                                self.in_shape)
            meta["labels"] = (f"online: the teacher relabels every augmented batch, softmax(teacher(a(x)) / "
                              f"{cfg.temperature:g}) (stored per augmentation: epochs x N x C float32)")
            return SyntheticSet(x, y, k, meta, gen)
        gen = copy.deepcopy(self.projector).cpu().requires_grad_(False)
        if cfg.prototypes == "synthetic":
            gen.set_prototypes(x, y)
        meta["labels"] = (f"online: HeLlO projector softmax((s (W0 + B A) e(a(x)) + b) / {cfg.temperature:g}), rank "
                          f"{cfg.rank}, W0 from {cfg.prototypes} prototypes; shipped: "
                          f"{', '.join(sorted(gen.shipped()))} (frozen encoder not counted)")
        return SyntheticSet(x, y, k, meta, gen)

    def evaluate(self, data, batch_size: int = 512):   # judged by the protocol
        return {}


__all__ = ["HeLlO", "HeLlOConfig", "EncoderConfig", "FrozenEncoder", "LowRankProjector", "TeacherLabels",
           "build_encoder", "class_prototypes", "train_rotation"]
