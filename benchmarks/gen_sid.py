"""Score-distillation family on toy2d (8 Gaussians on a ring, class k = mode k): SiD, few-step SiD,
Zero-/Anti-CFG, SIM and SFD against DMD2, all distilled from the same EDM teacher at the same
training budget (the dmd2_toy2d recipe's 5,000 steps of batch 256).

Rows (recipes under ``recipes/gen``):

* ``dmd2`` - DMD2, 1 step (reference; trained here, in the same run);
* ``sid`` - SiD 1 step (alpha 1.2); ``sid_2step`` / ``sid_4step`` - one few-step SiD generator
  trained on the uniform mixture of its 2 / 4 step outputs;
* ``sid_cfg2`` - SiD with teacher CFG 2 (plain CFG, the reference for the two rows below);
  ``sid_zero`` - Zero-CFG; ``sid_anti`` - Anti-CFG (fake-score guidance -1);
* ``sim`` - SIM, pseudo-Huber distance;
* ``sfd`` - SFD forgetting class 0 (safe class 4);
* ``swiftbrush`` - SwiftBrush (G14): image-free VSD with a rank-8 LoRA teacher as the fake score;
* ``msd4`` / ``msd1`` - MSD (G3): 4 same-size DMD2 students owning 2 classes each, behind one
  router / the same code with 1 student (= DMD2, the paper's single-student comparison);
* ``disback`` - DisBack (G11): DMD2 whose real score walks a recorded degradation path back to the
  teacher (4 nodes, 250 trainer steps each). Its validation SWD every 250 trainer steps is
  compared with a DMD2 run evaluated at the same steps (``dmd2_curve``, same recipe and seeds as
  ``dmd2``; evaluation draws no training randomness, so it trains the same generator): the
  quality-vs-step table and ``<name>_disback_curve.png``.

Each student is trained with ``--seeds`` training seeds (``trainer.seed``) and each trained model
is measured with the sampling seed of the same index: every figure is mean ± std over the seeds.
Metrics: those of ``benchmarks/gen_toy2d.py`` (its ``measure``: SWD and MMD against the test
points, mode coverage, high-quality share, NFE, s / 1000 samples; conditioned on the test labels)
plus, by nearest mode: ``label_acc`` (share of samples at the mode of their class), ``spread``
(RMS distance from the own mode of the samples within 3 std of it, over the same quantity for
the test points: 1 = the data's spread, < 1 sharper / less diverse), and for the teacher, SiD and
SFD the forgetting figures: ``forget_share`` (forget-class samples landing at a forget mode; 0 =
forgotten), ``safe_share`` (... at the safe mode), and the retained classes' SWD, label accuracy
and high-quality share (against the retained classes' test points). The teacher (Heun, 18 steps,
35 NFE) is the baseline.

Resumable: run folders under ``--runs``; finished measurement cells in ``<name>.cells.jsonl``.

    python benchmarks/gen_sid.py                 # about 1 hour on 2 idle CPU cores (27 runs of 1.5-3 min)
    python benchmarks/gen_sid.py --teacher benchmarks/runs/gen_toy2d/teacher   # reuse gen_toy2d's teacher
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import add_output_args, append_cell, open_cells  # noqa: E402
from benchmarks.gen_toy2d import N_SAMPLES, measure  # noqa: E402
from potstill.core.run import load_denoiser, machine, resolve, run  # noqa: E402
from potstill.data import load_dataset  # noqa: E402
from potstill.diffusion import karras_sigmas, plan_sigmas, sample  # noqa: E402
from potstill.eval.generative import mode_stats, sliced_wasserstein  # noqa: E402
from potstill.report.results import stat, write_markdown, write_result  # noqa: E402

STUDENTS = {  # name: (recipe, overrides)
    "dmd2": ("dmd2_toy2d.yaml", []),
    "sid": ("sid_toy2d.yaml", []),
    "sid_2step": ("sid4_toy2d.yaml", ["method.steps=2"]),
    "sid_4step": ("sid4_toy2d.yaml", []),
    "sid_cfg2": ("sid_toy2d.yaml", ["method.guidance=2.0"]),
    "sid_zero": ("sid_zero_toy2d.yaml", []),
    "sid_anti": ("sid_anti_toy2d.yaml", []),
    "sim": ("sim_toy2d.yaml", []),
    "sfd": ("sfd_toy2d.yaml", []),
    "swiftbrush": ("swiftbrush_toy2d.yaml", []),
    "msd4": ("msd_toy2d.yaml", []),
    "msd1": ("msd1_toy2d.yaml", []),
    "disback": ("disback_toy2d.yaml", ["trainer.eval_every=250"]),
}
# quality-vs-step curves: row -> its reference, trained only for the curve (not a table row)
CURVES = {"disback": "dmd2_curve"}
CURVE_RUNS = {"dmd2_curve": ("dmd2_toy2d.yaml", ["trainer.eval_every=250"])}
CURVE_EVERY = 250
FORGET_ROWS = ("teacher", "sid", "sfd")      # rows that also get the forgetting figures
BASE = ("swd", "mmd", "mode_coverage", "high_quality", "nfe", "s_per_1000")
CLASS = ("label_acc", "spread")
FORGET = ("forget_share", "safe_share", "retained_swd", "retained_label_acc", "retained_high_quality")


def _spread(x: torch.Tensor, y: torch.Tensor, centers: torch.Tensor, std: float) -> float:
    """RMS distance from the own class's centre of the points within 3 std of it."""
    r = (x.double() - centers[y]).norm(dim=1)
    r = r[r <= 3 * std]
    return float(r.pow(2).mean().sqrt()) if len(r) else float("nan")


def class_metrics(d, sampler: str, sigmas, bundle, seed: int, forget=(), safe=None) -> dict:
    """Per-class figures by nearest mode (class k = mode k in toy2d)."""
    centers = torch.tensor(bundle.info["centers"], dtype=torch.float64)
    std = bundle.info["std"]
    y = bundle.test.y[:N_SAMPLES]
    ref = bundle.test.x[:N_SAMPLES]
    g = torch.Generator().manual_seed(2000 + seed)
    x = sample(d, torch.randn(len(y), 2, generator=g), sigmas, sampler, cond=y, generator=g).x
    nearest = torch.cdist(x.double(), centers).argmin(1)
    out = {"label_acc": float((nearest == y).double().mean()),
           "spread": _spread(x, y, centers, std) / _spread(ref, y, centers, std)}
    if forget:
        f = torch.isin(y, torch.tensor(forget))
        keep = ~f
        retained = [k for k in range(len(centers)) if k not in forget]
        out.update({"forget_share": float(torch.isin(nearest[f], torch.tensor(forget)).double().mean()),
                    "safe_share": float((nearest[f] == safe).double().mean()),
                    "retained_swd": sliced_wasserstein(x[keep], ref[keep]),
                    "retained_label_acc": float((nearest[keep] == y[keep]).double().mean()),
                    "retained_high_quality": mode_stats(x[keep], centers[retained], std)["high_quality"]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_args(ap, "gen_sid_toy2d", str(ROOT / "benchmarks/runs/gen_sid"))
    ap.add_argument("--seeds", type=int, default=3, help="training seeds (each measured with the same sampling seed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher", default=None, help="an existing edm_toy2d teacher run (default: train one under --runs)")
    ap.add_argument("--steps", type=int, default=None,
                    help="override every student's trainer.steps (a shorter, equal budget; or a smoke test)")
    ap.add_argument("--teacher-steps", type=int, default=None, help="override the teacher's trainer.steps (smoke tests)")
    ap.add_argument("--only", nargs="*", default=None, help=f"a subset of the students: {' '.join(STUDENTS)}")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    results, cells_path, done = open_cells(args.results, args.name)
    students = {k: v for k, v in STUDENTS.items() if args.only is None or k in args.only}

    quiet = ["trainer.progress=false", f"trainer.threads={args.threads}"]

    def train(recipe, overrides, out):
        if (out / "summary.json").is_file():
            return json.loads((out / "summary.json").read_text())
        return run(resolve(ROOT / "recipes/gen" / recipe, overrides + quiet), out, resume=(out / "config.yaml").is_file())

    if args.teacher:
        teacher_dir = Path(args.teacher)
        t_sum = json.loads((teacher_dir / "summary.json").read_text())
    else:
        teacher_dir = runs / "teacher"
        t_sum = train("edm_toy2d.yaml", [f"trainer.steps={args.teacher_steps}"] if args.teacher_steps else [], teacher_dir)
    bundle = load_dataset(resolve(ROOT / "recipes/gen/edm_toy2d.yaml").data)
    sfd_cfg = resolve(ROOT / "recipes/gen/sfd_toy2d.yaml").method.config
    forget, safe = list(sfd_cfg.forget), sfd_cfg.safe

    def measure_cell(key, who, d, sampler, sig, seed):
        if key not in done:
            rec = {"cell": key, "model": who, "sampler": sampler, "steps": len(sig) - 1, "seed": seed,
                   **measure(d, sampler, sig, bundle, seed),
                   **class_metrics(d, sampler, sig, bundle, seed, forget if who in FORGET_ROWS else (), safe)}
            append_cell(cells_path, done, rec)
            print(key, {k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items() if k != "cell"}, flush=True)
        return done[key]

    teacher = load_denoiser(teacher_dir)
    cells = {"teacher": [measure_cell(f"teacher/heun18/seed{s}", "teacher", teacher, "heun", karras_sigmas(18), s)
                         for s in range(args.seeds)]}
    train_s = {"teacher": [t_sum["wall_clock_s"]]}
    extra = [f"teacher.checkpoint={teacher_dir}"] + ([f"trainer.steps={args.steps}"] if args.steps else [])
    every = min(CURVE_EVERY, max(1, args.steps // 4)) if args.steps else CURVE_EVERY

    def with_every(ov):   # curve rows are evaluated every `every` trainer steps
        return [o for o in ov if not o.startswith("trainer.eval_every=")] + [f"trainer.eval_every={every}"]

    for name, (recipe, ov) in students.items():
        ov = with_every(ov) if name in CURVES else ov
        cells[name], train_s[name] = [], []
        for s in range(args.seeds):
            out = runs / name / f"seed{s}"
            summ = train(recipe, ov + extra + [f"trainer.seed={s}"], out)
            train_s[name].append(summ["wall_clock_s"])
            d = load_denoiser(out)
            plan = d.sampling
            cells[name].append(measure_cell(f"{name}/seed{s}", name, d, plan["sampler"], plan_sigmas(plan), s))
    curves = {}
    for name, ref in CURVES.items():
        if name not in students:
            continue
        recipe, ov = CURVE_RUNS[ref]
        curves[name] = {}
        for who, rec, over in ((name, students[name][0], with_every(students[name][1])), (ref, recipe, with_every(ov))):
            hist = []
            for s in range(args.seeds):
                out = runs / who / f"seed{s}"
                summ = train(rec, over + extra + [f"trainer.seed={s}"], out)
                hist.append({h["step"]: h for h in summ["val_history"]})
            curves[name][who] = hist
    report(args, cells, train_s, curves)
    return 0


def _fmt(s: dict, digits: int = 4) -> str:
    return "–" if not math.isfinite(s["mean"]) else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def curve_lines(args, curves) -> list[str]:
    """Validation SWD / high-quality share vs trainer step, mean ± std over seeds, + a PNG per curve."""
    lines = []
    for name, by_who in curves.items():
        whos = list(by_who)
        steps = sorted(set.intersection(*[set(h) for w in whos for h in by_who[w]]))
        lines += ["", (f"## Convergence: {name} vs {whos[1]} (validation split, 2,000 points; mean ± std over "
                       f"{len(by_who[name])} seeds)"), "",
                  "| trainer step | " + " | ".join(f"{w} SWD ↓ | {w} high-quality" for w in whos) + " |",
                  "|---|" + "---|---|" * len(whos)]
        series = {}
        for step in steps:
            row = []
            for w in whos:
                swd = stat([h[step]["swd"] for h in by_who[w]])
                hq = stat([h[step].get("high_quality", float("nan")) for h in by_who[w]])
                series.setdefault(w, []).append((step, swd["mean"], swd["std"]))
                row += [_fmt(swd), _fmt(hq, 3)]
            lines.append(f"| {step} | " + " | ".join(row) + " |")
        try:
            from potstill.report.plots import _plt

            plt = _plt()
            fig, ax = plt.subplots(figsize=(6, 4))
            for w, pts in series.items():
                xs, ys, es = zip(*pts)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=w)
            ax.set_xlabel("trainer step")
            ax.set_ylabel("validation SWD (lower is better)")
            ax.set_yscale("log")
            ax.legend()
            ax.set_title(f"{name} vs {whos[1]} on toy2d")
            png = Path(args.results) / f"{args.name}_{name}_curve.png"
            fig.tight_layout()
            fig.savefig(png, dpi=120)
            plt.close(fig)
            lines += ["", f"![{name} convergence]({png.name})"]
        except ImportError:                                  # matplotlib missing: the table is the result
            pass
    return lines


def report(args, cells, train_s, curves=None) -> None:
    metrics, baselines, rows = {}, {}, []
    for who, cs in cells.items():
        target = baselines if who == "teacher" else metrics
        keys = [k for k in BASE + CLASS + FORGET if k in cs[0]]
        # a figure can be undefined for a seed (spread: no sample within 3 std of its mode): the
        # stat is over the seeds where it is defined (n says how many), or absent ("–") if none
        row = {}
        for k in keys:
            vals = [c[k] for c in cs if c[k] is not None and math.isfinite(c[k])]
            row[k] = stat(vals) if vals else {"mean": float("nan"), "std": float("nan"), "n": 0}
        row["train_s"] = stat(train_s[who])
        for k, v in row.items():
            if v["n"] > 0:
                target[f"{who}/{k}"] = v
        rows.append((who, cs[0]["sampler"], cs[0]["steps"], row))
    n = len(next(iter(cells.values())))
    lines = [f"## Sample quality (mean ± std over {n} seeds; 5,000 samples per model vs 5,000 test points)", "",
             "| model | sampler | NFE | SWD ↓ | MMD ↓ | modes hit | high-quality share | label acc | spread (1 = data) | train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for who, sampler, steps, m in rows:
        lines.append(f"| {who} | {sampler} {steps} | {m['nfe']['mean']:.0f} | {_fmt(m['swd'])} | {_fmt(m['mmd'])} | "
                     f"{m['mode_coverage']['mean']:.3f} | {_fmt(m['high_quality'], 3)} | {_fmt(m['label_acc'], 3)} | "
                     f"{_fmt(m['spread'], 3)} | {m['train_s']['mean']:.0f} |")
    lines += ["", "## Forgetting (SFD forgets class 0, safe class 4)", "",
              "| model | forget-class share ↓ | safe-class share | retained SWD ↓ | retained label acc | retained high-quality |",
              "|---|---|---|---|---|---|"]
    for who, _, _, m in rows:
        if "forget_share" in m:
            lines.append(f"| {who} | {_fmt(m['forget_share'], 3)} | {_fmt(m['safe_share'], 3)} | {_fmt(m['retained_swd'])} | "
                         f"{_fmt(m['retained_label_acc'], 3)} | {_fmt(m['retained_high_quality'], 3)} |")
    lines += curve_lines(args, curves or {})
    command = "python benchmarks/gen_sid.py" + (f" --teacher {args.teacher}" if args.teacher else "")
    if args.steps or args.teacher_steps:   # a shorter budget, the same for every student
        command += " " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                  [("steps", args.steps), ("teacher_steps", args.teacher_steps)] if v)
    result = {
        "catalog_ids": ["G1", "G4", "G16", "G19"] + [g for who, g in (("swiftbrush", "G14"), ("msd4", "G3"),
                                                                     ("disback", "G11")) if who in cells],
        "command": command,
        "dataset": "toy2d ring of 8 Gaussians (std 0.05, radius 2): 20k train, 2k val, 5k test points",
        "seeds": list(range(n)),
        "metrics": metrics, "baselines": baselines,
        "wall_clock_s": round(sum(sum(v) for v in train_s.values()), 1),
        "machine": machine() + f", {args.threads} torch threads", "date": time.strftime("%Y-%m-%d"),
        "notes": ("Teacher = baselines (EDM recipe edm_toy2d, Heun 18 steps = 35 NFE). Every student uses the same "
                  f"trainer budget ({args.steps or 5000} steps; the recipes hold dmd2_toy2d's 5000), batch 256, Adam betas "
                  "0/0.999; lr 1e-4 for DMD2 and its relatives, 1e-5 for the SiD family (SiD's paper value; chosen on "
                  "the validation split at 2,000 steps, 1 seed: SiD val SWD 0.063 / 0.038 / 0.027 at lr 1e-4 / 3e-5 / "
                  "1e-5, DMD2 0.030 / 0.040 / 0.091 - so DMD2 keeps 1e-4). DMD2 updates its "
                  "generator every 5th step (its TTUR), SiD/SIM/SFD update fake score and generator one to one as in "
                  "the SiD paper, so they make 5x more generator updates - the train_s column shows the cost. Students "
                  "trained with seeds 0..n-1, each measured with the sampling seed of the same index. SiD family: "
                  "generator input noise 2.5, alpha 1.2, no Diffusion-GAN term; SIM uses pseudo-Huber c = 0.01 per "
                  "dimension and SiD's normaliser (the paper's c and weighting were not available). Spread = RMS "
                  "distance of within-3-std samples from their class mode over the same figure for the test points."
                  + (" SwiftBrush: image-free (label stream only), VSD weight sigma/(1+sigma^2), LoRA rank 8 (lr 1e-3), "
                     "generator and LoRA updated one to one." if "swiftbrush" in cells else "")
                  + (" MSD: the students share each batch (K students together cost one DMD2 run); msd1 is DMD2 run "
                     "through the MSD code." if "msd4" in cells or "msd1" in cells else "")
                  + (" DisBack: stage 1 (500 steps of batch 256 fine-tuning a teacher copy on the initial generator) "
                     "is extra compute not counted in the trainer steps; its train_s includes it." if "disback" in cells else "")),
    }
    write_result(Path(args.results) / f"{args.name}.json", result)
    write_markdown(Path(args.results) / f"{args.name}.md", result,
                   "Score distillation on toy2d: SiD, few-step SiD, Zero/Anti-CFG, SIM and SFD vs DMD2", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
