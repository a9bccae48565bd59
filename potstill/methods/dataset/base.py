"""What every dataset-distillation method shares: learnable images, real data by class, export.

A :class:`SyntheticDataMethod` owns one parameter group, ``images`` ((K*IPC, C, H, W), class
``c`` in rows ``c*IPC ... (c+1)*IPC - 1``), and fixed hard labels. It draws its own real batches
class by class from the training split (``train_data`` is ``None``: the trainer hands it empty
batches), with torch's global generator, which the trainer seeds per process and saves in every
checkpoint - so a resumed run draws exactly the batches, DSA seeds and random networks an
uninterrupted one would. Under ``torchrun`` each process draws its own real batches and the
trainer averages the image gradients, so the images stay identical on every process.

``export()`` returns a :class:`~potstill.data.synthetic_set.SyntheticSet`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn

from ...core.config import ConfigError
from ...core.method import Method
from ...data import ArrayData, DataBundle
from ...data.dsa import DEFAULT_STRATEGY, DSA, parse_strategy
from ...data.synthetic_set import SyntheticSet


#: matching networks (random, never trained) run channels-last on CPU in ``forward_by_class``: the
#: DM / DataDAM step is faster there (``benchmarks/dd_step_speed.py``). Training networks stay
#: contiguous: there the weight-gradient pass got slower.
CHANNELS_LAST = True


def _default_net() -> dict:
    return {"name": "convnet", "width": 128, "depth": 3, "norm": "instance", "pooling": "avg",
            "first_padding": 3}


@dataclass
class SyntheticConfig:
    ipc: int = 10                                   # images per class
    init: Literal["real", "noise"] = "real"         # start from random real images or N(0, 1) noise
    dsa: str = DEFAULT_STRATEGY                     # siamese augmentation while matching ("none": off)
    #: "batch": one DSA transform per class and step for all its real and synthetic images, as the
    #: DSA / DM / DataDAM code; "image": the i-th real and i-th synthetic image share the i-th draw
    siamese: str = "batch"
    net: dict = field(default_factory=_default_net)  # the (random) network used for matching

    def __post_init__(self):
        if self.ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {self.ipc}")
        parse_strategy(self.dsa)
        if self.siamese not in ("batch", "image"):
            raise ValueError(f"siamese must be 'batch' or 'image', not {self.siamese!r}")


class ClassIndex:
    """Row indices of each class of an :class:`ArrayData`, for per-class sampling."""

    def __init__(self, data: ArrayData, num_classes: int):
        self.data = data
        self.rows = [(data.y == c).nonzero().flatten() for c in range(num_classes)]
        empty = [c for c, r in enumerate(self.rows) if len(r) == 0]
        if empty:
            from ...data import DataError

            raise DataError(f"class {empty[0]} has no labelled training images")

    def sample(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` distinct images of class ``c`` (all of them if the class is smaller)."""
        rows = self.rows[c]
        pick = torch.randperm(len(rows), generator=generator)[:n]
        return self.data.x[rows[pick]]


def initial_images(real: ClassIndex, num_classes: int, ipc: int, init: str, in_shape) -> torch.Tensor:
    """``ipc`` starting images per class, class by class: random real ones (``init == "real"``) or N(0, 1) noise."""
    if init == "real":
        x = torch.cat([real.sample(c, ipc) for c in range(num_classes)])
        if len(x) != num_classes * ipc:
            raise ConfigError(f"method.ipc={ipc} is more than the smallest class has "
                              f"({min(len(r) for r in real.rows)})")
        return x
    return torch.randn(num_classes * ipc, *in_shape)


class SyntheticDataMethod(Method):
    """Base class: subclasses implement :meth:`loss` (one scalar for group ``images``)."""

    pillar = "dataset"

    def __init__(self, cfg: SyntheticConfig, data: DataBundle):
        super().__init__(cfg)
        self.num_classes, self.in_shape = data.num_classes, tuple(data.in_shape)
        self.real = ClassIndex(data.train, data.num_classes)
        self.source = {"dataset": data.name, "normalization": data.normalization, "class_names": data.class_names}
        self.dsa = DSA(cfg.dsa)
        k, ipc = data.num_classes, cfg.ipc
        x = initial_images(self.real, k, ipc, cfg.init, self.in_shape)
        self.images = nn.Parameter(x.clone())
        self.register_buffer("labels", torch.arange(k).repeat_interleave(ipc))

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, ctx.data)

    def train_data(self, bundle):
        return None

    def param_groups(self):
        return {"images": [self.images]}

    # --- helpers for subclasses -----------------------------------------------------------
    def syn(self, c: int) -> torch.Tensor:
        ipc = self.cfg.ipc
        return self.images[c * ipc:(c + 1) * ipc]

    def real_batch(self, c: int, n: int) -> torch.Tensor:
        return self.real.sample(c, n).to(self.images.device)

    def random_net(self) -> nn.Module:
        """A freshly initialised matching network (weights drawn from the global generator)."""
        from ...models import build_model

        return build_model(self.cfg.net, self.in_shape, self.num_classes, "method.net").to(self.images.device)

    def siamese(self, real: torch.Tensor, syn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same DSA transforms (one seed) on a real and a synthetic batch."""
        if not self.dsa:
            return real, syn
        n = 1 if self.cfg.siamese == "batch" else max(len(real), len(syn))
        params = self.dsa.sample(n, int(torch.randint(2**31 - 1, (1,))))
        return self.dsa.apply(real, params), self.dsa.apply(syn, params)

    def class_batches(self, batch_real: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per class: ``batch_real`` real images and the class's synthetic images, DSA'd siamese."""
        reals, syns = [], []
        for c in range(self.num_classes):
            r, s = self.siamese(self.real_batch(c, batch_real), self.syn(c))
            reals.append(r)
            syns.append(s)
        return reals, syns

    def forward_by_class(self, net: nn.Module, fn, reals: list[torch.Tensor], syns: list[torch.Tensor]):
        """``fn(net, x) -> list of tensors`` on every class's real (no grad) and synthetic batch.

        Returns two lists (real, synthetic) with, per class, the list ``fn`` gave. Networks with
        per-image normalisation see all classes in one forward (exact and much faster); with batch
        norm each class is its own forward, as in the papers' code.
        """
        batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
        if batchnorm:
            with torch.no_grad():
                fr = [fn(net, r) for r in reals]
            return fr, [fn(net, s) for s in syns]

        def split(outs, sizes):
            parts = [o.split(sizes) for o in outs]
            return [[p[c] for p in parts] for c in range(len(sizes))]

        real, syn = torch.cat(reals), torch.cat(syns)
        if CHANNELS_LAST and real.dim() == 4 and real.device.type == "cpu":
            # oneDNN's channels-last convolutions: the same math in another memory layout
            net = net.to(memory_format=torch.channels_last)
            real, syn = (t.contiguous(memory_format=torch.channels_last) for t in (real, syn))
        with torch.no_grad():
            fr = fn(net, real)
        fs = fn(net, syn)
        return split(fr, [len(r) for r in reals]), split(fs, [len(s) for s in syns])

    # --- the artefact ------------------------------------------------------------------------
    def export(self) -> SyntheticSet:
        meta = {"method": self.name, "augmentation": self.cfg.dsa, **self.source}
        return SyntheticSet(self.images.detach(), self.labels.clone(), self.num_classes, meta)

    def evaluate(self, data, batch_size: int = 512):  # judged by the protocol, not per step
        return {}


__all__ = ["SyntheticConfig", "SyntheticDataMethod", "ClassIndex"]
