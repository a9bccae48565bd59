"""Kill-and-resume for one method per pillar: SIGKILL after a checkpoint, --resume, and the run ends
bitwise where an uninterrupted run ends (CPU, one thread). KD's own test is tests/test_resume.py."""
import json

import pytest
import torch
from safetensors.torch import load_file

from pillar_recipes import PILLARS
from potstill.core.subrun import run_killed, run_recipe


@pytest.mark.parametrize("pillar", ["dd", "gen", "lm"])
def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path, pillar):
    recipe = tmp_path / f"{pillar}.yaml"
    recipe.write_text(PILLARS[pillar])
    full = run_recipe(recipe, [], tmp_path / "full", log=tmp_path / "full.log")
    step = run_killed(recipe, [], tmp_path / "killed", delay_s=0.2)
    assert 0 < step < full["steps"]
    assert not (tmp_path / "killed" / "summary.json").exists()
    resumed = run_recipe(recipe, [], tmp_path / "killed", log=tmp_path / "killed.log")
    assert resumed["steps"] == full["steps"]
    assert resumed.get("test") == full.get("test") and resumed.get("val") == full.get("val")
    a = load_file(str(tmp_path / "full" / "export" / "model.safetensors")) if pillar != "dd" else None
    if pillar == "dd":      # a distilled set: its images and labels
        a = load_file(str(tmp_path / "full" / "export" / "synthetic.safetensors"))
        b = load_file(str(tmp_path / "killed" / "export" / "synthetic.safetensors"))
    else:
        b = load_file(str(tmp_path / "killed" / "export" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [(r["step"], r["split"]) for r in map(json.loads, (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines())]
    assert len(steps) == len(set(steps))
