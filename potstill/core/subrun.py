"""Running one recipe in its own process, resumably and safely (benchmarks and ``potstill bench``)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

#: overrides that change how a run is executed, not what it computes
NEUTRAL = ("trainer.threads=", "eval.threads=", "trainer.progress=")


def run_recipe(recipe: Path, overrides: list[str], out: Path, log: Path | None = None,
               root: Path | None = None) -> dict:
    """``potstill run recipe overrides --out out`` in a child process (its own peak memory); the summary.

    A finished folder is reused, a killed one resumed. The recipe and overrides that made a folder
    are kept in ``out/overrides.json``: asking for the same folder with different settings is an
    error instead of silently returning the old result. ``root`` (default: the working directory)
    is where the child runs and what recipe paths are recorded relative to.
    """
    root = Path(root or Path.cwd()).resolve()
    recipe, out = Path(recipe), Path(out)
    rel = recipe.resolve()
    want = {"recipe": str(rel.relative_to(root)) if rel.is_relative_to(root) else str(recipe),
            "overrides": [o for o in overrides if not o.startswith(NEUTRAL)]}
    want["recipe_sha256"] = hashlib.sha256(recipe.read_bytes()).hexdigest()[:16]   # an edited recipe is another run
    marker = out / "overrides.json"
    if marker.is_file():
        had = json.loads(marker.read_text())
        if had != {k: v for k, v in want.items() if k in had or k != "recipe_sha256"}:
            raise SystemExit(f"{out} was made with {had}, not {want}: "
                             "choose another --runs folder (or --name / --tag) for other settings")
    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        marker.write_text(json.dumps(want, indent=1))
    cmd = [sys.executable, "-m", "potstill.cli", "run", str(recipe), *overrides, "--out", str(out)]
    if (out / "config.yaml").is_file():
        cmd.append("--resume")
    if log is None:
        subprocess.run(cmd, check=True, cwd=root)
    else:
        with open(log, "a") as f:
            subprocess.run(cmd, check=True, cwd=root, stdout=f, stderr=subprocess.STDOUT)
    return json.loads((out / "summary.json").read_text())


def load_cells(path: Path) -> dict[str, dict]:
    """The finished cells of a benchmark (``<name>.cells.jsonl``), by their ``cell`` key."""
    path = Path(path)
    if not path.is_file():
        return {}
    return {json.loads(ln)["cell"]: json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()}


def append_cell(path: Path, done: dict, rec: dict) -> None:
    """Record one finished cell (appended, so a killed benchmark keeps what it had)."""
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    done[rec["cell"]] = rec
