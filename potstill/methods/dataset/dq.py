"""DQ: Dataset Quantization — Zhou, Wang, Wang, Yang, Zhang, Li & Feng, ICCV 2023, arXiv 2308.10524
(catalog D5).

A *selection* method (zero training steps, like the coresets) built to transfer to unseen
architectures: instead of picking the single most representative subset, it splits every class
into ``bins`` non-overlapping bins, each chosen greedily by the GraphCut submodular function on
the part of the class not yet binned, and then samples uniformly from *every* bin, so the kept
data covers the class from its most representative to its most diverse parts.

* **Features** ``phi``: ``pixels`` (the normalised image) or ``teacher`` (the embedding of the
  recipe's trained ``teacher`` network; the paper uses gradient embeddings of a pretrained
  ResNet-18's last layer - here the penultimate embedding).
* **Similarity** ``s(i, j) = (1 + cos(phi_i, phi_j)) / 2`` in [0, 1] (non-negative, so GraphCut is
  submodular).
* **GraphCut** on the ground set V (the class's images not yet in a bin), for a bin S:

      f(S) = lambda * sum_{i in V} sum_{j in S} s(i, j) - sum_{i in S} sum_{j in S} s(i, j)
      gain(x | S) = f(S + x) - f(S) = lambda * sum_{i in V} s(i, x) - 2 * sum_{j in S} s(j, x) - s(x, x)

  Bin b is grown greedily (argmax gain) to size |V_b| / (bins - b); V_{b+1} = V_b minus bin b. The
  gain only falls as S grows (diminishing returns, s >= 0); it is not monotone for lambda = 1.
* **Sampling**: from every class ``ipc`` images (or ``ratio`` of the class when ``ratio > 0``),
  split as evenly as possible across its bins (the bins that get one more are drawn at random),
  drawn uniformly inside each bin. ``bins: 1`` is a uniform random subset.

Not implemented: the paper's third step (drop the 25% least important patches by GradCAM and
reconstruct them with a pretrained MAE at training time). Hard labels: ``label_bytes = N``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...core.registry import METHODS
from .base import ClassIndex
from .coresets import Coreset


@dataclass
class DQConfig:
    ipc: int = 10                # images kept per class (when ratio is 0)
    ratio: float = 0.0           # > 0: keep this fraction of every class instead (ipc ignored)
    bins: int = 10               # non-overlapping GraphCut bins per class
    balance: float = 1.0         # lambda of GraphCut
    features: Literal["pixels", "teacher"] = "pixels"
    seed: int = 0                # sampling inside the bins

    def __post_init__(self):
        if self.ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {self.ipc}")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1] (0 = use ipc), got {self.ratio}")
        if self.bins < 1:
            raise ValueError(f"bins must be >= 1, got {self.bins}")
        if not self.balance > 0:
            raise ValueError(f"balance must be > 0, got {self.balance}")


def similarity(feats: torch.Tensor) -> torch.Tensor:
    """``(1 + cos) / 2`` between every pair of rows of ``feats`` (N, D)."""
    f = F.normalize(feats.float(), dim=1)
    return (1 + f @ f.t()) / 2


def graphcut_value(sim: torch.Tensor, ground: torch.Tensor, chosen: torch.Tensor, balance: float) -> float:
    """GraphCut ``f(S) = lambda * sum_{i in V, j in S} s_ij - sum_{i, j in S} s_ij`` (index tensors V, S)."""
    if len(chosen) == 0:
        return 0.0
    return float(balance * sim[ground][:, chosen].sum() - sim[chosen][:, chosen].sum())


def graphcut_gain(sim: torch.Tensor, ground: torch.Tensor, chosen: torch.Tensor, balance: float) -> torch.Tensor:
    """``f(S + x) - f(S)`` for every row x: ``lambda * sum_{i in V} s_ix - 2 * sum_{j in S} s_jx - s_xx``."""
    return balance * sim[ground].sum(0) - 2 * sim[chosen].sum(0) - sim.diagonal()


def graphcut_bins(sim: torch.Tensor, bins: int, balance: float = 1.0) -> list[torch.Tensor]:
    """Split the rows of ``sim`` (n, n) into ``bins`` non-overlapping bins (sizes differ by at most one),
    each grown greedily by GraphCut gain on the rows not yet binned."""
    n = len(sim)
    bins = min(bins, n)
    sizes = [n // bins + (1 if b < n % bins else 0) for b in range(bins)]
    remaining = torch.ones(n, dtype=torch.bool)
    pool_sum = sim.sum(0)                          # sum over the current ground set V of s(i, x)
    diag = sim.diagonal()
    out = []
    for b, size in enumerate(sizes):
        if b == bins - 1:                          # the last bin is what is left
            out.append(remaining.nonzero().flatten())
            break
        bin_sum = torch.zeros(n, dtype=sim.dtype)
        picked = []
        for _ in range(size):
            gain = balance * pool_sum - 2 * bin_sum - diag
            gain[~remaining] = float("-inf")
            i = int(gain.argmax())
            picked.append(i)
            remaining[i] = False
            bin_sum += sim[i]
        idx = torch.tensor(picked, dtype=torch.long)
        out.append(idx)
        pool_sum = pool_sum - sim[idx].sum(0)     # V_{b+1} = V_b minus this bin
    return out


def sample_bins(bins: list[torch.Tensor], k: int, g: torch.Generator) -> torch.Tensor:
    """``k`` rows spread as evenly as possible over the bins, uniform inside each bin."""
    counts = [min(k // len(bins), len(b)) for b in bins]
    extra = k - sum(counts)
    for j in torch.randperm(len(bins), generator=g).tolist():
        if extra <= 0:
            break
        if counts[j] < len(bins[j]):
            counts[j] += 1
            extra -= 1
    picks = [b[torch.randperm(len(b), generator=g)[:c]] for b, c in zip(bins, counts) if c]
    return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)


@METHODS.register("dq")
class DQ(Coreset):
    """DQ: GraphCut bins per class, then the same share sampled uniformly from every bin (zero steps)."""

    Config = DQConfig
    name = "dq"
    catalog_ids = ("D5",)
    paper = "Dataset Quantization"
    arxiv = "2308.10524"

    def __init__(self, cfg: DQConfig, data, embed=None):
        torch.nn.Module.__init__(self)
        self.cfg = cfg
        self.num_classes, self.in_shape = data.num_classes, tuple(data.in_shape)
        self.source = {"dataset": data.name, "normalization": data.normalization, "class_names": data.class_names,
                       "features": cfg.features, "bins": cfg.bins,
                       "keep": f"ratio {cfg.ratio:g}" if cfg.ratio > 0 else f"ipc {cfg.ipc}"}
        index = ClassIndex(data.train, data.num_classes)
        g = torch.Generator().manual_seed(cfg.seed)
        xs, ys = [], []
        for c, rows in enumerate(index.rows):
            k = max(1, round(cfg.ratio * len(rows))) if cfg.ratio > 0 else cfg.ipc
            if len(rows) < k:
                raise ValueError(f"ipc={k} is more than class {c} has ({len(rows)} images)")
            x = data.train.x[rows]
            if cfg.bins == 1:
                parts = [torch.arange(len(rows))]
            else:
                feats = embed(x) if embed is not None else x.flatten(1)
                parts = graphcut_bins(similarity(feats), cfg.bins, cfg.balance)
            pick = sample_bins(parts, k, g)
            xs.append(x[pick])
            ys.append(torch.full((len(pick),), c, dtype=torch.long))
        self.images = torch.nn.Parameter(torch.cat(xs), requires_grad=False)
        self.register_buffer("labels", torch.cat(ys))


__all__ = ["DQ", "DQConfig", "graphcut_bins", "graphcut_gain", "graphcut_value", "sample_bins", "similarity"]
