"""Leaderboard (catalog X2, X3): the label-robust score by hand, rendering from fixture results."""
import json
import math
import shutil

import pytest

from potstill.report.leaderboard import build, dd_scores, label_robust_score, rows_of, screenshot, sort_rows, VIEWS
from potstill.report.results import stat, write_result


def test_label_robust_score_matches_a_hand_computation():
    # IOR = 0.80 − 0.60 = 0.20, HLR = 0.90 − 0.70 = 0.20, α = ½·0.2 − ½·0.2 = 0
    assert label_robust_score(0.90, 0.70, 0.80, 0.60) == pytest.approx((1 - math.exp(-1)) / (math.e - math.exp(-1)))
    # IOR = 0.3, HLR = 0.1: α = 0.1 → (e^0.1 − e^−1)/(e − e^−1) = 0.3137...
    assert label_robust_score(0.90, 0.80, 0.85, 0.55) == pytest.approx(
        (math.exp(0.1) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert label_robust_score(0.0, 1.0, 1.0, 0.0) == pytest.approx(1.0)     # α = 1: the top of [0, 1]
    assert label_robust_score(1.0, 0.0, 0.0, 1.0) == pytest.approx(0.0)     # α = −1: the bottom
    with pytest.raises(ValueError, match="fractions"):
        label_robust_score(93.5, 82.0, 82.0, 74.9)                           # percentages are refused


def dd_result():
    m = {"dm/ipc10/test_acc": stat([80.0, 81.0, 82.0]), "dm/ipc10/label_bytes": stat([100]),
         "dm/ipc10/soft_labels": stat([0]), "random/ipc10/test_acc": stat([74.0, 75.0, 76.0]),
         "random/ipc10/label_bytes": stat([100]), "dm/ipc1/test_acc": stat([70.0, 71.0, 72.0]),
         "random/ipc1/test_acc": stat([50.0, 50.0, 50.0]),
         # a soft-label method, its hard-label twin and the random subset relabelled with its soft labels
         "sre/ipc10/test_acc": stat([85.0, 85.0, 85.0]), "sre/ipc10/soft_labels": stat([1]),
         "sre/ipc10/label_bytes": stat([4000]), "sre-hard/ipc10/test_acc": stat([60.0, 60.0, 60.0]),
         "random+sre/ipc10/test_acc": stat([83.0, 83.0, 83.0])}
    b = {"published/dm/ipc10/test_acc": stat([83.5]), "published/full_data/test_acc": stat([93.5]),
         "full_data/test_acc": stat([92.0, 92.0, 92.0])}
    return {"catalog_ids": ["B5"], "command": "python benchmarks/dd_fmnist.py", "dataset": "fmnist", "seeds": [0, 1, 2],
            "metrics": m, "baselines": b, "wall_clock_s": 1.0, "machine": "m", "date": "2026-11-28", "notes": ""}


def gen_result():
    m = {f"dmd2/multistep{k}/{q}": stat([v]) for k, f in ((1, 30.0), (4, 12.0)) for q, v in (("fid", f), ("nfe", k))}
    b = {f"teacher/heun{k}/{q}": stat([v]) for k, f in ((18, 8.0), (5, 40.0)) for q, v in (("fid", f), ("nfe", 2 * k - 1))}
    return {"catalog_ids": ["G4"], "command": "python benchmarks/gen_fmnist.py", "dataset": "fmnist", "seeds": [0, 1, 2],
            "metrics": m, "baselines": b, "wall_clock_s": 1.0, "machine": "m", "date": "2026-11-28", "notes": ""}


def test_rows_pivot_and_published_rows_are_marked():
    rows = {(r.kind, r.name): r for r in rows_of(dd_result())}
    assert rows[("ours", "dm/ipc10")].values["test_acc"]["mean"] == 81.0
    assert ("published", "dm/ipc10") in rows and ("reference", "full_data") in rows
    ordered = sort_rows(list(rows.values()), VIEWS["dd_fmnist"])
    ours = [r.name for r in ordered if r.kind == "ours"]
    assert ours[0] == "sre/ipc10" and ordered[-1].kind == "published"          # best first, published last


def test_dd_tracks_and_label_robust_scores():
    res = dd_result()
    scores = {x["row"]: x for x in dd_scores(rows_of(res), res)}
    assert scores["dm/ipc10"]["track"] == "hard-label" and scores["sre/ipc10"]["track"] == "soft-label"
    assert scores["dm/ipc10"]["random"] == "random/ipc10" and scores["sre/ipc10"]["random"] == "random+sre/ipc10"
    assert scores["dm/ipc10"]["lrs"] == pytest.approx(label_robust_score(0.92, 0.81, 0.81, 0.75))   # our full data
    # a soft-label row is judged by its hard-label twin (HLR) and the same-soft-label random subset (IOR)
    assert scores["sre/ipc10"]["lrs"] == pytest.approx(label_robust_score(0.92, 0.60, 0.85, 0.83))
    assert "random/ipc10" not in scores


def test_leaderboard_renders_from_fixture_results(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    write_result(results / "dd_fmnist.json", dd_result())
    write_result(results / "gen_fmnist.json", gen_result())
    out = build(results, tmp_path / "LEADERBOARD.md", tmp_path / "site" / "index.html")
    md = (tmp_path / "LEADERBOARD.md").read_text()
    page = (tmp_path / "site" / "index.html").read_text()
    assert sorted(out["sections"]) == ["dd_fmnist", "gen_fmnist"]
    assert "[81.00 ± 1.00](#reproduce-dd-fmnist) (83.5)" in md                 # ours, published in brackets
    assert '<a id="reproduce-dd-fmnist"></a>Reproduce: `python benchmarks/dd_fmnist.py`' in md
    assert "**hard-label track**" in md and "**soft-label track**" in md
    assert f"{label_robust_score(0.92, 0.81, 0.81, 0.75):.4f}" in md
    assert "| dmd2/multistep4 | ours | [12.00]" in md
    assert md.index("dmd2/multistep4") < md.index("dmd2/multistep1")          # FID: lower is better
    assert "<tr class='published'>" in page and "href='#reproduce-gen-fmnist'" in page
    for p in ("dd_fmnist_ipc.png", "gen_fmnist_nfe.png"):
        assert (tmp_path / "site" / p).stat().st_size > 5000 and f"src='./{p}'" in page


def test_leaderboard_names_a_malformed_result_file(tmp_path):
    (tmp_path / "broken.json").write_text(json.dumps({"command": "x"}))
    with pytest.raises(ValueError, match="broken.json.*missing"):
        build(tmp_path, tmp_path / "L.md", tmp_path / "index.html")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        build(tmp_path, tmp_path / "L.md", tmp_path / "index.html")
    assert not (tmp_path / "L.md").exists()


@pytest.mark.skipif(not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")),
                    reason="headless Chromium not installed (apt-get install -y chromium)")
def test_the_page_renders_in_headless_chromium(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    write_result(results / "gen_fmnist.json", gen_result())
    out = build(results, tmp_path / "L.md", tmp_path / "site" / "index.html")
    png = screenshot(out["html"], tmp_path / "shot.png", width=800, height=600)
    from PIL import Image

    img = Image.open(png)
    assert img.size == (800, 600)
    import numpy as np

    assert len(np.unique(np.asarray(img.convert("L")))) > 10                 # not a blank page


def test_bench_suite_files_merge_into_one_section(tmp_path):
    from potstill.report.leaderboard import collect

    d = tmp_path / "bench" / "kd-fmnist"
    d.mkdir(parents=True)
    base = {"catalog_ids": ["B1"], "dataset": "fmnist", "seeds": [0, 1, 2], "wall_clock_s": 2.0, "machine": "m",
            "date": "2026-11-28", "notes": "", "baselines": {}, "metrics": {}}
    write_result(d / "kd.json", {**base, "command": "potstill bench kd-fmnist --methods kd",
                                 "metrics": {"kd/test_acc": stat([0.9, 0.91, 0.92])}, "provenance": {"key": "k"}})
    write_result(d / "scratch.json", {**base, "command": "potstill bench kd-fmnist --methods scratch",
                                      "baselines": {"scratch/test_acc": stat([0.88, 0.88, 0.89])}})
    (sec,) = collect(tmp_path)
    assert sec.name == "kd-fmnist" and sec.result["command"] == "potstill bench kd-fmnist"
    assert [(r.kind, r.name) for r in sec.rows] == [("reference", "scratch"), ("ours", "kd")]
    assert sec.result["wall_clock_s"] == 4.0 and sec.source == "bench/kd-fmnist/*.json"
    # --quick results: their own section, marked, with the --quick command, and never "at a glance"
    from potstill.report.leaderboard import glance

    q = tmp_path / "bench" / "quick" / "kd-fmnist"
    q.mkdir(parents=True)
    write_result(q / "kd.json", {**base, "command": "potstill bench kd-fmnist --methods kd --quick",
                                 "metrics": {"kd/test_acc": stat([0.5, 0.6])}})
    secs = {s.name: s for s in collect(tmp_path)}
    assert sorted(secs) == ["kd-fmnist", "kd-fmnist-quick"]
    quick = secs["kd-fmnist-quick"]
    assert quick.result["command"] == "potstill bench kd-fmnist --quick" and "--quick" in quick.view.title
    assert [g["name"] for g in glance(list(secs.values()))] == ["kd-fmnist"]


def test_glance_ranks_within_a_trailing_setting_never_across(tmp_path):
    from potstill.report.leaderboard import collect, glance

    # method/target/mode rows (dd_transfer): the best per target, and a row without the metric is no group
    m = {"krr/fm/ft/test_acc": stat([73.0, 74.0]), "krr/dg/ft/test_acc": stat([97.0, 97.0]), "krr/distill_s": stat([9.0])}
    b = {"rnd/fm/ft/test_acc": stat([75.0, 75.0]), "rnd/dg/ft/test_acc": stat([96.0, 96.0])}
    write_result(tmp_path / "dd_transfer_fmnist.json",
                 {"catalog_ids": ["D9"], "command": "c", "dataset": "fmnist", "seeds": [0, 1], "metrics": m,
                  "baselines": b, "wall_clock_s": 1.0, "machine": "m", "date": "2026-11-28", "notes": ""})
    rows = {g["title"].rsplit(", ", 1)[1]: g for g in glance(collect(tmp_path))}
    assert sorted(rows) == ["dg/ft", "fm/ft"]
    assert rows["fm/ft"]["ours"].name == "krr/fm/ft" and rows["fm/ft"]["reference"].name == "rnd/fm/ft"
    assert rows["dg/ft"]["ours"].values["test_acc"]["mean"] == 97.0
