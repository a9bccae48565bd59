"""Language-model distillation benchmark: teacher vs student from scratch vs token-level KD (B10).

Two tasks (``--tasks``): ``pydoc`` (character-level English, ``recipes/lm/*_pydoc.yaml``;
validation/test NLL and bits per character) and ``arith`` (3-digit addition with reversed
answers, ``recipes/lm/*_arith.yaml``; NLL and greedy exact match on 500 held-out problems).
Per task: the teacher recipe once (seed 0), the student from scratch, and ``token_kd`` with each
divergence in ``--divergences``, off-policy (data batches) and on-policy (GKD, λ = 0.5:
half of the steps continue 16/32-token prompts with the student's own samples), each for
``--seeds`` seeds. Students are identical networks with the same steps and optimizer.

Resumable cell by cell (task x method x policy x seed): run folders under ``--runs``, finished
cells appended to ``<name>.cells.jsonl``; tables rewritten after every cell. Hyperparameters are
the recipes' (no choice on test data; the test split is read once per run).

    python benchmarks/lm_text.py --tasks arith --divergences forward_kl reverse_kl --seeds 3
    python benchmarks/lm_text.py --steps 300      # a quick look (students only shortened)

``--cache-teacher`` reads the data batches' teacher logits from a cache computed once (the same
eval-mode teacher, so the same targets up to float rounding): it only saves time.
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

DIVERGENCES = ["forward_kl", "reverse_kl", "jsd", "tv", "skew_kl", "skew_rkl"]
POLICIES = {"off": 0.0, "on": 0.5}
#: the skew divergences' mixing weight: DistiLLM's alpha = 0.1 (Ko et al., arXiv 2402.03898). Rows
#: ``skew_*_a0.5`` were run earlier with the recipe's beta = 0.5 (the JSD default), kept as an ablation.
SKEW_ALPHA = 0.1


def div_label(div: str) -> str:
    """How a divergence is named in cells and run folders (the skew ones carry their alpha)."""
    return f"{div}_a{SKEW_ALPHA}" if div.startswith("skew") else div


def exact_match_of(run_dir: Path, task: str) -> dict:
    """Greedy exact match (%) of the exported model on the arithmetic validation and test problems."""
    import yaml

    from potstill.core.run import load_model
    from potstill.data import load_dataset
    from potstill.eval.lm import exact_match

    if task != "arith":
        return {}
    data = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    info = load_dataset(data).info
    model = load_model(run_dir)
    pre = info.get("prompt_prefix", "\n")      # how a problem starts in the training stream
    return {f"{split}_exact": exact_match(model, [pre + p for p in info[f"{split}_prompts"]], info[f"{split}_answers"],
                                         info["itos"]) for split in ("val", "test")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["arith", "pydoc"], choices=["arith", "pydoc"])
    ap.add_argument("--divergences", nargs="+", default=DIVERGENCES, choices=DIVERGENCES)
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-start", type=int, default=0, help="first seed (split the seeds over processes)")
    ap.add_argument("--steps", type=int, default=0, help="student steps (0: the recipes')")
    ap.add_argument("--teacher-steps", type=int, default=0, help="teacher steps (0: the recipe's)")
    ap.add_argument("--threads", type=int, default=2)
    add_output_args(ap, "lm_text", str(ROOT / "benchmarks/runs/lm_text"))
    ap.add_argument("--cache-teacher", action="store_true",
                    help="compute the teacher's logits of the training windows once (stored under <runs>/teacher_cache, "
                         "shared by every KD cell of a task); on-policy batches still call the teacher")
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    results, cells_path, done = open_cells(args.results, args.name)
    common = ["trainer.progress=false", f"trainer.threads={args.threads}"]
    short = [f"trainer.steps={args.steps}", f"trainer.eval_every={args.steps}"] if args.steps else []

    def cell(key, recipe, overrides, out, extra):
        if key in done:
            return
        t0 = time.time()
        s = run_recipe(recipe, overrides, out)
        rec = {"cell": key, **extra, "steps": s["steps"], "train_s": s["wall_clock_s"],
               "val_nll": s["val"]["nll"], "val_bpc": s["val"]["bpc"], "test_nll": s["test"]["nll"],
               "test_bpc": s["test"]["bpc"], "params": s.get("params"), **exact_match_of(out, extra["task"]),
               "machine": s.get("machine"), "cell_s": round(time.time() - t0, 1)}
        append_cell(cells_path, done, rec)
        print(key, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items() if k != "cell"}, flush=True)
        report(args, done)

    for task in args.tasks:
        rdir = ROOT / "recipes/lm"
        tt = f"@{args.teacher_steps}steps" if args.teacher_steps else ""   # shortened runs keep their own cells
        st = f"@{args.steps}steps" if args.steps else ""
        teacher_dir = runs / f"{task}_teacher{tt.replace('@', '_')}"
        t_short = [f"trainer.steps={args.teacher_steps}", f"trainer.eval_every={args.teacher_steps}"] if args.teacher_steps else []
        cell(f"{task}/teacher{tt}/seed0", rdir / f"teacher_{task}.yaml", common + t_short, teacher_dir,
             {"task": task, "model": f"teacher{tt}", "policy": "-", "seed": 0})
        ckpt = teacher_dir / "export" / "model.safetensors"
        for seed in range(args.seed_start, args.seeds):
            seeds = [f"trainer.seed={seed}"]
            cell(f"{task}/scratch{st}/seed{seed}", rdir / f"scratch_{task}.yaml", common + short + seeds,
                 runs / f"{task}_scratch_s{seed}{st.replace('@', '_')}", {"task": task, "model": f"scratch{st}", "policy": "-", "seed": seed})
            for div in args.divergences:
                for pol in args.policies:
                    ov = common + short + seeds + [f"method.seed={seed}", f"method.divergence={div}",
                                                   f"method.on_policy={POLICIES[pol]}", f"teacher.checkpoint={ckpt}"]
                    if div.startswith("skew"):
                        ov.append(f"method.beta={SKEW_ALPHA}")
                    if args.cache_teacher:
                        ov += ["teacher.cache=true", f"teacher.cache_dir={runs / 'teacher_cache'}"]
                    lab = div_label(div)
                    cell(f"{task}/{lab}/{pol}{st}/seed{seed}", rdir / f"token_kd_{task}.yaml", ov,
                         runs / f"{task}_{lab}_{pol}_s{seed}{st.replace('@', '_')}", {"task": task, "model": f"{lab}{st}", "policy": pol, "seed": seed})
    report(args, done)
    return 0


def report(args, done: dict) -> None:
    cells = list(done.values())
    groups: dict[tuple, list] = {}
    for c in cells:
        groups.setdefault((c["task"], c["model"], c["policy"]), []).append(c)
    metrics, baselines = {}, {}
    lines = []
    for task in ("arith", "pydoc"):
        rows = [(k, v) for k, v in groups.items() if k[0] == task]
        if not rows:
            continue
        em = task == "arith"
        lines += [f"## {task}: mean ± std over seeds (students: same network, steps and optimizer)", "",
                  "| model | policy | seeds | val bits/char | test bits/char | test NLL |"
                  + (" val exact % | test exact % |" if em else "") + " train s |",
                  "|---|---|---|---|---|---|" + ("---|---|" if em else "") + "---|"]
        for (t, model, pol), cs in sorted(rows, key=lambda kv: (not kv[0][1].startswith("teacher"), not kv[0][1].startswith("scratch"), kv[0])):
            m = {k: stat([c[k] for c in cs]) for k in ("val_bpc", "test_bpc", "test_nll", "train_s")
                 + (("val_exact", "test_exact") if em else ())}
            target = baselines if model.startswith("teacher") else metrics
            for k, v in m.items():
                target[f"{task}/{model}/{pol}/{k}"] = v
            f = lambda k: f"{m[k]['mean']:.3f} ± {m[k]['std']:.3f}"  # noqa: E731
            lines.append(f"| {model} | {pol} | {len(cs)} | {f('val_bpc')} | {f('test_bpc')} | {f('test_nll')} |"
                         + (f" {m['val_exact']['mean']:.1f} ± {m['val_exact']['std']:.1f} | "
                            f"{m['test_exact']['mean']:.1f} ± {m['test_exact']['std']:.1f} |" if em else "")
                         + f" {m['train_s']['mean']:.0f} |")
        lines.append("")
    result = {
        "catalog_ids": ["B10"],
        "command": "python benchmarks/lm_text.py --seeds 3 --steps 1000 --threads 1 --cache-teacher (arith cells of "
                   "forward_kl, reverse_kl, jsd and tv ran before --cache-teacher existed, without it)",
        "dataset": "pydoc_chars (CPython pydoc topics + 10 canaries, block 64, 90/5/5 contiguous split, char vocab) and arithmetic "
                   "(3-digit a+b=c zero-padded, reversed answers, loss on answers, 20k train / 500 val / 500 test problems)",
        "seeds": sorted({c["seed"] for c in cells if c["model"] != "teacher"}),
        "metrics": metrics, "baselines": baselines,
        "wall_clock_s": round(sum(c["cell_s"] for c in cells), 1),
        "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "notes": ("Teacher (4-layer GPT, width 192) = baseline; students 2-layer width 96. on = GKD on-policy "
                  "mixing with lambda 0.5 (student-sampled continuations at temperature 1). skew_*_a0.1: skew KL "
                  "KL(p || a p + (1-a) q) and skew reverse KL KL(q || a q + (1-a) p) at DistiLLM's a = 0.1; "
                  "skew_*_a0.5: the same at a = 0.5 (an earlier run with the recipe's beta). Recipes fixed before "
                  "the run; test read once per run." + (f" Students shortened to {args.steps} steps." if args.steps else "")),
    }
    write_result(Path(args.results) / f"{args.name}.json", result)
    write_markdown(Path(args.results) / f"{args.name}.md", result,
                   "Language-model distillation: teacher vs scratch vs token-level KD", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
