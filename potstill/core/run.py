"""A recipe end to end: parse -> build -> train -> run folder.

Run folder::

    config.yaml          the resolved recipe (every default filled in)
    metrics.jsonl        one JSON object per log / validation event
    checkpoints/         step-NNNNNNN/{state.safetensors, meta.json} and `latest`
    export/              the artefact (model.safetensors + model.json for classifiers)
    plots/               PNG curves
    summary.json         final validation and test metrics, parameters, wall-clock
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import CheckpointError
from .checkpoint import atomic_save_safetensors, atomic_write_json, atomic_write_text
from .config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from .method import BuildContext, Method
from .registry import DATASETS, METHODS, Spec
from .teacher import TeacherConfig
from .trainer import Trainer, TrainerConfig, check_optim_groups, seed_everything

TOP_KEYS = ("description", "method", "data", "student", "teacher", "trainer", "eval")
#: keys that may change when a run is resumed
RESUMABLE_CHANGES = ("trainer.steps", "trainer.progress", "trainer.threads", "trainer.device", "trainer.log_every",
                     "trainer.time_limit_s",   # a resumed run may get more (or less) time
                     "description")            # prose about the recipe, not a setting


@dataclass
class RunConfig:
    method: Spec
    data: Spec
    trainer: TrainerConfig
    student: Spec | None = None
    teacher: TeacherConfig | None = None
    description: str = ""
    eval: Any = None      # SynEvalConfig: how a dataset-distillation artefact is judged


    def to_dict(self) -> dict:
        out: dict[str, Any] = {"description": self.description, "method": self.method.to_dict(), "data": self.data.to_dict()}
        if self.student is not None:
            out["student"] = self.student.to_dict()
        if self.teacher is not None:
            out["teacher"] = to_dict(self.teacher)
        out["trainer"] = to_dict(self.trainer)
        if self.eval is not None:
            out["eval"] = to_dict(self.eval)
        return out


def parse_run(raw: dict) -> RunConfig:
    from ..models import MODELS

    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; valid top-level keys: {', '.join(TOP_KEYS)}")
    for k in ("method", "data"):
        if k not in raw:
            raise ConfigError(f"missing required key {k!r}")
    student = MODELS.parse(raw["student"], "student") if raw.get("student") is not None else None
    teacher = from_dict(TeacherConfig, raw["teacher"], "teacher") if raw.get("teacher") is not None else None
    if teacher is not None and teacher.model is not None:
        teacher.model = MODELS.parse(teacher.model, "teacher.model").to_dict()  # checked, defaults filled
    method = METHODS.parse(raw["method"], "method")
    eval_cfg = None
    if METHODS.get(method.name).pillar == "dataset" or raw.get("eval") is not None:
        from ..eval.synthetic_set import SynEvalConfig

        eval_cfg = from_dict(SynEvalConfig, raw.get("eval") or {}, "eval")
        eval_cfg.model = MODELS.parse(eval_cfg.model, "eval.model").to_dict()
    return RunConfig(method=method, data=DATASETS.parse(raw["data"], "data"),
                     trainer=from_dict(TrainerConfig, raw.get("trainer") or {}, "trainer"),
                     student=student, teacher=teacher, description=str(raw.get("description") or ""), eval=eval_cfg)


def resolve(recipe: str | Path | dict, overrides: list[str] | dict | None = None) -> RunConfig:
    raw = load_yaml(recipe) if isinstance(recipe, (str, Path)) else dict(recipe)
    return parse_run(apply_overrides(raw, overrides or []))


def build(cfg: RunConfig, bundle=None) -> tuple[Method, Any]:
    """Load data, seed, and construct the method. Returns (method, data bundle)."""
    from ..data import load_dataset

    bundle = bundle if bundle is not None else load_dataset(cfg.data)
    seed_everything(cfg.trainer.seed)
    cls = METHODS.get(cfg.method.name)
    ctx = BuildContext(data=bundle, student_spec=cfg.student, teacher_spec=cfg.teacher)
    return cls.build(cfg.method.config, ctx), bundle


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _check_resume(out: Path, cfg: RunConfig) -> None:
    old = _flat(yaml.safe_load((out / "config.yaml").read_text()) or {})
    new = _flat(cfg.to_dict())
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES
                  and not k.startswith("eval."))  # evaluation settings do not touch training
    if diff:
        raise ConfigError(f"--resume: the recipe differs from the one in {out}/config.yaml at {', '.join(diff[:5])}")


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{platform.system()} {cpu}, {os.cpu_count()} cpus, torch {torch.__version__}{gpu}"


def peak_memory() -> dict:
    """Peak resident memory of this process (and peak CUDA allocation when on a GPU), in MiB."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out = {"peak_rss_mib": round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def save_export(artefact, folder: Path, model_spec: Spec | None, bundle) -> Path:
    """Classifiers: weights + how to rebuild them. Other artefacts bring their own ``save``."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(artefact, torch.nn.Module):
        atomic_save_safetensors(artefact.state_dict(), folder / "model.safetensors")
        atomic_write_json(folder / "model.json", {
            "model": model_spec.to_dict() if model_spec else None,
            "in_shape": list(bundle.in_shape), "num_classes": bundle.num_classes,
            **(artefact.export_meta() if hasattr(artefact, "export_meta") else {})})
        if hasattr(artefact, "save_pretrained"):       # transformers students: loadable without potstill too
            artefact.save_pretrained(folder / "hf")
        return folder / "model.safetensors"
    return artefact.save(folder)


def _read_export(run_or_export: str | Path) -> tuple[Path, Path, dict]:
    """(export folder, its model.json, the parsed json) of a run folder or an export folder."""
    p = Path(run_or_export)
    folder = p / "export" if (p / "export").is_dir() else p
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise ConfigError(f"no exported model at {folder} (expected model.json and model.safetensors)")
    return folder, meta_path, json.loads(meta_path.read_text())


def load_model(run_or_export: str | Path) -> torch.nn.Module:
    """Rebuild a classifier exported by a run: ``load_model("runs/kd")``."""
    from ..models import build_model
    from .checkpoint import load_module_weights

    folder, meta_path, meta = _read_export(run_or_export)
    if meta.get("model") is None:
        raise ConfigError(f"{meta_path}: the model was a user nn.Module; build it yourself and load model.safetensors")
    k = meta.get("subclasses")
    model = build_model(meta["model"], tuple(meta["in_shape"]), meta["num_classes"] * (k or 1))
    if k:                           # a student with a head of pseudo-subclasses (LELP): class = Σ subclasses
        from ..methods.kd.lelp import SubclassHead

        model = SubclassHead(model, meta["num_classes"], k)
    load_module_weights(model, folder / "model.safetensors")
    return model


def load_denoiser(run_or_export: str | Path):
    """Rebuild an exported diffusion denoiser ``D(x, sigma, cond)``: ``load_denoiser("runs/edm_toy2d")``."""
    from ..diffusion.denoiser import EDMPrecond
    from ..models import build_model
    from .checkpoint import load_module_weights

    folder, meta_path, meta = _read_export(run_or_export)
    if meta.get("denoiser") not in ("edm", "consistency") or meta.get("model") is None:
        raise ConfigError(f"{meta_path}: not an exported EDM denoiser (use load_model for classifiers)")
    net = build_model(meta["model"], tuple(meta["in_shape"]), meta["num_classes"])
    if meta["denoiser"] == "consistency":
        from ..methods.generative.consistency import ConsistencyFunction

        d = ConsistencyFunction(net, meta["sigma_data"], meta["sigma_min"])
    else:
        d = EDMPrecond(net, meta["sigma_data"])
    load_module_weights(d, folder / "model.safetensors")
    d.num_classes, d.in_shape, d.model_spec = meta["num_classes"], tuple(meta["in_shape"]), meta["model"]
    d.sampling = meta.get("sampling")
    return d.eval()


def run(cfg: RunConfig, out: str | Path, resume: bool = False, bundle=None, callbacks=()) -> dict:
    """Train the recipe into run folder ``out`` and return the summary (also in summary.json)."""
    from ..core import distributed as dist
    from ..eval.classification import latency_ms
    from ..models import count_params

    out = Path(out)
    device = dist.init(cfg.trainer.device)  # join torchrun's group first: only rank 0 writes
    # every process checks (so all of them stop on a bad --out), and all check before rank 0 writes
    if resume:
        if not (out / "config.yaml").is_file():
            raise ConfigError(f"--resume: {out} holds no run (no config.yaml)")
        _check_resume(out, cfg)
    elif (out / "config.yaml").exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    dist.barrier()
    if cfg.trainer.precision == "fp16" and device.type != "cuda":
        raise ConfigError("trainer.precision: fp16 needs a GPU (loss scaling); on CPU use bf16")
    # everything that can fail on a bad recipe happens before the run folder is written
    method, bundle = build(cfg, bundle)
    check_optim_groups(cfg.trainer, method)
    train_data = method.train_data(bundle)
    if train_data is not None and cfg.trainer.batch_size % dist.world_size():   # (DD methods draw their own)
        raise ConfigError(f"trainer.batch_size={cfg.trainer.batch_size} is not divisible by the "
                          f"{dist.world_size()} processes")
    if dist.is_main():
        try:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        except OSError as e:
            raise CheckpointError(f"cannot write the run folder {out}: {e.strerror or e}") from None
    dist.barrier()
    if cfg.teacher is not None and cfg.teacher.cache and method.cacheable_teacher and hasattr(method, "teacher"):
        method.teacher.to(device)
        cache_dir = cfg.teacher.cache_dir or None
        if dist.is_main():  # rank 0 computes (and stores) the cache; the others then read the file
            method.teacher.attach_cache(train_data.x, cache_dir, progress=cfg.trainer.progress)
        dist.barrier()
        if not dist.is_main():
            method.teacher.attach_cache(train_data.x, cache_dir)

    t0 = time.time()
    trainer = Trainer(cfg.trainer, out, callbacks, desc=cfg.method.name)
    judged_by_protocol = method.pillar == "dataset"  # a distilled set is judged after training
    result = trainer.fit(method, train_data, None if judged_by_protocol else bundle.val,
                         None if judged_by_protocol else bundle.test, resume=resume)
    summary = {"method": METHODS.get(cfg.method.name).info(), "dataset": bundle.name,
               "train_rows": len(train_data if train_data is not None else bundle.train), **result}
    if dist.is_main():
        with trainer.averaged():
            artefact = method.export()
            export_path = save_export(artefact, out / "export", cfg.student, bundle)
            if isinstance(artefact, torch.nn.Module):
                summary["params"] = count_params(artefact)
                if method.pillar == "kd" and not hasattr(artefact, "set_graph"):  # a classifier of single inputs
                    summary["latency_ms"] = round(latency_ms(artefact, bundle.in_shape), 4)
        if hasattr(artefact, "save_grid"):
            artefact.save_grid(out / "export" / "synthetic.png")
        if judged_by_protocol and cfg.eval is not None:
            from ..eval.synthetic_set import evaluate_synthetic

            ev = evaluate_synthetic(artefact, bundle, cfg.eval, progress=cfg.trainer.progress)
            summary["eval"] = ev
            summary["val"] = {"acc": ev["val_acc"]["mean"]} if "val_acc" in ev else {}
            summary["test"] = {"acc": ev["test_acc"]["mean"]} if "test_acc" in ev else {}
            summary["label_bytes"] = artefact.label_bytes()
            summary["soft_labels"] = bool(artefact.soft)
        summary.update({"export": str(export_path), "machine": machine(), **peak_memory(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "run_wall_clock_s": round(time.time() - t0, 3)})
        atomic_write_json(out / "summary.json", summary)
        from ..report.plots import plot_run

        plot_run(out)
    dist.barrier()
    return summary


__all__ = ["RunConfig", "parse_run", "resolve", "build", "run", "load_model", "load_denoiser"]
