from pathlib import Path

import pytest

import potstill
from potstill.demo import run_demo

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))


def test_every_registered_catalog_method_has_a_recipe():
    used = {potstill.resolve(r).method.name for r in RECIPES}
    for name in potstill.METHODS.names():
        assert name in used, f"method {name!r} has no recipe under recipes/"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_resolves_strictly(recipe):
    cfg = potstill.resolve(recipe)
    assert cfg.description, "recipes say what they are for"
    assert potstill.resolve(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_fast_demo_writes_a_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POTSTILL_CACHE", str(tmp_path / "cache"))
    assert run_demo("kd", tmp_path / "demo", fast=True) == 0
    report = (tmp_path / "demo" / "report.md").read_text()
    for name in ("teacher", "scratch", "kd (B1)", "kd+fitnets (B1+B2)", "label_free (K7)"):
        assert name in report
    assert (tmp_path / "demo" / "kd_accuracy.png").is_file()
    # the teacher is cached and reused by the next demo
    run_demo("kd", tmp_path / "demo2", fast=True)
    assert "teacher: reusing" in capsys.readouterr().out


@pytest.mark.parametrize("pillar,section,picture", [("dd", "## Dataset distillation", "dd/dm/export/synthetic.png"),
                                                    ("gen", "## Generative distillation", "gen_samples.png")])
def test_fast_demo_of_the_other_pillars(pillar, section, picture, tmp_path, monkeypatch):
    monkeypatch.setenv("POTSTILL_CACHE", str(tmp_path / "cache"))
    assert run_demo(pillar, tmp_path / "demo", fast=True) == 0
    report = (tmp_path / "demo" / "report.md").read_text()
    assert section in report and (tmp_path / "demo" / picture).is_file()
