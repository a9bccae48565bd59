"""The one JSON schema for every benchmark result file (``benchmarks/results/*.json``).

Fields (all required):

    catalog_ids   list[str]      catalog rows the result is evidence for ("B1", "K7", ...)
    command       str            the command that reproduces it, from the repository root
    dataset       str            data and split, e.g. "fmnist (10k labelled, 45k unlabeled, 5k val)"
    seeds         list[int]
    metrics       {name: {mean, std, n}}   the methods' numbers (std: sample std, ddof=1)
    baselines     {name: {mean, std, n}}   the numbers they are compared with, same protocol
    wall_clock_s  float          total wall-clock of the benchmark (per-cell times go in metrics)
    machine       str
    date          str            ISO date
    notes         str            protocol, what was chosen on the validation split, caveats

Optional: ``provenance`` {key, ...}: what ``potstill bench`` keys a result on (recipe, overrides,
teacher, protocol and code version), so an up-to-date result is not rerun.

Metric names are ``<setting>/<metric>``, e.g. ``kd/test_acc``, ``kd/wall_clock_s``.
"""
from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

from ..core.checkpoint import atomic_write_json, atomic_write_text

FIELDS = ("catalog_ids", "command", "dataset", "seeds", "metrics", "baselines", "wall_clock_s", "machine", "date", "notes")
OPTIONAL = ("provenance",)


def stat(values: list[float]) -> dict:
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals) if vals else math.nan,
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


_TYPES = {"catalog_ids": list, "command": str, "dataset": str, "seeds": list, "wall_clock_s": (int, float),
          "machine": str, "date": str, "notes": str}


def validate(result: dict) -> None:
    """Raise ValueError naming the first problem: a missing or unknown field, a wrong type, a bad stat."""
    if not isinstance(result, dict):
        raise ValueError(f"result schema: a result is a JSON object, got {type(result).__name__}")
    missing = [f for f in FIELDS if f not in result]
    extra = [f for f in result if f not in FIELDS + OPTIONAL]
    if missing or extra:
        raise ValueError(f"result schema: missing {missing}, unexpected {extra}")
    for f, t in _TYPES.items():
        if not isinstance(result[f], t) or isinstance(result[f], bool):
            raise ValueError(f"result schema: {f} has the wrong type ({type(result[f]).__name__})")
    if not all(isinstance(c, str) for c in result["catalog_ids"]):
        raise ValueError("result schema: catalog_ids must be strings")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in result["seeds"]):
        raise ValueError("result schema: seeds must be integers")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", result["date"]):
        raise ValueError(f"result schema: date must be ISO YYYY-MM-DD, got {result['date']!r}")
    if "provenance" in result and not isinstance(result["provenance"], dict):
        raise ValueError("result schema: provenance must be a mapping")
    for group in ("metrics", "baselines"):
        if not isinstance(result[group], dict):
            raise ValueError(f"result schema: {group} must be a mapping of name -> {{mean, std, n}}")
        for name, v in result[group].items():
            if not isinstance(v, dict) or set(v) != {"mean", "std", "n"}:
                raise ValueError(f"result schema: {group}.{name} must be {{mean, std, n}}, got {v!r}")
            if not all(isinstance(v[k], (int, float)) and not isinstance(v[k], bool) for k in ("mean", "std")) \
                    or not isinstance(v["n"], int) or v["n"] < 1 or (math.isfinite(v["std"]) and v["std"] < 0):
                raise ValueError(f"result schema: {group}.{name} needs numeric mean/std (std >= 0) and n >= 1, got {v!r}")


def write_result(path: str | Path, result: dict) -> Path:
    validate(result)
    atomic_write_json(path, result)
    return Path(path)


def render_markdown(result: dict, title: str, summary: str = "") -> str:
    """The result as Markdown; ``summary`` (Markdown) goes above the full table."""
    def rows(group):
        out = []
        for name, v in result[group].items():
            mean, std = v["mean"], v["std"]
            out.append(f"| {group[:-1]} | {name} | {mean:.4f} ± {std:.4f} | {v['n']} |")
        return out

    lines = [f"# {title}", "", f"- catalog: {', '.join(result['catalog_ids'])}", f"- command: `{result['command']}`",
             f"- dataset: {result['dataset']}", f"- seeds: {result['seeds']}",
             f"- machine: {result['machine']}", f"- date: {result['date']}",
             f"- total wall-clock: {result['wall_clock_s']:.0f} s", "", summary, "", "## All figures", "",
             "| kind | name | mean ± std | n |", "|---|---|---|---|", *rows("baselines"), *rows("metrics"), "",
             "## Notes", "", result["notes"], ""]
    return "\n".join(lines)


def write_markdown(path: str | Path, result: dict, title: str, summary: str = "") -> Path:
    atomic_write_text(path, render_markdown(result, title, summary))
    return Path(path)


def load_result(path: str | Path) -> dict:
    result = json.loads(Path(path).read_text())
    validate(result)
    return result
