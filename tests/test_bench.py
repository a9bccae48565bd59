"""potstill bench: one result per method, up-to-date results skipped, a changed recipe reruns it and its students."""
import json

import pytest

from potstill import bench
from potstill.bench import Entry, Suite, code_version, metrics_of
from potstill.report.results import load_result

TEACHER = """method: {name: supervised}
data: {name: digits}
student: {name: mlp, hidden: [32]}
trainer: {steps: 30, batch_size: 32, progress: false, threads: 1, eval_every: 30, optim: {default: {name: sgd, lr: 0.1}}}
"""
KD = """method: {name: kd, temperature: 2.0, alpha: 0.5}
data: {name: digits}
student: {name: mlp, hidden: [16]}
teacher: {model: {name: mlp, hidden: [32]}, checkpoint: none}
trainer: {steps: 20, batch_size: 32, progress: false, threads: 1, eval_every: 20, optim: {default: {name: sgd, lr: 0.1}}}
"""


@pytest.fixture
def suite(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "teacher.yaml").write_text(TEACHER)
    (tmp_path / "recipes" / "kd.yaml").write_text(KD)
    s = Suite("toy", "toy suite", ("B1",), "digits", "toy-v1",
              (Entry("teacher", "recipes/teacher.yaml", reference=True, once=True),
               Entry("kd", "recipes/kd.yaml", teacher="teacher")))
    monkeypatch.setitem(bench.SUITES, "toy", s)
    return tmp_path


def make(root, **kw):
    return bench.plan("toy", seeds=2, results=root / "results", runs=root / "runs", root=root, **kw)


def test_bench_writes_one_result_per_method_and_skips_up_to_date_ones(suite):
    root = suite
    status = bench.run(make(root), progress=False, log=lambda *a: None)
    assert status == {"teacher": "done", "kd": "done"}
    kd = load_result(root / "results" / "toy" / "kd.json")
    teacher = load_result(root / "results" / "toy" / "teacher.json")
    assert kd["seeds"] == [0, 1] and kd["metrics"]["kd/test_acc"]["n"] == 2 and kd["baselines"] == {}
    assert teacher["baselines"]["teacher/test_acc"]["n"] == 1 and teacher["metrics"] == {}
    assert kd["command"] == "potstill bench toy --methods kd --seeds 2"
    assert kd["provenance"]["code"] == code_version() and kd["provenance"]["protocol"] == "toy-v1"
    # the kd runs read the teacher's export
    over = json.loads((root / "runs" / "toy" / "kd-s0" / "overrides.json").read_text())["overrides"]
    assert f"teacher.checkpoint={root / 'runs' / 'toy' / 'teacher'}/export/model.safetensors" in over
    assert "trainer.seed=0" in over

    assert bench.run(make(root), progress=False, log=lambda *a: None) == {"teacher": "skipped", "kd": "skipped"}
    # a reworded description is not a new setting: still up to date
    (root / "recipes" / "teacher.yaml").write_text("description: a small MLP teacher\n" + TEACHER)
    p = make(root)
    assert p.up_to_date(p.entry("teacher")) and p.up_to_date(p.entry("kd"))

    # an edited teacher recipe makes the teacher and every method distilled from it stale
    (root / "recipes" / "teacher.yaml").write_text(TEACHER.replace("steps: 30", "steps: 31"))
    p = make(root)
    assert not p.up_to_date(p.entry("teacher")) and not p.up_to_date(p.entry("kd"))
    # an edited student recipe touches only that method
    (root / "recipes" / "teacher.yaml").write_text(TEACHER)
    (root / "recipes" / "kd.yaml").write_text(KD.replace("alpha: 0.5", "alpha: 0.7"))
    p = make(root)
    assert p.up_to_date(p.entry("teacher")) and not p.up_to_date(p.entry("kd"))


def test_bench_refuses_unknown_suites_methods_and_seed_counts(suite):
    with pytest.raises(ValueError, match="unknown suite 'nope'"):
        bench.plan("nope")
    with pytest.raises(ValueError, match="no method 'dm'.*teacher, kd"):
        make(suite, methods=["dm"])
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        bench.plan("toy", seeds=0, root=suite)
    # asking for a student brings its teacher along
    assert [e.name for e in make(suite, methods=["kd"]).entries] == ["teacher", "kd"]


def test_quick_mode_has_its_own_folders_and_two_seeds(suite):
    p = make(suite, quick=True)
    assert p.seeds == bench.QUICK_SEEDS and p.results.name == "quick" and p.runs.name == "toy-quick"


def test_metrics_of_reads_splits_evaluation_seeds_and_cost():
    m = metrics_of({"val": {"acc": 0.5, "tokens": 9}, "test": {"acc": 0.4}, "wall_clock_s": 3,
                    "eval": {"test_acc": {"values": [70.0, 72.0]}}, "label_bytes": 100, "soft_labels": False})
    assert m == {"val_acc": [0.5], "test_acc": [70.0, 72.0], "wall_clock_s": [3.0], "label_bytes": [100.0],
                 "soft_labels": [0.0]}


def test_every_registered_suite_points_at_existing_recipes():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for s in bench.SUITES.values():
        names = {e.name for e in s.entries}
        for e in s.entries:
            assert (root / e.recipe).is_file(), e.recipe
            assert not e.quick_recipe or (root / e.quick_recipe).is_file(), e.quick_recipe
            assert not e.teacher or e.teacher in names
