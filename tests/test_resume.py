"""A run killed with SIGKILL mid-way and resumed ends exactly where an uninterrupted run ends."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

RECIPE = """
method: {name: supervised, label_smoothing: 0.1}
data: {name: digits}
student: {name: convnet, width: 16, depth: 2}
trainer:
  steps: 600
  batch_size: 32
  ckpt_every: 40
  eval_every: 100
  log_every: 20
  ema_decay: 0.9
  threads: 1
  progress: false
  optim: {default: {name: adam, lr: 0.003, schedule: cosine, warmup_steps: 20}}
"""


def potstill(*args):
    return [sys.executable, "-m", "potstill", *args]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(potstill("run", str(recipe), "--out", str(tmp_path / "full")), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(potstill("run", str(recipe), "--out", str(killed)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (killed / "checkpoints" / "latest").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.005)
    time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    step_at_kill = int((killed / "checkpoints" / "latest").read_text().strip().split("-")[1])
    assert 0 < step_at_kill < 600

    subprocess.run(potstill("run", str(recipe), "--out", str(killed), "--resume"), check=True, env=env, capture_output=True)
    full = json.loads((tmp_path / "full" / "summary.json").read_text())
    resumed = json.loads((killed / "summary.json").read_text())
    assert resumed["test"] == full["test"] and resumed["val"] == full["val"]
    assert resumed["val_history"] == full["val_history"]
    a = load_file(str(tmp_path / "full" / "export" / "model.safetensors"))
    b = load_file(str(killed / "export" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the metrics log has no duplicated steps after the resume
    steps = [(r["step"], r["split"]) for r in map(json.loads, (killed / "metrics.jsonl").read_text().splitlines())]
    assert len(steps) == len(set(steps))


def test_resume_refuses_a_changed_recipe_and_new_runs_refuse_a_used_folder(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "run"
    short = ["trainer.steps=5", "trainer.ckpt_every=0"]
    subprocess.run(potstill("run", str(recipe), *short, "--out", str(out)), check=True, capture_output=True)
    r = subprocess.run(potstill("run", str(recipe), *short, "--out", str(out)), capture_output=True, text=True)
    assert r.returncode == 2 and "already holds a run" in r.stderr
    r = subprocess.run(potstill("run", str(recipe), *short, "student.width=8", "--out", str(out), "--resume"),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "student.width" in r.stderr
    # more steps is a legitimate resume
    r = subprocess.run(potstill("run", str(recipe), "trainer.steps=8", "trainer.ckpt_every=0", "--out", str(out), "--resume"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == 8
    # a reworded description is prose, not a setting: the run resumes
    reworded = tmp_path / "r2.yaml"
    reworded.write_text("description: the same run, described anew\n" + RECIPE)
    r = subprocess.run(potstill("run", str(reworded), "trainer.steps=10", "trainer.ckpt_every=0", "--out", str(out), "--resume"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == 10
    assert not list(Path(tmp_path).glob("**/*.tmp"))


def test_run_folder_marker_ignores_a_reworded_description_but_not_a_setting(tmp_path):
    from potstill.core.subrun import run_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("description: first words\n" + RECIPE)
    out, short = tmp_path / "run", ["trainer.steps=5", "trainer.ckpt_every=0"]
    first = run_recipe(recipe, short, out, root=tmp_path)
    recipe.write_text("description: other words\n" + RECIPE)
    assert run_recipe(recipe, short, out, root=tmp_path) == first       # the same run, reused
    recipe.write_text(RECIPE.replace("width: 16", "width: 8"))
    with pytest.raises(SystemExit, match="was made with"):
        run_recipe(recipe, short, out, root=tmp_path)
