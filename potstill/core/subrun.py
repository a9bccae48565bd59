"""Running one recipe in its own process, resumably and safely (benchmarks and ``potstill bench``)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

#: overrides that change how a run is executed, not what it computes
NEUTRAL = ("trainer.threads=", "eval.threads=", "trainer.progress=")


def _bytes_hash(recipe: Path) -> str:
    return hashlib.sha256(recipe.read_bytes()).hexdigest()[:16]


def recipe_hash(recipe: Path) -> str:
    """A hash of a recipe's settings: an edited setting changes it, a reworded ``description`` (or a
    comment, or the layout) does not."""
    settings = {k: v for k, v in (yaml.safe_load(Path(recipe).read_text()) or {}).items() if k != "description"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _marker(recipe: Path, overrides: list[str], root: Path) -> dict:
    """What made a run folder: the recipe's path, the overrides that change results, its settings' hash."""
    rel = recipe.resolve()
    return {"recipe": str(rel.relative_to(root)) if rel.is_relative_to(root) else str(recipe),
            "overrides": [o for o in overrides if not o.startswith(NEUTRAL)], "recipe_sha256": recipe_hash(recipe)}


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
    want = _marker(recipe, overrides, root)
    marker = out / "overrides.json"
    if marker.is_file():
        had = json.loads(marker.read_text())
        if "recipe_sha256" in had and had["recipe_sha256"] == _bytes_hash(recipe):
            had = {**had, "recipe_sha256": want["recipe_sha256"]}   # a marker written before settings hashes
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


def run_killed(recipe: Path, overrides: list[str], out: Path, delay_s: float = 0.0, root: Path | None = None,
               timeout_s: float = 300.0) -> int:
    """Start ``potstill run`` and SIGKILL it ``delay_s`` after its first checkpoint (fault injection).

    Returns the step of the latest checkpoint the killed run left; resuming is then
    ``run_recipe(..., out)`` (it passes ``--resume``). Raises if the run finished first.
    """
    import os
    import signal
    import time

    root = Path(root or Path.cwd()).resolve()
    out = Path(out)
    cmd = [sys.executable, "-m", "potstill.cli", "run", str(recipe), *overrides, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + timeout_s
    try:
        while not latest.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"{recipe}: the run ended (code {proc.returncode}) before its first checkpoint")
            if time.time() > deadline:
                raise TimeoutError(f"{recipe}: no checkpoint after {timeout_s} s")
            time.sleep(0.005)
        time.sleep(delay_s)
        if proc.poll() is not None:
            raise RuntimeError(f"{recipe}: the run finished before the kill; use a smaller delay or more steps")
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    marker = out / "overrides.json"
    if not marker.is_file():        # so that run_recipe resumes this folder instead of refusing it
        marker.write_text(json.dumps(_marker(Path(recipe), overrides, root), indent=1))
    return int(latest.read_text().strip().split("-")[1])
