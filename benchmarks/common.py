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
