"""What the benchmark scripts share (the implementation lives in ``potstill.core.subrun``)."""
from __future__ import annotations

from pathlib import Path

from potstill.core.subrun import NEUTRAL, append_cell, load_cells  # noqa: F401  (re-exported)
from potstill.core.subrun import run_recipe as _run_recipe
from potstill.report.results import stat

ROOT = Path(__file__).resolve().parents[1]


def run_recipe(recipe: Path, overrides: list[str], out: Path, log: Path | None = None) -> dict:
    """:func:`potstill.core.subrun.run_recipe` from the repository root."""
    return _run_recipe(recipe, overrides, out, log, root=ROOT)


def dd_cell_metrics(cells: list[dict]) -> dict:
    """The per-cell figures every dataset-distillation benchmark reports (dd-v1 cells): test and
    validation accuracy over evaluation seeds, distillation seconds, peak memory, label storage."""
    metrics = {}
    for c in cells:
        k = c["cell"]
        metrics[f"{k}/test_acc"] = stat(c["test_acc"])
        metrics[f"{k}/val_acc"] = stat(c["val_acc"])
        metrics[f"{k}/distill_s"] = stat([c["distill_s"]])
        metrics[f"{k}/peak_rss_mib"] = stat([c["peak_rss_mib"]])
        if c.get("label_bytes") is not None:
            metrics[f"{k}/label_bytes"] = stat([c["label_bytes"]])
            metrics[f"{k}/soft_labels"] = stat([1.0 if c.get("soft_labels") else 0.0])
    return metrics


def add_output_args(ap, name: str, runs: str | None = None) -> None:
    """The ``--runs`` / ``--results`` / ``--name`` options of every resumable benchmark."""
    ap.add_argument("--runs", default=runs, help="run folders (checkpoints, exports); a killed run resumes there")
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results"),
                    help="where <name>.json, <name>.md and <name>.cells.jsonl are written")
    ap.add_argument("--name", default=name, help="result file name")


def open_cells(results: str | Path, name: str) -> tuple[Path, Path, dict]:
    """The results folder (created), its ``<name>.cells.jsonl`` and the cells already finished there."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    cells_path = results / f"{name}.cells.jsonl"
    return results, cells_path, load_cells(cells_path)
