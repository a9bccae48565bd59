"""MGSR ablation (K3): each part of Multi-Granularity Semantic Revision switched on in turn.

On the pydoc character task (teacher: ``recipes/lm/teacher_pydoc.yaml``, the run folder of
``benchmarks/lm_text.py``), the same 2-layer width-96 student with the same steps and optimizer:

    sft        next-token cross-entropy only (``recipes/lm/scratch_pydoc.yaml``)
    +kd        + forward KL to the teacher on the data          (mgsr, every part off)
    +on_policy + half of the steps on student samples (GKD λ = 0.5)
    +scrg      + sequence correction and re-generation of those samples
    +dac_kl    + learned clipping of the KL (DAC-KL)
    +span      + word-span correlation loss = full MGSR (``recipes/lm/mgsr_pydoc.yaml``)

Metrics: validation and test bits per character, and the character ROUGE-L (LCS F-measure) of
greedy 48-character continuations of 16-character test prompts against the real text. Resumable
cell by cell (row × seed) in ``<name>.cells.jsonl``.

    python benchmarks/mgsr_ablation.py --seeds 3
    python benchmarks/mgsr_ablation.py --seeds 1 --steps 500          # a quick look
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

OFF = ["method.on_policy=0.0", "method.scrg_rounds=0", "method.dac_kl=false", "method.span_weight=0.0"]
LADDER = {
    "sft": ("scratch_pydoc.yaml", []),
    "+kd": ("mgsr_pydoc.yaml", OFF),
    "+on_policy": ("mgsr_pydoc.yaml", ["method.on_policy=0.5", "method.scrg_rounds=0", "method.dac_kl=false", "method.span_weight=0.0"]),
    "+scrg": ("mgsr_pydoc.yaml", ["method.on_policy=0.5", "method.scrg_rounds=1", "method.dac_kl=false", "method.span_weight=0.0"]),
    "+dac_kl": ("mgsr_pydoc.yaml", ["method.on_policy=0.5", "method.scrg_rounds=1", "method.dac_kl=true", "method.span_weight=0.0"]),
    "+span": ("mgsr_pydoc.yaml", []),
}


def rouge_l(a: str, b: str) -> float:
    """Character ROUGE-L F1: 2·LCS / (|a| + |b|)."""
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b):
            cur.append(prev[j] + 1 if ca == cb else max(prev[j + 1], cur[j]))
        prev = cur
    return 2 * prev[-1] / (len(a) + len(b))


def continuation_rouge(run_dir: Path, n_prompts: int = 100, new: int = 48) -> float:
    import torch
    import yaml

    from potstill.core.run import load_model
    from potstill.data import load_dataset
    from potstill.data.text import decode

    bundle = load_dataset(yaml.safe_load((run_dir / "config.yaml").read_text())["data"])
    itos = bundle.info["itos"]
    rows = torch.linspace(0, len(bundle.test) - 1, n_prompts).long()
    x = bundle.test.x[rows]
    ref = torch.cat([x[:, 16:], bundle.test.y[rows, -1:]], 1)[:, :new]
    model = load_model(run_dir).eval()
    out = model.generate(x[:, :16], new, greedy=True)[:, 16:]
    return 100 * sum(rouge_l(decode(o, itos), decode(r, itos)) for o, r in zip(out, ref)) / n_prompts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=list(LADDER), choices=list(LADDER))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="student steps (0: the recipes')")
    ap.add_argument("--threads", type=int, default=2)
    add_output_args(ap, "mgsr_ablation", str(ROOT / "benchmarks/runs/mgsr"))
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    results, cells_path, done = open_cells(args.results, args.name)
    rdir = ROOT / "recipes/lm"
    common = ["trainer.progress=false", f"trainer.threads={args.threads}"]
    short = [f"trainer.steps={args.steps}", f"trainer.eval_every={args.steps}"] if args.steps else []
    tag = f"@{args.steps}steps" if args.steps else ""
    teacher_dir = runs.parent / "lm_text" / "pydoc_teacher"          # shared with lm_text / distillspec / swing
    run_recipe(rdir / "teacher_pydoc.yaml", common, teacher_dir)
    ckpt = teacher_dir / "export" / "model.safetensors"
    for seed in range(args.seeds):
        for row in args.rows:
            key = f"{row}{tag}/seed{seed}"
            if key in done:
                continue
            recipe, ov = LADDER[row]
            teacher = [f"teacher.checkpoint={ckpt}", f"method.seed={seed}"] if recipe.startswith("mgsr") else []
            out = runs / f"{row.lstrip('+')}_s{seed}{tag.replace('@', '_')}"
            t0 = time.time()
            s = run_recipe(rdir / recipe, common + short + [f"trainer.seed={seed}"] + ov + teacher, out)
            rec = {"cell": key, "row": f"{row}{tag}", "seed": seed, "steps": s["steps"], "train_s": s["wall_clock_s"],
                   "val_bpc": s["val"]["bpc"], "test_bpc": s["test"]["bpc"], "rouge_l": continuation_rouge(out),
                   "machine": s.get("machine"), "cell_s": round(time.time() - t0, 1)}
            append_cell(cells_path, done, rec)
            print(key, {k: round(rec[k], 4) for k in ("val_bpc", "test_bpc", "rouge_l")}, flush=True)
            report(args, done)
    report(args, done)
    return 0


def report(args, done: dict) -> None:
    cells = list(done.values())
    order = {r: i for i, r in enumerate(LADDER)}
    groups: dict[str, list] = {}
    for c in cells:
        groups.setdefault(c["row"], []).append(c)
    metrics = {}
    lines = ["Each row adds one part to the row above (same student, steps, optimizer).", "",
             "| row | seeds | val bits/char | test bits/char | ROUGE-L of greedy continuations (%) | train s |",
             "|---|---|---|---|---|---|"]
    for row, cs in sorted(groups.items(), key=lambda kv: order.get(kv[0].split("@")[0], 99)):
        m = {k: stat([c[k] for c in cs]) for k in ("val_bpc", "test_bpc", "rouge_l", "train_s")}
        for k, v in m.items():
            metrics[f"{row}/{k}"] = v
        f = lambda k, d=3: f"{m[k]['mean']:.{d}f} ± {m[k]['std']:.{d}f}"  # noqa: E731
        lines.append(f"| {row} | {len(cs)} | {f('val_bpc')} | {f('test_bpc')} | {f('rouge_l', 1)} | {m['train_s']['mean']:.0f} |")
    result = {
        "catalog_ids": ["K3"],
        "command": "python benchmarks/mgsr_ablation.py " + " ".join(sys.argv[1:]),
        "dataset": "pydoc_chars (block 64; CPython pydoc topics, char vocab, 90/5/5 contiguous split)",
        "seeds": sorted({c["seed"] for c in cells}),
        "metrics": metrics, "baselines": {},
        "wall_clock_s": round(sum(c["cell_s"] for c in cells), 1),
        "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "notes": ("Teacher 4-layer GPT width 192 (recipes/lm/teacher_pydoc.yaml); students 2-layer width 96. "
                  "Hyperparameters fixed before the run (no choice on test)."
                  + (f" Students shortened to {args.steps} steps." if args.steps else "")),
    }
    write_result(Path(args.results) / f"{args.name}.json", result)
    write_markdown(Path(args.results) / f"{args.name}.md", result, "MGSR ablation on pydoc characters", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
