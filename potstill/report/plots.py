"""PNG plots of runs and result tables (matplotlib, Agg backend, imported lazily)."""
from __future__ import annotations

import json
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(out: str | Path) -> list[Path]:
    """``plots/train.png`` (every logged loss vs step) and ``plots/val.png`` (validation metrics)."""
    out = Path(out)
    rows = read_metrics(out / "metrics.jsonl")
    written = []
    plt = _plt()
    for split, name in (("train", "train.png"), ("val", "val.png")):
        recs = [r for r in rows if r.get("split") == split]
        keys = sorted({k for r in recs for k, v in r.items() if k not in ("step", "split", "time_s") and isinstance(v, (int, float))})
        if not recs or not keys:
            continue
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
        for ax, k in zip(axes[0], keys):
            pts = [(r["step"], r[k]) for r in recs if k in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
            ax.set_title(k, fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        (out / "plots").mkdir(exist_ok=True)
        fig.savefig(out / "plots" / name, dpi=100)
        plt.close(fig)
        written.append(out / "plots" / name)
    return written


def bar_chart(rows: list[dict], key: str, path: str | Path, title: str, err_key: str | None = None) -> Path:
    """Horizontal bars of ``row[key]`` per ``row['name']`` (optional error bars)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(rows) + 1.2))
    names = [r["name"] for r in rows]
    vals = [r[key] for r in rows]
    errs = [r.get(err_key, 0) for r in rows] if err_key else None
    ax.barh(names, vals, xerr=errs, color="#4c72b0")
    lo = min(vals)
    ax.set_xlim(max(0.0, lo - 0.1 * (max(vals) - lo + 1e-3) - 0.02), max(vals) + 0.02)
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.4f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def scatter2d(points, path: str | Path, title: str, reference=None) -> Path:
    """2-D samples as a scatter plot, optionally over reference data (grey)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    if reference is not None:
        r = reference[:4000]
        ax.scatter(r[:, 0], r[:, 1], s=2, c="#bbbbbb", label="data")
    p = points[:4000]
    ax.scatter(p[:, 0], p[:, 1], s=2, c="#4c72b0", label="samples")
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7, markerscale=4)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
