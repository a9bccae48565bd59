"""The leaderboard: every committed benchmark result in one Markdown file and one static HTML page.

``potstill leaderboard`` reads ``benchmarks/results/*.json`` (the schema of
:mod:`potstill.report.results`) and writes ``LEADERBOARD.md`` and ``docs/leaderboard/index.html``
with its plots. Nothing is typed in by hand: every number comes from a result file, and every
number links to the command that reproduces it. Published reference numbers (baselines named
``published/...``) sit beside ours and are marked as such; reference rows run by us in the same
benchmark (teacher, scratch, the real data) are marked "reference".

A metric named ``a/b/c/metric`` is the value ``metric`` of the row ``a/b/c``. How a result file is
shown (its columns, which metric ranks the rows, which way is better, images, plots) is a
:class:`View` in ``VIEWS``; a file without one gets every metric as a column.

Dataset distillation gets two more things (catalog X3):

* hard-label and soft-label tracks apart (a row is soft when its ``soft_labels`` metric is 1),
  with the label storage in bytes (``label_bytes``);
* the label-robust score of DD-Ranking (Li et al., arXiv 2505.13300), with accuracies as
  *fractions* so that it stays in [0, 1] (:func:`label_robust_score`).
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from .results import load_result


@dataclass(frozen=True)
class Column:
    metric: str                 # last component of the metric name
    header: str
    decimals: int = 2
    scale: float = 1.0          # shown value = value × scale (e.g. 100 for fractions shown in %)


@dataclass(frozen=True)
class View:
    title: str
    pillar: str
    columns: tuple[Column, ...]
    primary: str                            # the metric that ranks rows
    higher_is_better: bool = True
    images: tuple[str, ...] = ()            # PNGs, relative to the results folder
    plot: str = ""                          # "ipc" (accuracy vs IPC) or "nfe" (quality vs NFE)
    plot_metric: str = ""                   # y of the plot (default: primary)
    reference: str = ""                     # regex: rows of "metrics" that are comparison rows, not methods
    group_depth: int = 0                    # "at a glance": rank within groups of rows sharing this many name parts
    group_tail: int = 0                     # ... or sharing this many trailing name parts (row = method/setting)


PILLARS = ("Knowledge distillation", "Dataset distillation", "Generative distillation", "Language models", "Reliability")

_KD_COLS = (Column("test_acc", "test acc (%)", 2, 100.0), Column("val_acc", "val acc (%)", 2, 100.0),
            Column("params", "params", 0),
            Column("latency_ms", "latency (ms)", 3), Column("wall_clock_s", "train s", 0))
_GEN_COLS = (Column("fid", "FID-fmnist ↓"), Column("precision", "precision", 3), Column("recall", "recall", 3),
             Column("class_acc", "class acc (%)", 1), Column("nfe", "NFE", 0), Column("s_per_1000", "s / 1000 samples", 2))
_TOY_COLS = (Column("swd", "sliced W ↓", 4), Column("mmd", "MMD ↓", 4), Column("mode_coverage", "mode coverage", 3),
             Column("high_quality", "high-quality share", 3), Column("nfe", "NFE", 0),
             Column("s_per_1000", "s / 1000 samples", 3))

VIEWS: dict[str, View] = {
    "kd_fmnist": View("Classifier KD on Fashion-MNIST (10k labels)", PILLARS[0], _KD_COLS, "test_acc",
                      images=("kd_fmnist.png",)),
    "kd_fmnist_full": View("Classifier KD on Fashion-MNIST (all 55k labels)", PILLARS[0], _KD_COLS, "test_acc",
                           images=("kd_fmnist_full.png",)),
    "kd_fmnist_noaug": View("Classifier KD on Fashion-MNIST (no augmentation)", PILLARS[0], _KD_COLS, "test_acc",
                            images=("kd_fmnist_noaug.png",)),
    "dd_fmnist": View("Dataset distillation on Fashion-MNIST (ConvNet-3, protocol dd-v1)", PILLARS[1],
                      (Column("test_acc", "test acc (%)"), Column("val_acc", "val acc (%)"),
                       Column("label_bytes", "label bytes", 0), Column("distill_s", "distill s", 0),
                       Column("peak_rss_mib", "peak RSS MiB", 0)),
                      "test_acc", images=("dd_fmnist/dm_ipc10_bsiam.png", "dd_fmnist/datadam_ipc10_s2000bs.png"), plot="ipc"),
    "gen_fmnist": View("Generative distillation on Fashion-MNIST (EDM teacher)", PILLARS[2], _GEN_COLS, "fid",
                       higher_is_better=False, images=("gen_fmnist.png",), plot="nfe"),
    "gen_toy2d": View("Generative distillation on toy 2-D mixtures", PILLARS[2], _TOY_COLS, "swd",
                      higher_is_better=False, images=("gen_toy2d.png",), plot="nfe"),
    "lm_text": View("Token-level LM distillation (divergences, on/off-policy)", PILLARS[3],
                    (Column("test_exact", "test exact match (%)", 1), Column("val_exact", "val exact match (%)", 1),
                     Column("val_bpc", "val bits/char ↓", 3), Column("test_bpc", "test bits/char ↓", 3),
                     Column("train_s", "train s", 0)), "test_exact", reference=r"/scratch"),
    "distillspec": View("DistillSpec: speculative decoding with distilled drafts", PILLARS[3],
                        (Column("acceptance", "acceptance", 3), Column("speedup", "speed-up ×", 2),
                         Column("tokens_per_target_call", "tokens / target call", 2), Column("seconds", "seconds", 2)),
                        "speedup", reference=r"^(undistilled|continued)/"),
    "swing": View("Swing distillation: canary exposure (privacy)", PILLARS[3],
                  (Column("exposure_inserted", "exposure, inserted (bits) ↓"),
                   Column("exposure_unseen", "exposure, unseen (bits)"), Column("val_nll", "val NLL ↓", 3),
                   Column("val_bpc", "val bits/char ↓", 3)), "exposure_inserted", higher_is_better=False,
                  reference=r"^(plain_kd|clean_scratch|swing_clean_transfer|swing_kd_only|swing_untied)"),
    "kd_seed": View("Seed KD methods: FF-G2M (graph -> MLP), quantized distillation", PILLARS[0],
                    (Column("test_acc", "test acc (%)"), Column("val_acc", "val acc (%)"),
                     Column("weight_bytes", "weight bytes", 0), Column("train_s", "train s", 0)),
                    "test_acc", group_depth=2),
    "reliability": View("Reliability: kill-and-resume, fuzzed input, torchrun agreement", PILLARS[4],
                        (Column("identical", "resumed bitwise identical (share)", 2),
                         Column("killed_at_step", "killed at step", 0), Column("tried", "fuzzed inputs", 0),
                         Column("rejected_cleanly", "rejected cleanly", 0), Column("loaded", "loaded (harmless)", 0),
                         Column("crashed", "crashed ↓", 0), Column("max_weight_diff", "torchrun max weight diff", 4)),
                        "identical"),
    "mgsr_ablation": View("MGSR ablation (each part added in turn)", PILLARS[3],
                          (Column("val_bpc", "val bits/char ↓", 3), Column("test_bpc", "test bits/char ↓", 3),
                           Column("rouge_l", "ROUGE-L (%)", 1), Column("train_s", "train s", 0)),
                          "val_bpc", higher_is_better=False),
    "dd_trajectory_digits": View("Trajectory matching on digits (MTT, FTD, DATM, AST; dd-v1)", PILLARS[1],
                                 (Column("test_acc", "test acc (%)"), Column("val_acc", "val acc (%)"),
                                  Column("label_bytes", "label bytes", 0), Column("distill_s", "distill s", 0),
                                  Column("peak_rss_mib", "peak RSS MiB", 0)), "test_acc", plot="ipc"),
    "dd_trajectory_fmnist": View("Trajectory matching on Fashion-MNIST (CPU budget; dd-v1)", PILLARS[1],
                                 (Column("test_acc", "test acc (%)"), Column("val_acc", "val acc (%)"),
                                  Column("label_bytes", "label bytes", 0), Column("distill_s", "distill s", 0),
                                  Column("peak_rss_mib", "peak RSS MiB", 0)), "test_acc"),
    "dd_decoupled_digits": View("Decoupled dataset distillation on digits (SRe2L, CDA, CV-DD, INFER, DQ)", PILLARS[1],
                                (Column("test_acc", "test acc (%)"), Column("val_acc", "val acc (%)"),
                                 Column("label_bytes", "label bytes", 0), Column("stored_images", "images stored", 0),
                                 Column("distill_s", "distill s", 0)), "test_acc", reference=r"^random", plot="ipc"),
    "dd_decoupled_fmnist": View("Decoupled dataset distillation on Fashion-MNIST (SRe2L, CDA, CV-DD, INFER, DQ, HeLlO)",
                                PILLARS[1],
                                (Column("test_acc", "test acc (%)"), Column("val_acc", "val acc (%)"),
                                 Column("label_bytes", "label bytes", 0), Column("stored_images", "images stored", 0),
                                 Column("distill_s", "distill s", 0)), "test_acc", reference=r"^random", plot="ipc"),
    "dd_transfer_fmnist": View("KRR-ST: pre-training on a distilled set, transfer to Fashion-MNIST and 28x28 digits",
                               PILLARS[1], (Column("test_acc", "test acc (%)"), Column("val_acc", "val acc (%)")),
                               "test_acc", group_tail=2),
    "gen_sid_toy2d": View("Score distillation and relatives on toy2d (vs DMD2)", PILLARS[2],
                          _TOY_COLS + (Column("spread", "spread (1 = data)", 3),
                                       Column("forget_share", "forgotten-class share ↓", 3)), "swd",
                          higher_is_better=False, images=("gen_sid_toy2d_disback_curve.png",)),
    "trajectory_memory": View("Memory: trajectory-matching unroll (full graph vs recompute)", PILLARS[4],
                              (Column("peak_growth_mib", "peak growth MiB ↓", 0), Column("seconds", "seconds", 1)),
                              "peak_growth_mib", higher_is_better=False, group_depth=2),
    "generative_memory": View("Memory: one step of one- vs three-network generative methods", PILLARS[4],
                              (Column("peak_growth_mib", "peak growth MiB ↓", 0), Column("seconds", "seconds", 1)),
                              "peak_growth_mib", higher_is_better=False, group_depth=1),
}
# ``potstill bench`` suites (benchmarks/results/bench/<suite>/), one file per method merged
VIEWS["kd-fmnist"] = View("potstill bench kd-fmnist", PILLARS[0], _KD_COLS, "test_acc")
VIEWS["dd-fmnist"] = View("potstill bench dd-fmnist (IPC 10, dd-v1)", PILLARS[1], VIEWS["dd_fmnist"].columns,
                          "test_acc", plot="ipc")
VIEWS["gen-toy2d"] = View("potstill bench gen-toy2d", PILLARS[2],
                          (Column("test_swd", "sliced W ↓", 4), Column("test_mode_coverage", "mode coverage", 3),
                           Column("test_high_quality", "high-quality share", 3), Column("wall_clock_s", "train s", 0)),
                          "test_swd", higher_is_better=False)
VIEWS["lm-text"] = View("potstill bench lm-text", PILLARS[3],
                        (Column("val_bpc", "val bits/char ↓", 3), Column("test_bpc", "test bits/char ↓", 3),
                         Column("wall_clock_s", "train s", 0)), "val_bpc", higher_is_better=False)


QUICK = "-quick"        # section-name suffix of ``potstill bench --quick`` results (shown, never in "at a glance")


# --- the DD-Ranking label-robust score --------------------------------------------------------
def label_robust_score(acc_real_hard: float, acc_syn_hard: float, acc_syn_any: float, acc_rdm_any: float,
                       w: float = 0.5) -> float:
    """DD-Ranking's label-robust score (LRS) from four test accuracies given as fractions in [0, 1].

    HLR = acc(real data, hard labels) − acc(synthetic, hard labels)   (hard-label recovery; lower is better)
    IOR = acc(synthetic, its labels) − acc(random real subset of the same size, the same labels and
          training recipe)                                            (improvement over random)
    α = w · IOR − (1 − w) · HLR ∈ [−1, 1],   LRS = (e^α − e^−1) / (e − e^−1) ∈ [0, 1].

    DD-Ranking's code feeds percentages, which leaves [0, 1]; we take fractions, as its paper means.
    """
    accs = (acc_real_hard, acc_syn_hard, acc_syn_any, acc_rdm_any)
    if not all(0.0 <= a <= 1.0 for a in accs):
        raise ValueError(f"label_robust_score takes accuracies as fractions in [0, 1], got {accs}")
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"w must be in [0, 1], got {w}")
    alpha = w * (acc_syn_any - acc_rdm_any) - (1.0 - w) * (acc_real_hard - acc_syn_hard)
    return (math.exp(alpha) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


# --- reading result files into rows ------------------------------------------------------------
@dataclass
class Row:
    name: str
    kind: str                                   # "ours" | "reference" | "published"
    values: dict[str, dict] = field(default_factory=dict)     # metric -> {mean, std, n}


def rows_of(result: dict, reference: str = "") -> list[Row]:
    """Pivot ``row/metric`` names into rows; ``published/...`` baselines become published rows, and
    metric rows matching the ``reference`` regex become reference rows."""
    rows: dict[tuple[str, str], Row] = {}
    for group in ("metrics", "baselines"):
        for name, v in result[group].items():
            if "/" not in name:
                key, metric = name, "value"
            else:
                key, metric = name.rsplit("/", 1)
            kind = "ours" if group == "metrics" and not (reference and re.search(reference, key)) else "reference"
            if key.startswith("published/") or key == "published":
                kind, key = "published", key[len("published/"):] or metric
            rows.setdefault((kind, key), Row(key, kind)).values[metric] = v
    return list(rows.values())


def sort_rows(rows: list[Row], view: View) -> list[Row]:
    """Reference rows, then ours best first, then published; rows without the ranking metric (e.g.
    validation-only tuning cells) are left out when any row has it (they stay in the result's .md)."""
    order = {"reference": 0, "ours": 1, "published": 2}
    if any(view.primary in r.values for r in rows):
        rows = [r for r in rows if view.primary in r.values]

    def key(r: Row):
        v = r.values.get(view.primary, {}).get("mean")
        missing = v is None or not math.isfinite(v)
        score = 0.0 if missing else (-v if view.higher_is_better else v)
        return (order[r.kind], missing, score, r.name)

    return sorted(rows, key=key)


def default_view(name: str, result: dict) -> View:
    metrics = sorted({n.rsplit("/", 1)[-1] for n in result["metrics"]})
    return View(name, "Other", tuple(Column(m, m, 3) for m in metrics[:8]), metrics[0] if metrics else "")


def fmt(v: dict | None, col: Column) -> str:
    if v is None or v.get("mean") is None or not math.isfinite(v["mean"]):
        return "–"
    m, s = v["mean"] * col.scale, v["std"] * col.scale
    text = f"{m:,.{col.decimals}f}" if col.decimals == 0 else f"{m:.{col.decimals}f}"
    return text + (f" ± {s:.{col.decimals}f}" if v.get("n", 1) > 1 and s > 0 else "")


# --- dataset distillation: IPC pivot, tracks, label-robust score --------------------------------
_IPC = re.compile(r"^(?P<method>[^/]+)/ipc(?P<ipc>\d+)(?:@(?P<tag>.+))?$")


def dd_pivot(rows: list[Row]) -> tuple[list[int], dict[tuple[str, str], dict[int, dict]]]:
    """{(kind, method label): {ipc: test_acc stat}} for rows named ``method/ipcN[@tag]``."""
    table: dict[tuple[str, str], dict[int, dict]] = {}
    ipcs = set()
    for r in rows:
        m = _IPC.match(r.name)
        if not m or "test_acc" not in r.values:
            continue
        ipc = int(m["ipc"])
        ipcs.add(ipc)
        label = m["method"] + (f" @{m['tag']}" if m["tag"] else "")
        table.setdefault((r.kind, label), {})[ipc] = r.values["test_acc"]
    return sorted(ipcs), table


def dd_scores(rows: list[Row], result: dict) -> list[dict]:
    """Track, label bytes and label-robust score of every dataset-distillation row (ours).

    The random-subset comparison of a hard-label row is ``random/ipcN`` (same tag if there is one);
    of a soft-label row ``m``, ``random+<m>/ipcN``: the random subset relabelled with m's soft labels.
    The real-data accuracy is ``full_data/test_acc`` (ours) or else the published one (marked).
    """
    by_name = {(r.kind, r.name): r for r in rows}
    real = by_name.get(("reference", "full_data")) or by_name.get(("ours", "full_data"))
    real_src = "ours"
    if real is None:
        real, real_src = by_name.get(("published", "full_data")), "published"
    out = []
    for r in rows:
        m = _IPC.match(r.name)
        if r.kind != "ours" or not m or "test_acc" not in r.values or m["method"].startswith("random"):
            continue
        soft = bool(r.values.get("soft_labels", {}).get("mean", 0))
        tag = f"@{m['tag']}" if m["tag"] else ""
        rdm_name = f"random+{m['method']}/ipc{m['ipc']}" if soft else f"random/ipc{m['ipc']}"
        rdm = next((by_name[(k, n)] for n in (rdm_name + tag, rdm_name) for k in ("ours", "reference")
                    if (k, n) in by_name), None)
        hard = by_name.get(("ours", f"{m['method']}-hard/ipc{m['ipc']}{tag}")) if soft else r
        score = None
        if real is not None and rdm is not None and hard is not None:
            score = label_robust_score(real.values["test_acc"]["mean"] / 100, hard.values["test_acc"]["mean"] / 100,
                                       r.values["test_acc"]["mean"] / 100, rdm.values["test_acc"]["mean"] / 100)
        out.append({"row": r.name, "track": "soft-label" if soft else "hard-label", "ipc": int(m["ipc"]),
                    "test_acc": r.values["test_acc"], "label_bytes": r.values.get("label_bytes"),
                    "random": rdm.name if rdm else None, "lrs": score, "real_src": real_src})
    return out


# --- plots -------------------------------------------------------------------------------------
def plot_ipc(name: str, rows: list[Row], out: Path) -> Path | None:
    ipcs, table = dd_pivot(rows)
    if not table:
        return None
    from .plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for (kind, label), accs in sorted(table.items()):
        xs = [i for i in ipcs if i in accs]
        if len(xs) < 2 and kind != "ours":
            continue
        ys = [accs[i]["mean"] for i in xs]
        es = [accs[i]["std"] for i in xs]
        style = dict(ls="--", alpha=0.6, marker="x") if kind == "published" else dict(marker="o")
        ax.errorbar(xs, ys, yerr=es, label=label + (" (published)" if kind == "published" else ""), capsize=2, **style)
    ax.set_xscale("log")
    ax.set_xticks(ipcs, [str(i) for i in ipcs])
    ax.set_xlabel("images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{name}: accuracy vs IPC", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / f"{name}_ipc.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_nfe(name: str, rows: list[Row], view: View, out: Path) -> Path | None:
    metric = view.plot_metric or view.primary
    pts: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if "nfe" in r.values and metric in r.values and r.kind != "published":
            series = r.name.split("/")[0] + (" (reference)" if r.kind == "reference" else "")
            pts.setdefault(series, []).append((r.values["nfe"]["mean"], r.values[metric]["mean"]))
    if not pts:
        return None
    from .plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for series, p in sorted(pts.items()):
        p.sort()
        ax.plot([x for x, _ in p], [y for _, y in p], marker="o", ls="--" if "reference" in series else "-", label=series)
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations per sample (NFE)")
    ax.set_ylabel(metric + (" (lower is better)" if not view.higher_is_better else ""))
    ax.set_title(f"{name}: quality vs NFE", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"{name}_nfe.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- rendering ---------------------------------------------------------------------------------
@dataclass
class Section:
    name: str
    view: View
    result: dict
    rows: list[Row]
    preliminary: bool
    images: list[str] = field(default_factory=list)        # the view's images that exist
    merged: bool = False                                    # a bench suite's per-method files
    plots: list[Path] = field(default_factory=list)
    source: str = ""                                        # the file(s) it was read from, under the results folder


def _load(f: Path) -> dict:
    try:
        return load_result(f)
    except (ValueError, OSError) as e:             # json.JSONDecodeError is a ValueError
        raise ValueError(f"{f}: {e}") from None


def merge_suite(name: str, results: list[dict], quick: bool = False) -> dict:
    """The per-method files of one ``potstill bench`` suite as one result (rows keep their commands)."""
    out = {"catalog_ids": sorted({c for r in results for c in r["catalog_ids"]}),
           "command": f"potstill bench {name}" + " --quick" * quick,
           "dataset": results[0]["dataset"], "seeds": sorted({s for r in results for s in r["seeds"]}),
           "metrics": {}, "baselines": {}, "wall_clock_s": sum(r["wall_clock_s"] for r in results),
           "machine": " | ".join(sorted({r["machine"] for r in results})), "date": max(r["date"] for r in results),
           "notes": " ".join(sorted({r["notes"] for r in results}))}
    for r in results:
        out["metrics"].update(r["metrics"])
        out["baselines"].update(r["baselines"])
    return out


def collect(results_dir: Path) -> list[Section]:
    """Every result file under ``results_dir`` (``preliminary/`` ones marked; the per-method files
    of each ``bench/<suite>/`` and ``bench/quick/<suite>/`` folder merged into one section), validated."""
    sections = []
    files = sorted(results_dir.glob("*.json")) + sorted((results_dir / "preliminary").glob("*.json"))
    loaded = [(f.stem, _load(f), f.parent.name == "preliminary", False, str(f.relative_to(results_dir)))
              for f in files]
    suite_dirs = [p for p in results_dir.glob("*") if p.is_dir() and p.name not in ("preliminary", "bench")]
    suite_dirs += [p for p in (results_dir / "bench").glob("*") if p.is_dir()]
    quick_dirs = [p for p in (results_dir / "bench" / "quick").glob("*") if p.is_dir()]
    for d in sorted(suite_dirs) + sorted(quick_dirs):
        parts = [_load(f) for f in sorted(d.glob("*.json"))]
        if parts:
            quick = d.parent.name == "quick"
            loaded.append((d.name + QUICK * quick, merge_suite(d.name, parts, quick), False, True,
                           f"{d.relative_to(results_dir)}/*.json"))
    for stem, result, preliminary, merged, source in loaded:
        view = VIEWS.get(stem) or default_view(stem, result)
        if stem.endswith(QUICK):
            base = VIEWS.get(stem[:-len(QUICK)]) or view
            view = replace(base, title=base.title + " --quick (reduced settings that run in minutes; not the record)")
        sections.append(Section(stem, view, result, sort_rows(rows_of(result, view.reference), view), preliminary,
                                [i for i in view.images if (results_dir / i).is_file()], merged, source=source))
    return sections


def glance(sections: list[Section]) -> list[dict]:
    """One line per result: the best row of ours and of the references on the ranking metric."""
    out = []
    rank = {p: i for i, p in enumerate(PILLARS)}
    for s in sorted((s for s in sections if not s.name.endswith(QUICK)), key=lambda s: rank.get(s.view.pillar, len(PILLARS))):
        col = next((c for c in s.view.columns if c.metric == s.view.primary), Column(s.view.primary, s.view.primary, 3))
        groups = [("", s.rows)]
        if s.view.group_depth:          # rank within a setting, never across settings
            keys = sorted({"/".join(r.name.split("/")[:s.view.group_depth]) for r in s.rows})
            groups = [(f", {k}", [r for r in s.rows if r.name.startswith(k + "/")]) for k in keys]
        if s.view.group_tail:
            keys = sorted({"/".join(r.name.split("/")[-s.view.group_tail:]) for r in s.rows})
            groups = [(f", {k}", [r for r in s.rows if r.name.endswith("/" + k)]) for k in keys]
        if s.view.plot == "ipc":        # rank within one IPC, never across
            ipcs = sorted({int(m["ipc"]) for r in s.rows if (m := _IPC.match(r.name))})
            groups = [(f", IPC {i}", [r for r in s.rows if (m := _IPC.match(r.name)) and int(m["ipc"]) == i])
                      for i in ipcs]
        for suffix, rows in groups:
            best = {k: next((r for r in rows if r.kind == k and s.view.primary in r.values), None)
                    for k in ("ours", "reference", "published")}
            out.append({"name": s.name, "title": s.view.title + suffix + (" (preliminary)" if s.preliminary else ""),
                        "metric": col.header, "ours": best["ours"], "reference": best["reference"] or best["published"],
                        "col": col})
    return out


def _label(r: Row) -> str:
    return r.name + (" (published)" if r.kind == "published" else "")


def _anchor(name: str) -> str:
    return "reproduce-" + re.sub(r"[^a-z0-9]+", "-", name.lower())


def render_markdown(sections: list[Section], results_rel: str, assets_rel: str) -> str:
    lines = ["# potstill leaderboard", "",
             "Generated by `potstill leaderboard` from the result files in `benchmarks/results/` "
             "(do not edit by hand). Every number links to the command that reproduces it. Rows marked "
             "*published* are the papers' numbers (their protocol, not re-run here); *reference* rows were "
             "run by us in the same benchmark. ↓: lower is better. Results under `preliminary/` have fewer "
             "than 3 seeds.", "", "## At a glance", "",
             "| benchmark | ranked by | best of ours | best reference row |", "|---|---|---|---|"]
    for g in glance(sections):
        cells = [f"{_label(r)}: [{fmt(r.values[g['col'].metric], g['col'])}](#{_anchor(g['name'])})" if r else "–"
                 for r in (g["ours"], g["reference"])]
        lines.append(f"| {g['title']} | {g['metric']} | {cells[0]} | {cells[1]} |")
    lines.append("")
    for pillar in PILLARS + ("Other",):
        secs = [s for s in sections if s.view.pillar == pillar]
        if not secs:
            continue
        lines += [f"## {pillar}", ""]
        for s in secs:
            lines += _md_section(s, results_rel, assets_rel)
    return "\n".join(lines) + "\n"


def _md_section(s: Section, results_rel: str, assets_rel: str) -> list[str]:
    r, v, a = s.result, s.view, _anchor(s.name)
    out = [f"### {v.title}{' (preliminary)' if s.preliminary else ''}", "",
           f"`{s.source or s.name + '.json'}` · catalog {', '.join(r['catalog_ids'])} · seeds {r['seeds']} · {r['date']} · "
           f"{r['machine']}", ""]
    if s.plots:
        out += [f"![{p.stem}]({assets_rel}/{p.name})" for p in s.plots] + [""]
    if v.plot == "ipc":
        out += _md_dd(s, a)
    cols = [c for c in v.columns if any(c.metric in row.values for row in s.rows)]
    out += ["| row | kind | " + " | ".join(c.header for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for row in s.rows:
        if not any(c.metric in row.values for c in cols):
            continue
        cells = [f"[{fmt(row.values.get(c.metric), c)}](#{a})" if c.metric in row.values else "–" for c in cols]
        out.append(f"| {row.name} | {row.kind} | " + " | ".join(cells) + " |")
    prefix = results_rel + ("/preliminary" if s.preliminary else "")
    details = "" if s.merged else f" — details in `{prefix}/{s.name}.md`"
    out += ["", f'<a id="{a}"></a>Reproduce: `{r["command"]}`{details}.', ""]
    out += [f"![{Path(i).stem}]({results_rel}/{i})" for i in s.images] + ([""] if s.images else [])
    return out


def _md_dd(s: Section, a: str) -> list[str]:
    ipcs, table = dd_pivot(s.rows)
    pub = {label: accs for (kind, label), accs in table.items() if kind == "published"}
    out = ["Test accuracy (%) by images per class; published numbers in brackets.", "",
           "| method | " + " | ".join(f"IPC {i}" for i in ipcs) + " |", "|---|" + "---|" * len(ipcs)]
    for (kind, label), accs in sorted(table.items()):
        if kind != "ours":
            continue
        base = pub.get(label.split(" @")[0], {})
        cells = []
        for i in ipcs:
            txt = f"[{fmt(accs[i], Column('test_acc', ''))}](#{a})" if i in accs else "–"
            if i in base:
                txt += f" ({base[i]['mean']:.1f})"
            cells.append(txt)
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    scores = dd_scores(s.rows, s.result)
    if scores:
        real_src = scores[0]["real_src"]
        out += ["", "Tracks, label storage and label-robust score (LRS, DD-Ranking, accuracies as fractions; "
                f"real-data accuracy: {'ours' if real_src == 'ours' else 'the published full-data figure'}).", ""]
        for track in ("hard-label", "soft-label"):
            ts = sorted((x for x in scores if x["track"] == track), key=lambda x: (x["ipc"], -(x["lrs"] or -1)))
            if not ts:
                continue
            out += [f"**{track} track**", "", "| row | IPC | test acc (%) | label bytes | random-subset row | LRS |",
                    "|---|---|---|---|---|---|"]
            for x in ts:
                lb = "–" if x["label_bytes"] is None else f"{x['label_bytes']['mean']:.0f}"
                lrs = "–" if x["lrs"] is None else f"[{x['lrs']:.4f}](#{a})"
                out.append(f"| {x['row']} | {x['ipc']} | [{fmt(x['test_acc'], Column('', ''))}](#{a}) | {lb} | "
                           f"{x['random'] or '–'} | {lrs} |")
            out.append("")
    return out + [""]


def render_html(markdown_sections: list[Section], results_rel: str, assets_rel: str) -> str:
    """A static page (no scripts): the same tables, plots and images as the Markdown."""
    e = html.escape
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>potstill leaderboard</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:.6em 0 1em;font-size:13px}td,th{border:1px solid #ccc;"
             "padding:3px 7px;text-align:right}td:first-child,th:first-child,td:nth-child(2){text-align:left}"
             "th{background:#f2f2f2}tr.published td{color:#777;font-style:italic}tr.reference td{background:#fafafa}"
             "a.n{color:inherit;text-decoration:none;border-bottom:1px dotted #99c}code{background:#f4f4f4;"
             "padding:1px 4px;font-size:12px}img{max-width:100%;margin:.3em .5em .3em 0;vertical-align:top}"
             "h2{border-bottom:2px solid #ddd;margin-top:2em}.meta{color:#666;font-size:12px}</style></head><body>",
             "<h1>potstill leaderboard</h1><p>Generated by <code>potstill leaderboard</code> from "
             "<code>benchmarks/results/*.json</code>. Every number links to the command that reproduces it. "
             "<i>Published</i> rows (grey, italic) are the papers' numbers; <i>reference</i> rows were run by us "
             "in the same benchmark. ↓: lower is better.</p>",
             "<h2>At a glance</h2><table><tr><th>benchmark</th><th>ranked by</th><th>best of ours</th>"
             "<th>best reference row</th></tr>"]
    for g in glance(markdown_sections):
        cells = "".join(f"<td>{e(_label(r))}: <a class='n' href='#{_anchor(g['name'])}'>{e(fmt(r.values[g['col'].metric], g['col']))}"
                        f"</a></td>" if r else "<td>–</td>" for r in (g["ours"], g["reference"]))
        parts.append(f"<tr><td><a href='#sec-{e(g['name'])}'>{e(g['title'])}</a></td><td>{e(g['metric'])}</td>{cells}</tr>")
    parts.append("</table>")
    for pillar in PILLARS + ("Other",):
        secs = [s for s in markdown_sections if s.view.pillar == pillar]
        if not secs:
            continue
        parts.append(f"<h2>{e(pillar)}</h2>")
        for s in secs:
            r, v, a = s.result, s.view, _anchor(s.name)
            parts.append(f"<h3 id='sec-{e(s.name)}'>{e(v.title)}{' (preliminary)' if s.preliminary else ''}</h3><p class='meta'>"
                         f"{e(s.source or s.name + '.json')} · catalog {e(', '.join(r['catalog_ids']))} · seeds {e(str(r['seeds']))} · "
                         f"{e(r['date'])} · {e(r['machine'])}</p>")
            for p in s.plots:
                parts.append(f"<img src='{e(assets_rel)}/{e(p.name)}' alt='{e(p.stem)}' width='560'>")
            cols = [c for c in v.columns if any(c.metric in row.values for row in s.rows)]
            parts.append("<table><tr><th>row</th><th>kind</th>" + "".join(f"<th>{e(c.header)}</th>" for c in cols) + "</tr>")
            for row in s.rows:
                if not any(c.metric in row.values for c in cols):
                    continue
                cells = "".join(f"<td><a class='n' href='#{a}'>{e(fmt(row.values.get(c.metric), c))}</a></td>"
                                if c.metric in row.values else "<td>–</td>" for c in cols)
                parts.append(f"<tr class='{row.kind}'><td>{e(row.name)}</td><td>{row.kind}</td>{cells}</tr>")
            parts.append("</table>")
            if v.plot == "ipc":
                scores = dd_scores(s.rows, r)
                if scores:
                    parts.append("<table><tr><th>row</th><th>track</th><th>IPC</th><th>test acc (%)</th>"
                                 "<th>label bytes</th><th>random-subset row</th><th>LRS</th></tr>")
                    for x in sorted(scores, key=lambda x: (x["track"], x["ipc"], -(x["lrs"] or -1))):
                        lb = "–" if x["label_bytes"] is None else f"{x['label_bytes']['mean']:.0f}"
                        lrs = "–" if x["lrs"] is None else f"{x['lrs']:.4f}"
                        parts.append(f"<tr><td>{e(x['row'])}</td><td>{x['track']}</td><td>{x['ipc']}</td>"
                                     f"<td><a class='n' href='#{a}'>{e(fmt(x['test_acc'], Column('', '')))}</a></td>"
                                     f"<td>{lb}</td><td>{e(x['random'] or '–')}</td>"
                                     f"<td><a class='n' href='#{a}'>{lrs}</a></td></tr>")
                    parts.append("</table>")
            parts.append(f"<p id='{a}'>Reproduce: <code>{e(r['command'])}</code></p>")
            for i in s.images:
                parts.append(f"<img src='{e(results_rel)}/{e(i)}' alt='{e(Path(i).stem)}' width='420'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build(results_dir: str | Path, markdown: str | Path, html_path: str | Path) -> dict:
    """Write the Markdown leaderboard, the HTML page and its plots (next to the page). Returns paths."""
    import os

    from ..core.checkpoint import atomic_write_text

    results_dir, markdown, html_path = Path(results_dir), Path(markdown), Path(html_path)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder {results_dir} does not exist")
    sections = collect(results_dir)
    if not sections:
        raise ValueError(f"no result files (*.json) in {results_dir}")
    assets = html_path.parent
    assets.mkdir(parents=True, exist_ok=True)
    for s in sections:
        p = plot_ipc(s.name, s.rows, assets) if s.view.plot == "ipc" else \
            plot_nfe(s.name, s.rows, s.view, assets) if s.view.plot == "nfe" else None
        s.plots = [p] if p else []
    rel = lambda target, start: Path(os.path.relpath(target, start)).as_posix()  # noqa: E731
    atomic_write_text(markdown, render_markdown(sections, rel(results_dir, markdown.parent), rel(assets, markdown.parent)))
    atomic_write_text(html_path, render_html(sections, rel(results_dir, html_path.parent), "."))
    return {"markdown": markdown, "html": html_path, "plots": [p for s in sections for p in s.plots],
            "sections": [s.name for s in sections]}


def screenshot(html_path: str | Path, png: str | Path, width: int = 1280, height: int = 2400) -> Path:
    """Render the page in headless Chromium (Debian package ``chromium``) to a PNG."""
    import shutil
    import subprocess

    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        raise FileNotFoundError("no Chromium found: apt-get install -y chromium (needed only for the screenshot)")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}",
           f"--screenshot={png}", Path(html_path).resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return png
