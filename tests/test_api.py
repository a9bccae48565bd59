import json

import pytest
import torch
import torch.nn as nn

import potstill


def mlp(hidden):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def test_distill_with_user_modules_and_tensors(digits, tmp_path):
    torch.manual_seed(0)
    xtr, ytr = digits.train.x, digits.train.y
    teacher = potstill.distill(None, mlp(128), (xtr, ytr), method="supervised", steps=150, lr=3e-3,
                               val_data=(digits.val.x, digits.val.y), progress=False).model
    res = potstill.distill(teacher, mlp(16), (xtr, ytr), method="kd", temperature=4.0, alpha=0.9, steps=150, lr=3e-3,
                           val_data=(digits.val.x, digits.val.y), test_data=(digits.test.x, digits.test.y),
                           out=tmp_path / "kd", progress=False, cache_teacher=True)
    assert isinstance(res.model, nn.Sequential) and res.model[1].out_features == 16
    assert res.summary["val"]["acc"] > 0.8 and "test" in res.summary
    assert (tmp_path / "kd" / "metrics.jsonl").is_file()
    assert any(p.name == "latest" for p in (tmp_path / "kd" / "checkpoints").iterdir())


def test_distill_rejects_unknown_method_options():
    with pytest.raises(potstill.ConfigError, match="unknown key 'method.temp'.*temperature"):
        potstill.distill(mlp(4), mlp(4), (torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)), temp=2.0)
    with pytest.raises(potstill.ConfigError, match="unknown method 'nope'"):
        potstill.distill(mlp(4), mlp(4), (torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)), method="nope")


def test_run_recipe_and_load_model(tmp_path, digits):
    recipe = {"method": {"name": "supervised"}, "data": {"name": "digits"},
              "student": {"name": "resnet", "width": 4, "blocks": [1, 1]},
              "trainer": {"steps": 20, "batch_size": 32, "progress": False}}
    summary = potstill.run_recipe(recipe, tmp_path / "r")
    model = potstill.load_model(tmp_path / "r")
    acc = potstill.eval.classification.evaluate_classifier(model, digits.test)["acc"]
    assert acc == pytest.approx(summary["test"]["acc"])
    saved = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert saved["params"] == potstill.count_params(model) and saved["dataset"] == "digits"
    assert (tmp_path / "r" / "plots" / "train.png").is_file() and (tmp_path / "r" / "config.yaml").is_file()
