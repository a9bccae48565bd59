"""Faults: a non-finite loss, a full disk, an unwritable run folder, a corrupt checkpoint, mixed precision."""
import errno
import json
import subprocess
import sys

import pytest
import torch

import potstill
from potstill.core.checkpoint import latest_checkpoint, load_checkpoint
from potstill.errors import CheckpointError, TrainingError
from test_trainer import DATA, TwoGroups

RECIPE = """method: {name: supervised}
data: {name: digits}
student: {name: mlp, hidden: [32]}
trainer: {steps: 60, batch_size: 32, progress: false, threads: 1, ckpt_every: 20, eval_every: 60,
          optim: {default: {name: adam, lr: 0.003}}}
"""


def trainer(tmp_path, **kw):
    from conftest import make_tiny_trainer

    return potstill.Trainer(make_tiny_trainer(**{"steps": 12, "ckpt_every": 5, **kw}), tmp_path / "run")


def test_a_nan_loss_stops_the_run_naming_group_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    class GoesBad(TwoGroups):
        def loss(self, batch, step):
            out = super().loss(batch, step)
            if step == 7:
                out["b"] = out["b"] * float("inf")
            return out

    t = trainer(tmp_path)
    with pytest.raises(TrainingError, match=r"step 7: the loss of parameter group 'b' is inf .*step-0000005"):
        t.fit(GoesBad(), DATA)
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt.name == "step-0000005"                                  # nothing written after the bad step
    tensors, meta = load_checkpoint(ckpt)
    assert meta["step"] == 5 and all(torch.isfinite(v).all() for v in tensors.values())


def test_a_full_disk_is_a_clear_error_and_earlier_checkpoints_stay(tmp_path, monkeypatch):
    import potstill.core.checkpoint as ck

    real, calls = ck.atomic_save_safetensors, []

    def fill_up(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, metadata)

    monkeypatch.setattr(ck, "atomic_save_safetensors", fill_up)
    with pytest.raises(CheckpointError, match=r"step-0000010 .*No space left on device; earlier checkpoints are untouched"):
        trainer(tmp_path).fit(TwoGroups(), DATA)
    root = tmp_path / "run" / "checkpoints"
    assert latest_checkpoint(root).name == "step-0000005"
    assert load_checkpoint(root / "step-0000005")[1]["step"] == 5
    assert not list(root.glob(".step-*"))                               # no half-written temporaries


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "potstill", *args], capture_output=True, text=True, timeout=120)


def test_an_unwritable_run_folder_is_one_error_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    (tmp_path / "afile").write_text("not a folder")
    r = run_cli("run", str(recipe), "--out", str(tmp_path / "afile" / "run"))
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "cannot write the run folder" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_corrupt_checkpoint_on_resume_is_one_error_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    assert run_cli("run", str(recipe), "--out", str(tmp_path / "run")).returncode == 0
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    (ckpt / "state.safetensors").write_bytes(b"\x00" * 40)
    r = run_cli("run", str(recipe), "trainer.steps=80", "--out", str(tmp_path / "run"), "--resume")
    assert r.returncode == 3 and f"checkpoint {ckpt} is unreadable" in r.stderr and "Traceback" not in r.stderr


def test_bf16_autocast_trains_on_cpu_and_fp16_needs_a_gpu(tmp_path):
    import yaml

    raw = yaml.safe_load(RECIPE)
    accs = {}
    for prec in ("fp32", "bf16"):
        cfg = potstill.resolve(raw, [f"trainer.precision={prec}", "trainer.steps=150", "trainer.eval_every=150"])
        accs[prec] = potstill.core.run.run(cfg, tmp_path / prec)["val"]["acc"]
    assert accs["bf16"] > 0.85 and abs(accs["bf16"] - accs["fp32"]) < 0.05
    from potstill.core.config import ConfigError

    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        potstill.core.run.run(potstill.resolve(raw, ["trainer.precision=fp16"]), tmp_path / "fp16")
    with pytest.raises(ConfigError, match="trainer.precision"):
        potstill.resolve(raw, ["trainer.precision=fp8"])
    assert not (tmp_path / "fp16").exists()


def test_resolving_a_recipe_error_lists_the_config_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps([1, 2]))
    from potstill.core.config import ConfigError

    with pytest.raises(ConfigError):
        potstill.resolve(path)
