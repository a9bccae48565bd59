"""The distilled-data container: a few images per class, their labels, and where they came from.

On disk a set is two files side by side::

    <name>.safetensors   tensors "images" (N, C, H, W) float32 and "labels" ((N,) int64 hard
                         labels or (N, K) float32 soft labels)
    <name>.json          metadata: method, ipc, source dataset, normalisation, augmentation,
                         label kind and storage in bytes, shapes, dtypes and the SHA-256 of the
                         tensor file

**Online labels.** A set may carry, instead of stored soft labels, an :class:`OnlineLabels`
module (``online``): a label *generator* that the evaluation protocol calls on every augmented
training batch (HeLlO's image-to-label projector, or a teacher relabelling every augmentation).
Such a set keeps only hard labels (class membership) per image; ``label_bytes`` is what must be
shipped to regenerate the labels (``OnlineLabels.shipped()``, stored in the tensor file as
``online.<name>``). Frozen models the generator needs but that are *not* counted as label storage
(e.g. a generic feature encoder the user already has, like CLIP in the paper) are written to
``<name>.frozen.safetensors`` with their own SHA-256. Kinds register with
:func:`register_online_labels`; ``load`` rebuilds the module with the kind's ``restore``.

**Regression targets.** A set may also carry ``targets`` (N, d) float32 - learned target
representations to regress on (KRR-ST, ``methods/dataset/krr_st.py``), stored as the tensor
``targets``; ``label_kind`` is then ``regression``, ``label_bytes`` = N * d * 4, and ``labels``
only record the class each image was drawn from (bookkeeping; transfer evaluation never reads them).

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
from typing import Any, ClassVar

import torch

from . import ArrayData, DataError

FORMAT = "potstill.synthetic_set/1"


class OnlineLabels(torch.nn.Module):
    """Labels generated while the student trains instead of stored: ``self(x)`` maps a batch of
    (augmented) images to (B, K) probabilities. Always in eval mode, never trained by the protocol.

    Subclasses set ``kind`` (registered with :func:`register_online_labels`) and ``num_classes``,
    and implement ``forward``, ``shipped`` (the tensors a user must be sent - label storage),
    ``spec`` (JSON-able settings) and the classmethod ``restore(spec, shipped, frozen, images,
    labels)``; ``frozen`` (models not counted as label storage) is optional.
    """

    kind: ClassVar[str] = ""
    num_classes: int = 0

    def shipped(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def frozen(self) -> dict[str, torch.Tensor]:
        return {}

    def spec(self) -> dict:
        raise NotImplementedError

    @classmethod
    def restore(cls, spec: dict, shipped: dict[str, torch.Tensor], frozen: dict[str, torch.Tensor],
                images: torch.Tensor, labels: torch.Tensor) -> "OnlineLabels":
        raise NotImplementedError

    def label_bytes(self) -> int:
        """Bytes of the shipped tensors: what the labels cost to store."""
        return sum(t.numel() * t.element_size() for t in self.shipped().values())

    def train(self, mode: bool = True) -> "OnlineLabels":  # a label generator never leaves eval mode
        return super().train(False)


ONLINE_LABELS: dict[str, type[OnlineLabels]] = {}


def register_online_labels(cls: type[OnlineLabels]) -> type[OnlineLabels]:
    """Class decorator: make ``cls.kind`` loadable by :meth:`SyntheticSet.load`."""
    if not cls.kind or ONLINE_LABELS.get(cls.kind, cls) is not cls:
        raise ValueError(f"online label kind {cls.kind!r} is empty or registered twice")
    ONLINE_LABELS[cls.kind] = cls
    return cls


def _online_kind(kind: str) -> type[OnlineLabels] | None:
    if kind not in ONLINE_LABELS:
        from .. import methods  # noqa: F401  (methods register their kinds on import)
    return ONLINE_LABELS.get(kind)


def _frozen_path(stem: Path) -> Path:
    return stem.parent / (stem.name + ".frozen.safetensors")


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
    online: OnlineLabels | None = None    # labels generated per augmented batch (then ``labels`` are hard)
    #: (N, d) float32 regression targets (KRR-ST's learned target representations); ``labels`` then
    #: only record which class each image came from (bookkeeping), and the targets are what is trained on
    targets: torch.Tensor | None = None

    def __post_init__(self):
        self.images = self.images.detach().float().cpu().contiguous()
        self.labels = self.labels.detach().cpu().contiguous()
        if self.online is not None:
            self.online = self.online.cpu().eval()
        if self.targets is not None:
            self.targets = self.targets.detach().float().cpu().contiguous()
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
        if self.targets is not None:
            t = self.targets
            if t.dim() != 2 or len(t) != len(x):
                return f"regression targets must have shape ({len(x)}, d), got {tuple(t.shape)}"
            if not torch.isfinite(t).all():
                return "regression targets contain NaN or Inf"
        if self.online is not None:
            if not isinstance(self.online, OnlineLabels):
                return f"online labels must be an OnlineLabels module, got {type(self.online).__name__}"
            if y.dim() != 1:
                return "a set with online labels keeps only hard labels (class membership) per image"
            if self.online.num_classes != k:
                return f"online labels give {self.online.num_classes} classes, the set has {k}"
        if y.dim() == 2:
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
        """Trained on soft labels: stored (N, K) ones, or generated online."""
        return self.labels.dim() == 2 or self.online is not None

    @property
    def hard_labels(self) -> torch.Tensor:
        return self.labels.argmax(1) if self.labels.dim() == 2 else self.labels

    @property
    def ipc(self) -> int:
        """Images per class (the largest class count)."""
        # unique counts, not bincount(minlength=num_classes): a corrupt class count must not allocate
        return int(torch.unique(self.hard_labels, return_counts=True)[1].max()) if len(self.labels) else 0

    def label_bytes(self) -> int:
        """What the labels cost to store: soft labels are N*K floats; hard labels count as one byte each;
        online labels cost the tensors shipped to generate them (class membership is the row order)."""
        if self.online is not None:
            return self.online.label_bytes()
        if self.targets is not None:             # regression targets: N x d float32
            return self.targets.numel() * self.targets.element_size()
        return self.labels.numel() * self.labels.element_size() if self.labels.dim() == 2 else len(self.labels)

    @property
    def label_kind(self) -> str:
        if self.targets is not None:
            return "regression"
        return "online" if self.online is not None else "soft" if self.labels.dim() == 2 else "hard"

    def as_arrays(self) -> ArrayData:
        return ArrayData(self.images, self.hard_labels)

    # --- disk --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` and ``<path>.json``; an existing folder gets ``synthetic.*`` inside."""
        from ..core.checkpoint import atomic_save_safetensors, atomic_write_json

        path = _stem(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = path.with_suffix(".safetensors")
        out = {"images": self.images, "labels": self.labels}
        online = None
        if self.online is not None:
            try:
                spec, shipped, frozen = self.online.spec(), self.online.shipped(), self.online.frozen()
            except (ValueError, RuntimeError) as e:
                raise DataError(f"{tensors}: cannot save the online labels ({e})") from None
            out.update({f"online.{k}": v.detach().cpu().contiguous() for k, v in shipped.items()})
            online = {"kind": self.online.kind, "spec": spec, "shipped": sorted(shipped), "frozen": None}
            if frozen:
                fpath = _frozen_path(path)
                atomic_save_safetensors({k: v.detach().cpu().contiguous() for k, v in frozen.items()}, fpath)
                online["frozen"] = {"file": fpath.name, "sha256": _sha256(fpath)}
        if self.targets is not None:
            out["targets"] = self.targets
        atomic_save_safetensors(out, tensors)
        meta = {**self.meta, "format": FORMAT, "num_classes": self.num_classes, "ipc": self.ipc,
                "images_shape": list(self.images.shape), "labels_shape": list(self.labels.shape),
                "labels_dtype": str(self.labels.dtype).replace("torch.", ""),
                "label_kind": self.label_kind, "label_bytes": self.label_bytes(),
                "sha256": _sha256(tensors)}
        if online is not None:
            meta["online_labels"] = online
        if self.targets is not None:
            meta["targets_shape"] = list(self.targets.shape)
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
        online = meta.get("online_labels")
        if online is not None:
            shipped_keys = online.get("shipped") if isinstance(online, dict) else None
            if (not isinstance(online.get("kind") if isinstance(online, dict) else None, str)
                    or not isinstance(online.get("spec"), dict) or not isinstance(shipped_keys, list)
                    or not all(isinstance(k, str) for k in shipped_keys)):
                raise DataError(f"{meta_path}: online_labels must be {{kind: str, spec: {{...}}, shipped: [names], "
                                f"frozen: ...}}, got {online!r}"[:300])
            want = {"images", "labels"} | {f"online.{k}" for k in shipped_keys}
        else:
            want = {"images", "labels"}
        if meta.get("targets_shape") is not None:
            want = want | {"targets"}
        if set(t) != want:
            raise DataError(f"{tensors}: expected tensors {sorted(want)}, found {sorted(t)}")
        for key in ("images", "labels"):
            if list(t[key].shape) != meta.get(f"{key}_shape"):
                raise DataError(f"{tensors}: {key} have shape {list(t[key].shape)} but {meta_path.name} says "
                                f"{meta.get(f'{key}_shape')}")
        if t["images"].dtype != torch.float32:
            raise DataError(f"{tensors}: images must be float32, found {t['images'].dtype}")
        if "targets" in t and (list(t["targets"].shape) != meta["targets_shape"] or t["targets"].dtype != torch.float32):
            raise DataError(f"{tensors}: targets are {t['targets'].dtype} {list(t['targets'].shape)} but "
                            f"{meta_path.name} says float32 {meta['targets_shape']}")
        keep = {k: v for k, v in meta.items() if k not in ("format", "images_shape", "labels_shape", "labels_dtype",
                                                           "label_kind", "label_bytes", "sha256", "num_classes", "ipc",
                                                           "online_labels", "targets_shape")}
        nc = meta.get("num_classes")
        if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
            raise DataError(f"{meta_path}: num_classes must be a positive integer, got {nc!r}")
        if meta.get("ipc") is not None and (not isinstance(meta["ipc"], int) or isinstance(meta["ipc"], bool)):
            raise DataError(f"{meta_path}: ipc must be an integer, got {meta['ipc']!r}")
        module = cls._restore_online(online, t, path, meta_path, nc) if online is not None else None
        try:
            out = cls(t["images"], t["labels"], nc, keep, module, t.get("targets"))
        except DataError as e:
            raise DataError(f"{tensors}: {e}") from None
        if meta.get("ipc") is not None and out.ipc != meta["ipc"]:
            raise DataError(f"{tensors}: {out.ipc} images per class but {meta_path.name} says {meta['ipc']}")
        return out

    @staticmethod
    def _restore_online(online: dict, t: dict, path: Path, meta_path: Path, nc: int) -> OnlineLabels:
        """The OnlineLabels module a saved set describes (its shipped tensors, its frozen file)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        kind = _online_kind(online["kind"])
        if kind is None:
            raise DataError(f"{meta_path}: unknown online label kind {online['kind']!r}; "
                            f"known: {sorted(ONLINE_LABELS)}")
        frozen: dict[str, torch.Tensor] = {}
        if online.get("frozen") is not None:
            info = online["frozen"]
            if not isinstance(info, dict) or not isinstance(info.get("file"), str) or "/" in info["file"] \
                    or "\\" in info["file"]:
                raise DataError(f"{meta_path}: online_labels.frozen must be "
                                "{file: <name beside the set>, sha256: ...}")
            fpath = path.parent / info["file"]
            if not fpath.is_file():
                raise DataError(f"{fpath}: no such file (the frozen model the online labels need)")
            if info.get("sha256") != _sha256(fpath):
                raise DataError(f"{fpath}: checksum does not match {meta_path.name} (file corrupted or replaced)")
            try:
                frozen = load_file(str(fpath))
            except (SafetensorError, OSError, ValueError, RuntimeError) as e:
                raise DataError(f"{fpath}: unreadable safetensors file ({e})") from None
        shipped = {k[len("online."):]: v for k, v in t.items() if k.startswith("online.")}
        labels = t["labels"]
        if labels.dtype != torch.int64 or labels.dim() != 1 or (len(labels) and (int(labels.min()) < 0
                                                                              or int(labels.max()) >= nc)):
            raise DataError(f"{path}.safetensors: a set with online labels needs hard labels in [0, {nc - 1}]")
        try:
            module = kind.restore(online["spec"], shipped, frozen, t["images"], labels)
        except DataError:
            raise
        except Exception as e:  # a spec or tensor that does not fit: name the file, not a traceback
            raise DataError(f"{meta_path}: cannot rebuild the {online['kind']!r} online labels ({type(e).__name__}: "
                            f"{e})") from None
        return module

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


__all__ = ["SyntheticSet", "FORMAT", "OnlineLabels", "ONLINE_LABELS", "register_online_labels"]
