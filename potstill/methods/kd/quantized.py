"""Model compression via distillation and quantization — Polino, Pascanu & Alistarh, ICLR 2018,
arXiv 1802.05668 (catalog K9). Two methods, both distilling a full-precision teacher:

``quantized_kd`` — quantized distillation (§3, Algorithm 1). The student keeps full-precision
"shadow" weights w; every step its forward pass uses Q(w) (``potstill/models/quantize.py``:
buckets of ``bucket`` weights on 2^bits levels), the loss is taken there, and its gradient
updates w:

    L = α · T² · KL(softmax(z_T / T) || softmax(z_S(Q(w)) / T)) + (1 − α) · CE(z_S(Q(w)), y)
    w ← w − η ∇_{Q(w)} L                       (the paper's defaults: T = 2, α = 0.7)

At the end the student is Q(w): that is what is exported and evaluated.

``diff_quant`` — differentiable quantization (§4). The weights of a trained full-precision student
(``student_init``) stay fixed; each quantized tensor gets s = 2^bits learnable points p (initialised
at the weights' quantiles), every weight takes its nearest point, and the distillation loss trains
the points: dL/dp_j = Σ_{i → p_j} dL/dQ_i. The points are kept sorted.

Both quantize every conv/linear kernel (biases and normalisation parameters stay fp32) and report
``weight_bytes`` (packed: ``bits`` per weight + per-bucket scale and offset; ``diff_quant``:
``bits`` per weight + its points) next to ``fp32_bytes`` in their evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.func import functional_call

from ...core.checkpoint import init_from
from ...core.method import Method
from ...core.registry import METHODS
from ...models.quantize import (fp32_bytes, nearest_point, packed_bytes, quantizable, quantize_uniform, straight_through,
                               with_weights)
from .hinton import hinton_terms


@dataclass
class QuantizedKDConfig:
    bits: int = 4
    bucket: int = 256
    stochastic: bool = False      # stochastic rounding in training (the export is always deterministic)
    temperature: float = 2.0
    alpha: float = 0.7            # weight of the soft-target term

    def __post_init__(self):
        if not 1 <= self.bits <= 16 or self.bucket < 1:
            raise ValueError("bits in [1, 16] and bucket >= 1")
        if self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise ValueError("temperature > 0 and alpha in [0, 1]")


@METHODS.register("quantized_kd")
class QuantizedKD(Method):
    """Quantized distillation: KD through a b-bit forward pass, updates on full-precision shadow weights."""

    Config = QuantizedKDConfig
    name = "quantized_kd"
    pillar = "kd"
    catalog_ids = ("K9",)
    paper = "Model compression via distillation and quantization"
    arxiv = "1802.05668"
    cacheable_teacher = True

    def __init__(self, cfg: QuantizedKDConfig, student: nn.Module, teacher):
        super().__init__(cfg)
        self.student, self.teacher = student, teacher
        self.names = quantizable(student)

    def quantized_weights(self, stochastic: bool = False) -> dict[str, torch.Tensor]:
        params = dict(self.student.named_parameters())
        return {n: quantize_uniform(params[n], self.cfg.bits, self.cfg.bucket, stochastic) for n in self.names}

    def param_groups(self):
        return {"student": list(self.student.parameters())}

    def loss(self, batch, step):
        params = dict(self.student.named_parameters())
        q = self.quantized_weights(self.cfg.stochastic)
        z = functional_call(self.student, {n: straight_through(params[n], q[n]) for n in self.names}, (batch["x"],),
                            strict=False)
        t = self.teacher(batch["x"], index=batch.get("index"))
        loss, logs = hinton_terms(z, t.logits, batch["y"], self.cfg.temperature, self.cfg.alpha)
        return {"student": loss, **logs}

    @torch.no_grad()
    def export(self):
        """A copy of the student holding Q(w) (the shadow weights stay in the method for training)."""
        return with_weights(self.student, self.quantized_weights())

    @torch.no_grad()
    def evaluate(self, data, batch_size: int = 512):
        from ...eval.classification import evaluate_classifier

        return {**evaluate_classifier(self.export(), data, batch_size),
                "weight_bytes": float(packed_bytes(self.student, self.cfg.bits, self.cfg.bucket, self.names)),
                "fp32_bytes": float(fp32_bytes(self.student))}


@dataclass
class DiffQuantConfig:
    bits: int = 2
    student_init: str = ""        # the trained full-precision student (export/model.safetensors)
    temperature: float = 2.0
    alpha: float = 0.7

    def __post_init__(self):
        if not 1 <= self.bits <= 8:
            raise ValueError("bits in [1, 8]")


@METHODS.register("diff_quant")
class DiffQuant(Method):
    """Differentiable quantization: 2^b learned points per tensor, trained by distillation, weights fixed."""

    Config = DiffQuantConfig
    name = "diff_quant"
    pillar = "kd"
    catalog_ids = ("K9",)
    paper = "Model compression via distillation and quantization"
    arxiv = "1802.05668"
    cacheable_teacher = True

    def __init__(self, cfg: DiffQuantConfig, student: nn.Module, teacher):
        super().__init__(cfg)
        self.student, self.teacher = student, teacher
        for p in self.student.parameters():
            p.requires_grad_(False)
        self.names = quantizable(student)
        params = dict(student.named_parameters())
        s = 2 ** cfg.bits
        q = torch.linspace(0, 1, s + 2)[1:-1]            # the points start at the weights' quantiles
        self.points = nn.ParameterList(nn.Parameter(torch.quantile(params[n].detach().float().reshape(-1), q))
                                       for n in self.names)

    @classmethod
    def build(cls, cfg, ctx):
        if not cfg.student_init:
            from ...core.config import ConfigError

            raise ConfigError("method.student_init: diff_quant quantizes a trained student; give its weights")
        return cls(cfg, init_from(ctx.student(), cfg.student_init, "method.student_init"), ctx.teacher())

    def param_groups(self):
        return {"points": list(self.points)}

    def quantized(self) -> dict[str, torch.Tensor]:
        params = dict(self.student.named_parameters())
        return {n: nearest_point(params[n], p) for n, p in zip(self.names, self.points)}

    def loss(self, batch, step):
        if step > 0:
            with torch.no_grad():                       # keep the points sorted (the paper re-sorts them)
                for p in self.points:
                    p.copy_(p.sort().values)
        z = functional_call(self.student, self.quantized(), (batch["x"],), strict=False)
        t = self.teacher(batch["x"], index=batch.get("index"))
        loss, logs = hinton_terms(z, t.logits, batch["y"], self.cfg.temperature, self.cfg.alpha)
        return {"points": loss, **logs}

    @torch.no_grad()
    def export(self):
        return with_weights(self.student, self.quantized())

    @torch.no_grad()
    def evaluate(self, data, batch_size: int = 512):
        from ...eval.classification import evaluate_classifier

        params = dict(self.student.named_parameters())
        size = sum((params[n].numel() * self.cfg.bits + 7) // 8 + 4 * len(p) for n, p in zip(self.names, self.points))
        size += sum(4 * p.numel() for n, p in params.items() if n not in self.names)
        return {**evaluate_classifier(self.export(), data, batch_size), "weight_bytes": float(size),
                "fp32_bytes": float(fp32_bytes(self.student))}
