"""What the benchmark scripts share (the implementation lives in ``potstill.core.subrun``)."""
from __future__ import annotations

from pathlib import Path

from potstill.core.subrun import NEUTRAL, append_cell, load_cells  # noqa: F401  (re-exported)
from potstill.core.subrun import run_recipe as _run_recipe

ROOT = Path(__file__).resolve().parents[1]


def run_recipe(recipe: Path, overrides: list[str], out: Path, log: Path | None = None) -> dict:
    """:func:`potstill.core.subrun.run_recipe` from the repository root."""
    return _run_recipe(recipe, overrides, out, log, root=ROOT)
