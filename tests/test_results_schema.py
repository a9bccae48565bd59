from pathlib import Path

import pytest

from potstill.report.results import load_result, render_markdown, stat, validate, write_result

RESULTS = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "results").glob("*.json"))


def example():
    return {"catalog_ids": ["B1"], "command": "python benchmarks/x.py", "dataset": "digits", "seeds": [0, 1, 2],
            "metrics": {"kd/test_acc": stat([0.9, 0.92, 0.91])}, "baselines": {"scratch/test_acc": stat([0.8, 0.82, 0.81])},
            "wall_clock_s": 1.0, "machine": "m", "date": "2026-01-01", "notes": ""}


def test_stat_is_mean_and_sample_std():
    s = stat([1.0, 2.0, 3.0])
    assert s == {"mean": 2.0, "std": 1.0, "n": 3}


def test_schema_rejects_missing_and_malformed(tmp_path):
    r = example()
    write_result(tmp_path / "r.json", r)
    assert load_result(tmp_path / "r.json") == r
    assert "kd/test_acc | 0.9100 ± 0.0100 | 3" in render_markdown(r, "t")
    bad = dict(r)
    del bad["machine"]
    with pytest.raises(ValueError, match="missing \\['machine'\\]"):
        validate(bad)
    with pytest.raises(ValueError, match="must be {mean, std, n}"):
        validate({**r, "metrics": {"kd/test_acc": 0.9}})


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_committed_results_follow_the_schema(path):
    r = load_result(path)
    assert len(r["seeds"]) >= 3 or "fast" in path.name
