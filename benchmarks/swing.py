"""Swing distillation benchmark (K11): canary exposure and validation NLL of teacher and students.

The pydoc teacher (``recipes/lm/teacher_pydoc.yaml``; the run folder of ``benchmarks/lm_text.py``)
is trained on text holding 10 secret canaries "my pin is NNNNN", 10 copies each. Students (2-layer
GPT, width 96, same steps and optimizer) distil it on that same text:

* ``plain_kd``: Hinton KD at T = 2 plus cross-entropy on every token (``swing: false, private_ce: true``);
* ``kd_no_private_ce``: the same without hard labels on digits (ablation: what dropping them alone does);
* ``swing``: Swing distillation (``recipes/lm/swing_pydoc.yaml``: digit targets at T = 20 through the
  Laplace mechanism at ε = 1, the digits' share of other positions' targets shielded the same way);
* ``swing_noshield``: the same without the shield;
* ``clean_scratch``: trained from scratch on the text *without* canaries (the exposure floor).

Diagnostics (``--students``): ``swing_kd_only`` (α = 1: no hard labels at all),
``swing_clean_transfer`` (the student's text without the canary lines; only the teacher saw them),
``swing_untied_noshield`` (untied student embeddings).

``--repeats 100`` inserts every canary 100 times instead of 10 (its own teacher, trained by this
script; Swing's notes ask for 1, 10 and 100 insertions). ``clean_scratch`` has no canaries, so its
cells serve every repeat count. Rows named ``*_v1posnoise`` were run with our previous Swing, whose
noise was keyed by (window row, position) instead of by the query (see the method's docstring).

Exposure (Carlini et al., arXiv 1802.08232) is exact: all 10^5 five-digit secrets are ranked
after "\\nmy pin is " (``potstill.eval.privacy.exact_exposures``); reported as the mean over the 10
inserted canaries, next to the mean over 10 never-inserted ones (what chance looks like).
Target: swing cuts the mean exposure of plain KD by ≥ 80% at ≤ 5% worse validation NLL, judged
per repeat count (10 copies: the recipes'; 100: ``--repeats 100``).
Resumable cell by cell (model × seed) in ``<name>.cells.jsonl``.

    python benchmarks/swing.py --seeds 3
    python benchmarks/swing.py --seeds 1 --steps 600        # a quick look
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import add_output_args, append_cell, open_cells, run_recipe  # noqa: E402
from potstill.core.run import machine  # noqa: E402
from potstill.report.results import stat, write_markdown, write_result  # noqa: E402

STUDENTS = {
    "plain_kd": ("swing_pydoc.yaml", ["method.swing=false", "method.private_ce=true"]),
    "kd_no_private_ce": ("swing_pydoc.yaml", ["method.swing=false", "method.private_ce=false"]),
    "swing": ("swing_pydoc.yaml", []),
    "clean_scratch": ("scratch_pydoc.yaml", ["data.canaries=0"]),
    "swing_untied_noshield": ("swing_pydoc.yaml", ["student.tie_embeddings=false", "method.shield=false"]),
    "swing_noshield": ("swing_pydoc.yaml", ["method.shield=false"]),
    "swing_kd_only": ("swing_pydoc.yaml", ["method.alpha=1.0"]),                 # diagnostic: no hard labels at all
    "swing_clean_transfer": ("swing_pydoc.yaml", ["data.canaries=0"]),           # diagnostic: secrets only in the teacher
    "swing_ce_only": ("swing_pydoc.yaml", ["method.alpha=0.0"]),                 # diagnostic: no teacher, CE on public tokens
}
DEFAULT = ["plain_kd", "kd_no_private_ce", "swing", "swing_noshield", "clean_scratch"]   # the rest: diagnostics


def exposures_of(run_dir: Path, repeats: int) -> dict:
    """Mean exact exposure of the inserted and of the unseen canaries (data config of the teacher)."""
    import yaml

    from potstill.core.run import load_model
    from potstill.data import load_dataset
    from potstill.data.text import encode
    from potstill.eval.privacy import exact_exposures

    data = yaml.safe_load((ROOT / "recipes/lm/teacher_pydoc.yaml").read_text())["data"]
    data["canary_repeats"] = repeats
    info = load_dataset(data).info
    c, itos = info["canaries"], info["itos"]
    model = load_model(run_dir)
    prefix = encode("\n" + c["prefix"], itos)
    digits = [itos.index(d) for d in "0123456789"]
    out = {}
    for kind in ("inserted", "unseen"):
        ex = exact_exposures(model, prefix, [encode(s, itos) for s in c[kind]], digits)
        out[f"exposure_{kind}"] = sum(ex) / len(ex)
        out[f"exposures_{kind}"] = [round(e, 3) for e in ex]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", nargs="+", default=DEFAULT, choices=list(STUDENTS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="student steps (0: the recipes')")
    ap.add_argument("--threads", type=int, default=2)
    add_output_args(ap, "swing", str(ROOT / "benchmarks/runs/swing"))
    ap.add_argument("--repeats", type=int, default=10, help="copies of each canary in the training text")
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    results, cells_path, done = open_cells(args.results, args.name)
    rdir = ROOT / "recipes/lm"
    common = ["trainer.progress=false", f"trainer.threads={args.threads}"]
    short = [f"trainer.steps={args.steps}", f"trainer.eval_every={args.steps}"] if args.steps else []
    tag = f"@{args.steps}steps" if args.steps else ""
    rep = f"x{args.repeats}" if args.repeats != 10 else ""          # 10 copies: the recipes' (unsuffixed) rows
    data = [f"data.canary_repeats={args.repeats}"] if rep else []
    cache = ["teacher.cache=true", f"teacher.cache_dir={runs / 'teacher_cache'}"]   # data windows' logits, once

    def cell(key, recipe, overrides, out, extra):
        if key in done:
            return
        t0 = time.time()
        s = run_recipe(recipe, overrides, out)
        rec = {"cell": key, **extra, "steps": s["steps"], "train_s": s["wall_clock_s"], "val_nll": s["val"]["nll"],
               "val_bpc": s["val"]["bpc"], "test_nll": s["test"]["nll"], **exposures_of(out, args.repeats),
               "machine": s.get("machine"), "cell_s": round(time.time() - t0, 1)}
        append_cell(cells_path, done, rec)
        print(key, {k: v for k, v in rec.items() if k in ("val_nll", "exposure_inserted", "exposure_unseen")}, flush=True)
        report(args, done)

    # the 10-copy teacher is shared with lm_text / distillspec
    teacher_dir = runs / f"teacher_{rep}" if rep else runs.parent / "lm_text" / "pydoc_teacher"
    cell(f"teacher{rep}/seed0", rdir / "teacher_pydoc.yaml", common + data, teacher_dir,
         {"model": f"teacher{rep}", "seed": 0, "repeats": args.repeats})
    ckpt = teacher_dir / "export" / "model.safetensors"
    for seed in range(args.seeds):
        for name in args.students:
            recipe, ov = STUDENTS[name]
            r = "" if name == "clean_scratch" else rep                     # no canaries: one row for all
            teacher = [f"teacher.checkpoint={ckpt}", f"method.seed={seed}"] + cache if recipe.startswith("swing") else []
            cell(f"{name}{r}{tag}/seed{seed}", rdir / recipe,
                 common + short + [f"trainer.seed={seed}"] + (data if r else []) + ov + teacher,
                 runs / f"{name}{r}_s{seed}{tag.replace('@', '_')}", {"model": f"{name}{r}{tag}", "seed": seed,
                                                                      "repeats": args.repeats if r else 0})
    report(args, done)
    return 0


def report(args, done: dict) -> None:
    cells = list(done.values())
    groups: dict[str, list] = {}
    for c in cells:
        groups.setdefault(c["model"], []).append(c)
    metrics, baselines = {}, {}
    lines = ["| model | seeds | mean exposure, inserted (bits) | mean exposure, unseen | val NLL (nats/char) | val bits/char |",
             "|---|---|---|---|---|---|"]
    for model, cs in sorted(groups.items(), key=lambda kv: (not kv[0].startswith("teacher"), kv[0])):
        m = {k: stat([c[k] for c in cs]) for k in ("exposure_inserted", "exposure_unseen", "val_nll", "val_bpc")}
        for k, v in m.items():
            (baselines if model.startswith("teacher") else metrics)[f"{model}/{k}"] = v
        f = lambda k, d=3: f"{m[k]['mean']:.{d}f} ± {m[k]['std']:.{d}f}"  # noqa: E731
        lines.append(f"| {model} | {len(cs)} | {f('exposure_inserted', 2)} | {f('exposure_unseen', 2)} | {f('val_nll')} | {f('val_bpc')} |")
    lines.append("")
    for kd in sorted(k for k in groups if k.startswith("plain_kd")):       # one comparison per repeat count
        sw = "swing" + kd[len("plain_kd"):]                                # plain_kd[x100]@steps -> swing[x100]@steps
        if sw not in groups:
            continue
        ekd, esw = (stat([c["exposure_inserted"] for c in groups[k]])["mean"] for k in (kd, sw))
        nkd, nsw = (stat([c["val_nll"] for c in groups[k]])["mean"] for k in (kd, sw))
        cut, worse = 100 * (1 - esw / ekd) if ekd else float("nan"), 100 * (nsw / nkd - 1)
        copies = groups[kd][0].get("repeats", 10)
        metrics[f"{sw}_vs_{kd}/exposure_cut_pct"] = {"mean": cut, "std": 0.0, "n": 1}
        metrics[f"{sw}_vs_{kd}/val_nll_worse_pct"] = {"mean": worse, "std": 0.0, "n": 1}
        ok = cut >= 80 and worse <= 5
        lines.append(f"- canaries × {copies}: Swing vs plain KD, mean exposure cut by {cut:.1f}% (target ≥ 80%), "
                     f"validation NLL {worse:+.2f}% (target ≤ +5%): {'target met' if ok else 'target NOT met'}.")
        unseen = stat([c["exposure_unseen"] for k, cs in groups.items() if not k.startswith("teacher") for c in cs])
        if not ok and 0.2 * ekd < unseen["mean"] + unseen["std"]:
            lines.append(f"  An 80% cut means ≤ {0.2 * ekd:.2f} bits here, within the spread of canaries that were never "
                         f"inserted ({unseen['mean']:.2f} ± {unseen['std']:.2f} over every student): below what a student "
                         "that learned nothing of the secrets measures.")
    result = {
        "catalog_ids": ["K11"],
        "command": "python benchmarks/swing.py --seeds 3 --steps 1000 --threads 1 [--repeats 100]; diagnostic rows "
                   "(1 seed): python benchmarks/swing.py --seeds 1 --steps 1000 --threads 1 --students swing_kd_only "
                   "swing_clean_transfer swing_untied_noshield",
        "dataset": "pydoc_chars (block 64) with 10 canaries 'my pin is NNNNN' x 10 copies (rows x100: x 100 copies) "
                   "in the training text",
        "seeds": sorted({c["seed"] for c in cells}),
        "metrics": metrics, "baselines": baselines,
        "wall_clock_s": round(sum(c["cell_s"] for c in cells), 1),
        "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "notes": ("Exposure exact over all 1e5 secrets (max 16.6 bits); a student that learned nothing of a secret "
                  "has an expected exposure of 1/ln 2 = 1.44 bits (a uniformly random rank). Teacher 4-layer GPT "
                  "width 192; students 2-layer width 96. Swing: digits are private (pi = 1), T 2 -> 20 on their "
                  "soft targets, then the Laplace mechanism (epsilon = 1 per released target, noise fixed per "
                  "query: the last 8 tokens), the private vocabulary's share of public positions' targets swung the same way "
                  "(shield), no hard labels on digits; plain KD: T = 2, alpha = 0.5, CE on all tokens. "
                  "swing_noshield: without the shield; swing_kd_only: alpha = 1 (no hard labels at all); "
                  "swing_clean_transfer: the student's transfer text without the canary lines (the teacher still "
                  "memorised them); swing_untied_noshield: untied student embeddings; swing_ce_only: alpha = 0 (no "
                  "teacher: CE on the non-digit tokens). *_v1posnoise rows: our previous Swing, noise keyed by "
                  "(window row, position). Rows xN: N copies of each canary (its own teacher). Hyperparameters fixed "
                  "before the run; validation NLL reported, test read once."
                  + (f" Students shortened to {args.steps} steps." if args.steps else "")),
    }
    write_result(Path(args.results) / f"{args.name}.json", result)
    write_markdown(Path(args.results) / f"{args.name}.md", result,
                   "Swing distillation: canary exposure vs plain KD", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
