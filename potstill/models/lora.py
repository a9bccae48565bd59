"""Low-rank adapters (LoRA; Hu et al., arXiv 2106.09685) for ``nn.Linear`` and ``nn.Conv2d``.

A frozen layer W is replaced by W + (alpha / r) B A with a trainable rank-r pair (A, B); B starts
at zero, so the adapted network equals the original one until B is trained:

* ``nn.Linear(i, o)``:   A: (r, i), B: (o, r),   y = W x + b + (alpha / r) B A x;
* ``nn.Conv2d(i, o, k)``: A: a conv i -> r with W's kernel, stride, padding, dilation and groups;
  B: a 1x1 conv r -> o,  y = conv(x; W) + (alpha / r) conv1x1(conv(x; A); B).

:func:`add_lora` wraps every such layer of a module in place and freezes everything else;
:func:`lora_parameters` lists the adapters; :func:`merge_lora` folds (alpha / r) B A into W (one
plain forward pass, e.g. for export) and :func:`unmerge_lora` takes it out again.

Written here rather than taken from ``peft``: potstill's environment does not ship ``peft``
(it is not installed in .venv), and potstill's networks only need these two layer types.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoRALayer(nn.Module):
    """A frozen ``base`` layer plus a rank-``rank`` update ``scale * B A`` (``scale = alpha / rank``)."""

    def __init__(self, base: nn.Module, rank: int, alpha: float | None = None):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.rank = int(rank)
        self.scale = float(alpha if alpha is not None else rank) / self.rank
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def lora_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        return out if self.merged else out + self.scale * self.lora_forward(x)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.scale * self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.scale * self.delta_weight().to(self.base.weight.dtype)
            self.merged = False


class LoRALinear(LoRALayer):
    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__(base, rank, alpha)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(self.rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, self.rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)

    def delta_weight(self):
        return self.lora_B @ self.lora_A

    def lora_forward(self, x):
        return F.linear(F.linear(x, self.lora_A), self.lora_B)


class LoRAConv2d(LoRALayer):
    def __init__(self, base: nn.Conv2d, rank: int, alpha: float | None = None):
        super().__init__(base, rank, alpha)
        if base.padding_mode != "zeros" or base.groups != 1:
            raise ValueError("LoRAConv2d supports padding_mode='zeros' and groups=1 only")
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(self.rank, base.in_channels // base.groups, *base.kernel_size,
                                               dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_channels, self.rank, 1, 1, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)

    def delta_weight(self):
        # (o, r, 1, 1) x (r, i, kh, kw) -> (o, i, kh, kw): conv1x1(conv(x; A); B) == conv(x; B A)
        return torch.einsum("or,rikl->oikl", self.lora_B[:, :, 0, 0], self.lora_A)

    def lora_forward(self, x):
        b = self.base
        h = F.conv2d(x, self.lora_A, None, b.stride, b.padding, b.dilation, b.groups)
        return F.conv2d(h, self.lora_B)


def add_lora(module: nn.Module, rank: int, alpha: float | None = None,
             types: tuple[type, ...] = (nn.Linear, nn.Conv2d)) -> nn.Module:
    """Freeze ``module`` and replace (in place) each of its ``types`` layers by a LoRA layer."""
    module.requires_grad_(False)
    wrap = {nn.Linear: LoRALinear, nn.Conv2d: LoRAConv2d}

    def visit(parent: nn.Module):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALayer):
                continue
            kind = next((t for t in types if type(child) is t), None)
            if kind is not None:
                setattr(parent, name, wrap[kind](child, rank, alpha))
            else:
                visit(child)

    visit(module)
    return module


def lora_layers(module: nn.Module) -> list[LoRALayer]:
    return [m for m in module.modules() if isinstance(m, LoRALayer)]


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapters (A, B) of every LoRA layer in ``module`` - the only trainable weights."""
    return [p for m in lora_layers(module) for p in (m.lora_A, m.lora_B)]


def merge_lora(module: nn.Module) -> nn.Module:
    for m in lora_layers(module):
        m.merge()
    return module


def unmerge_lora(module: nn.Module) -> nn.Module:
    for m in lora_layers(module):
        m.unmerge()
    return module


__all__ = ["LoRALayer", "LoRALinear", "LoRAConv2d", "add_lora", "lora_layers", "lora_parameters", "merge_lora",
           "unmerge_lora"]
