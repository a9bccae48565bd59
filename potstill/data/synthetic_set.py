"""The distilled-data container: a few images per class, their labels, and where they came from.

On disk a set is two files side by side::

    <name>.safetensors   tensors "images" (N, C, H, W) float32 and "labels" ((N,) int64 hard
                         labels or (N, K) float32 soft labels)
    <name>.json          metadata: method, ipc, source dataset, normalisation, augmentation,
                         label kind and storage in bytes, shapes, dtypes and the SHA-256 of the
                         tensor file

``SyntheticSet.load`` checks all of it (missing file, checksum, shapes, dtypes, class count,
images per class) and raises :class:`~potstill.data.DataError` naming the file and the problem.
Both files are written atomically, the tensor file first, so a crash never leaves a JSON that
points at a half-written tensor file.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import ArrayData, DataError

FORMAT = "potstill.synthetic_set/1"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stem(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        return path / "synthetic"
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


@dataclass
class SyntheticSet:
    images: torch.Tensor                  # (N, C, H, W), normalised like the source data
    labels: torch.Tensor                  # (N,) int64 hard labels, or (N, K) float soft labels
    num_classes: int
    meta: dict[str, Any] = field(default_factory=dict)  # method, ipc, dataset, normalization, augmentation ...

    def __post_init__(self):
        self.images = self.images.detach().float().cpu().contiguous()
        self.labels = self.labels.detach().cpu().contiguous()
        problem = self.problem()
        if problem:
            raise DataError(f"invalid synthetic set: {problem}")

    # --- checks ------------------------------------------------------------------------------
    def problem(self) -> str | None:
        x, y, k = self.images, self.labels, self.num_classes
        if x.dim() != 4:
            return f"images must be (N, C, H, W), got shape {tuple(x.shape)}"
        if not torch.isfinite(x).all():
            return "images contain NaN or Inf"
        if k < 1:
            return f"num_classes must be >= 1, got {k}"
        if self.soft:
            if y.shape != (len(x), k):
                return f"soft labels must have shape ({len(x)}, {k}), got {tuple(y.shape)}"
        else:
            if y.dtype != torch.int64 or y.shape != (len(x),):
                return f"hard labels must be int64 of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}"
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
                return f"labels must lie in [0, {k - 1}], found {int(y.min())}..{int(y.max())}"
        return None

    @property
    def soft(self) -> bool:
        return self.labels.dim() == 2

    @property
    def hard_labels(self) -> torch.Tensor:
        return self.labels.argmax(1) if self.soft else self.labels

    @property
    def ipc(self) -> int:
        """Images per class (the largest class count)."""
        # unique counts, not bincount(minlength=num_classes): a corrupt class count must not allocate
        return int(torch.unique(self.hard_labels, return_counts=True)[1].max()) if len(self.labels) else 0

    def label_bytes(self) -> int:
        """What the labels cost to store: soft labels are N*K floats; hard labels count as one byte each."""
        return self.labels.numel() * self.labels.element_size() if self.soft else len(self.labels)

    def as_arrays(self) -> ArrayData:
        return ArrayData(self.images, self.hard_labels)

    # --- disk --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` and ``<path>.json``; an existing folder gets ``synthetic.*`` inside."""
        from ..core.checkpoint import atomic_save_safetensors, atomic_write_json

        path = _stem(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = path.with_suffix(".safetensors")
        atomic_save_safetensors({"images": self.images, "labels": self.labels}, tensors)
        meta = {**self.meta, "format": FORMAT, "num_classes": self.num_classes, "ipc": self.ipc,
                "images_shape": list(self.images.shape), "labels_shape": list(self.labels.shape),
                "labels_dtype": str(self.labels.dtype).replace("torch.", ""),
                "label_kind": "soft" if self.soft else "hard", "label_bytes": self.label_bytes(),
                "sha256": _sha256(tensors)}
        atomic_write_json(path.with_suffix(".json"), meta)
        return tensors

    @classmethod
    def load(cls, path: str | Path) -> "SyntheticSet":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = _stem(path)
        tensors, meta_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
        for p in (tensors, meta_path):
            if not p.is_file():
                raise DataError(f"{p}: no such file (a synthetic set is a .safetensors + .json pair)")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{meta_path}: not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{meta_path}: not a potstill synthetic set (format should be {FORMAT!r})")
        if meta.get("sha256") != _sha256(tensors):
            raise DataError(f"{tensors}: checksum does not match {meta_path.name} (file corrupted or replaced)")
        try:
            t = load_file(str(tensors))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise DataError(f"{tensors}: unreadable safetensors file ({e})") from None
        if set(t) != {"images", "labels"}:
            raise DataError(f"{tensors}: expected tensors 'images' and 'labels', found {sorted(t)}")
        for key in ("images", "labels"):
            if list(t[key].shape) != meta.get(f"{key}_shape"):
                raise DataError(f"{tensors}: {key} have shape {list(t[key].shape)} but {meta_path.name} says "
                                f"{meta.get(f'{key}_shape')}")
        if t["images"].dtype != torch.float32:
            raise DataError(f"{tensors}: images must be float32, found {t['images'].dtype}")
        keep = {k: v for k, v in meta.items() if k not in ("format", "images_shape", "labels_shape", "labels_dtype",
                                                           "label_kind", "label_bytes", "sha256", "num_classes", "ipc")}
        nc = meta.get("num_classes")
        if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
            raise DataError(f"{meta_path}: num_classes must be a positive integer, got {nc!r}")
        if meta.get("ipc") is not None and (not isinstance(meta["ipc"], int) or isinstance(meta["ipc"], bool)):
            raise DataError(f"{meta_path}: ipc must be an integer, got {meta['ipc']!r}")
        try:
            out = cls(t["images"], t["labels"], nc, keep)
        except DataError as e:
            raise DataError(f"{tensors}: {e}") from None
        if meta.get("ipc") is not None and out.ipc != meta["ipc"]:
            raise DataError(f"{tensors}: {out.ipc} images per class but {meta_path.name} says {meta['ipc']}")
        return out

    # --- pictures ----------------------------------------------------------------------------
    def pixels(self) -> torch.Tensor:
        """Images mapped back to [0, 1] with the stored normalisation (rows clipped)."""
        x = self.images
        norm = self.meta.get("normalization")
        if norm:
            mean = torch.tensor(norm["mean"]).view(1, -1, 1, 1)
            std = torch.tensor(norm["std"]).view(1, -1, 1, 1)
            x = x * std + mean
        else:  # unknown normalisation: stretch each image to [0, 1]
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            x = (x - lo) / (hi - lo).clamp_min(1e-8)
        return x.clamp(0, 1)

    def save_grid(self, path: str | Path, max_per_class: int = 10, class_names: list[str] | None = None) -> Path:
        """A PNG grid: one row per class, up to ``max_per_class`` images each."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ..core.checkpoint import atomic_write_bytes

        px, y = self.pixels(), self.hard_labels
        cols = max(1, min(max_per_class, self.ipc))
        names = class_names or self.meta.get("class_names") or [str(c) for c in range(self.num_classes)]
        fig, axes = plt.subplots(self.num_classes, cols, figsize=(0.8 * cols + 1.2, 0.8 * self.num_classes),
                                 squeeze=False)
        for c in range(self.num_classes):
            idx = (y == c).nonzero().flatten()[:cols]
            for j in range(cols):
                ax = axes[c][j]
                ax.set_xticks([]), ax.set_yticks([])
                for s in ax.spines.values():
                    s.set_visible(False)
                if j < len(idx):
                    img = px[idx[j]].numpy()
                    ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0),
                              cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
            axes[c][0].set_ylabel(names[c], rotation=0, ha="right", va="center", fontsize=8)
        title = " ".join(str(self.meta[k]) for k in ("method", "dataset") if self.meta.get(k))
        fig.suptitle(f"{title} IPC {self.ipc}".strip(), fontsize=9)
        fig.tight_layout()
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        path = Path(path)
        atomic_write_bytes(path, buf.getvalue())
        return path


__all__ = ["SyntheticSet", "FORMAT"]
