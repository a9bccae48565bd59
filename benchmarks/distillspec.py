"""DistillSpec benchmark (K17): acceptance rate and wall-clock speed-up of speculative decoding.

Target: the ``--task`` teacher (``recipes/lm/teacher_<task>.yaml``, 4-layer GPT, width 192; the
same run folder as ``benchmarks/lm_text.py`` uses). Drafts, all the same 2-layer width-96 GPT with
the same steps and optimizer:

* ``undistilled``: trained on the data alone (``recipes/lm/scratch_<task>.yaml``);
* ``distillspec/<divergence>``: the undistilled draft, then ``--distill-steps`` of DistillSpec on
  its own samples (``recipes/lm/distillspec_<task>.yaml``, ``method.student_init``: the paper
  distils pretrained drafts) with each divergence in ``--divergences``;
* ``continued``: the undistilled draft, then the same ``--distill-steps`` of plain next-token
  training on the data (the control: are the gains distillation, or just more steps?).

Every draft decodes the same held-out prompts (pydoc: the first 16 characters of test windows;
arith: a test problem), then ``--new-tokens`` characters, with the same target, greedy and sampled (temperature 1), γ = ``--gamma``; the
target alone decodes them too, interleaved prompt by prompt in the same process and thread
count, so the speed-ups are ratios measured in one run. Greedy speculative output is checked to
equal the target's own greedy output token for token.

Resumable: drafts are run folders under ``--runs``; the decode measurement is one cell per
draft seed in ``<name>.cells.jsonl``.

    python benchmarks/distillspec.py                                   # 4 divergences, 3 seeds
    python benchmarks/distillspec.py --divergences tv forward_kl --seeds 1 --steps 500   # a quick look
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

MODES = {"greedy": True, "sampled": False}


def decode_cell(target_dir: Path, drafts: dict[str, Path], args, seed: int) -> dict:
    """Decode the prompts with the target alone and with every draft; totals per (draft, mode)."""
    import torch
    import yaml

    from potstill.core.run import load_model
    from potstill.data import load_dataset
    from potstill.data.text import encode
    from potstill.decoding import autoregressive_generate, speculative_generate

    torch.set_num_threads(args.decode_threads)
    bundle = load_dataset(yaml.safe_load((target_dir / "config.yaml").read_text())["data"])
    info = bundle.info
    if args.task == "arith":
        prompts = [encode(info["prompt_prefix"] + p, info["itos"])[None] for p in info["test_prompts"][:args.prompts]]
    else:   # evenly spread over the test text
        rows = torch.linspace(0, len(bundle.test) - 1, args.prompts).long()
        prompts = [bundle.test.x[int(r), :16][None] for r in rows]
    target = load_model(target_dir).eval()
    models = {name: load_model(d).eval() for name, d in drafts.items()}
    rec = {"target": {m: 0.0 for m in MODES}}
    stats = {(n, m): {"seconds": 0.0, "proposed": 0, "accepted": 0, "target_calls": 0, "tokens": 0}
             for n in models for m in MODES}
    mismatches = 0
    for warm in (True, False):                     # one untimed pass over a few prompts first
        for i, prompt in enumerate(prompts[:3] if warm else prompts):
            for mode, greedy in MODES.items():
                g = torch.Generator().manual_seed(seed * 100_003 + i)
                ref, secs = autoregressive_generate(target, prompt, args.new_tokens, greedy=greedy, generator=g)
                if not warm:
                    rec["target"][mode] += secs
                for name, draft in models.items():
                    g = torch.Generator().manual_seed(seed * 100_003 + i)
                    out, st = speculative_generate(target, draft, prompt, args.new_tokens, gamma=args.gamma,
                                                   greedy=greedy, generator=g)
                    if greedy and not torch.equal(out, ref):
                        mismatches += 1
                    if warm:
                        continue
                    s = stats[(name, mode)]
                    s["seconds"] += st.seconds
                    s["proposed"] += st.proposed
                    s["accepted"] += st.accepted
                    s["target_calls"] += st.target_calls
                    s["tokens"] += args.new_tokens
    for (name, mode), s in stats.items():
        rec[f"{name}|{mode}"] = {"acceptance": s["accepted"] / max(s["proposed"], 1),
                                 "tokens_per_target_call": s["tokens"] / max(s["target_calls"], 1),
                                 "seconds": s["seconds"], "speedup": rec["target"][mode] / s["seconds"]}
    rec["greedy_mismatches"] = mismatches
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pydoc", choices=["pydoc", "arith"])
    ap.add_argument("--divergences", nargs="+", default=["forward_kl", "reverse_kl", "jsd", "tv"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-start", type=int, default=0, help="first seed (split the seeds over processes)")
    ap.add_argument("--steps", type=int, default=0, help="draft training steps (0: the recipes')")
    ap.add_argument("--teacher-steps", type=int, default=0, help="target training steps (0: the recipe's)")
    ap.add_argument("--distill-steps", type=int, default=500, help="DistillSpec steps from the undistilled draft")
    ap.add_argument("--gamma", type=int, default=4, help="draft tokens proposed per target call")
    ap.add_argument("--prompts", type=int, default=40, help="held-out problems decoded per draft and mode")
    ap.add_argument("--new-tokens", type=int, default=48, help="prompt + new tokens must fit the 64-token context")
    ap.add_argument("--threads", type=int, default=2, help="threads for training")
    ap.add_argument("--decode-threads", type=int, default=1, help="threads for the timed decoding")
    ap.add_argument("--train-only", action="store_true",
                    help="train the drafts and stop (decode later, when nothing else loads the machine)")
    add_output_args(ap, "distillspec", str(ROOT / "benchmarks/runs/distillspec"))
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    results, cells_path, done = open_cells(args.results, args.name)
    rdir = ROOT / "recipes/lm"
    common = ["trainer.progress=false", f"trainer.threads={args.threads}"]
    short = [f"trainer.steps={args.steps}", f"trainer.eval_every={args.steps}"] if args.steps else []
    tag = f"_{args.steps}steps" if args.steps else ""

    t_short = [f"trainer.steps={args.teacher_steps}", f"trainer.eval_every={args.teacher_steps}"] if args.teacher_steps else []
    # the teacher run folder is benchmarks/lm_text.py's (same recipe and overrides: trained once)
    target_dir = runs.parent / "lm_text" / f"{args.task}_teacher{'_%dsteps' % args.teacher_steps if args.teacher_steps else ''}"
    run_recipe(rdir / f"teacher_{args.task}.yaml", common + t_short, target_dir)
    ckpt = target_dir / "export" / "model.safetensors"
    for seed in range(args.seed_start, args.seeds):
        key = f"{args.task}/decode{tag}/ft{args.distill_steps}/ctl/seed{seed}/gamma{args.gamma}"
        if key in done:
            continue
        seeds = [f"trainer.seed={seed}"]
        drafts = {"undistilled": runs / f"{args.task}_undistilled_s{seed}{tag}"}
        run_recipe(rdir / f"scratch_{args.task}.yaml", common + short + seeds, drafts["undistilled"])
        init = drafts["undistilled"] / "export" / "model.safetensors"
        ft = [f"trainer.steps={args.distill_steps}", f"trainer.eval_every={args.distill_steps}"]
        drafts["continued"] = runs / f"{args.task}_continued_s{seed}{tag}_ft{args.distill_steps}"
        run_recipe(rdir / f"scratch_{args.task}.yaml", common + ft + seeds + [f"method.student_init={init}"],
                   drafts["continued"])
        for div in args.divergences:
            d = drafts[f"distillspec/{div}"] = runs / f"{args.task}_distillspec_{div}_s{seed}{tag}_ft{args.distill_steps}"
            run_recipe(rdir / f"distillspec_{args.task}.yaml", common + ft + seeds +
                       [f"method.seed={seed}", f"method.divergence={div}", f"teacher.checkpoint={ckpt}",
                        f"method.student_init={init}"], d)
        if args.train_only:
            continue
        t0 = time.time()
        rec = {"cell": key, "seed": seed, "gamma": args.gamma, "prompts": args.prompts, "new_tokens": args.new_tokens,
               **decode_cell(target_dir, drafts, args, seed), "machine": machine(), "cell_s": None}
        rec["cell_s"] = round(time.time() - t0, 1)
        append_cell(cells_path, done, rec)
        print(key, "done", flush=True)
        report(args, done)
    report(args, done)
    return 0


def report(args, done: dict) -> None:
    cells = list(done.values())
    names = sorted({k.split("|")[0] for c in cells for k in c if "|" in k}, key=lambda n: (n != "undistilled", n))
    metrics, lines = {}, []
    lines += [f"γ = {cells[0]['gamma'] if cells else args.gamma}; {cells[0]['prompts'] if cells else args.prompts} held-out "
              f"prompts × {cells[0]['new_tokens'] if cells else args.new_tokens} new tokens per draft and mode; "
              f"mean ± std over {len(cells)} draft seed(s). Speed-up = target-alone seconds / speculative seconds, "
              "measured in the same process, prompt by prompt.", "",
              "| draft | mode | acceptance rate | tokens / target call | speed-up × |", "|---|---|---|---|---|"]
    for mode in MODES:
        for n in names:
            rows = [c[f"{n}|{mode}"] for c in cells if f"{n}|{mode}" in c]
            m = {k: stat([r[k] for r in rows]) for k in ("acceptance", "tokens_per_target_call", "speedup")}
            for k, v in m.items():
                metrics[f"{n}/{mode}/{k}"] = v
            lines.append(f"| {n} | {mode} | {m['acceptance']['mean']:.3f} ± {m['acceptance']['std']:.3f} | "
                         f"{m['tokens_per_target_call']['mean']:.2f} ± {m['tokens_per_target_call']['std']:.2f} | "
                         f"{m['speedup']['mean']:.2f} ± {m['speedup']['std']:.2f} |")
    if cells:
        tgt = {mode: stat([c["target"][mode] for c in cells]) for mode in MODES}
        lines += ["", "Target alone: " + ", ".join(f"{mode} {v['mean']:.2f} ± {v['std']:.2f} s" for mode, v in tgt.items())
                  + f"; greedy speculative outputs differing from the target's greedy output: "
                  f"{sum(c['greedy_mismatches'] for c in cells)}."]
    result = {
        "catalog_ids": ["K17"],
        "command": "python benchmarks/distillspec.py " + " ".join(sys.argv[1:]),
        "dataset": {"pydoc": "pydoc_chars (CPython pydoc topics, char vocab); prompts = first 16 characters of test windows",
                    "arith": "arithmetic (3-digit a+b=c, reversed answers); test problems as prompts"}[args.task],
        "seeds": sorted(c["seed"] for c in cells),
        "metrics": metrics,
        "baselines": {f"target_alone/{m}/seconds": stat([c["target"][m] for c in cells]) for m in MODES} if cells else {},
        "wall_clock_s": round(sum(c["cell_s"] or 0 for c in cells), 1),
        "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "notes": (f"Target 4-layer GPT width 192; drafts 2-layer width 96, trained {args.steps or 'the recipe'} steps on "
                  f"the data; DistillSpec drafts continue from that draft for {args.distill_steps} on-policy steps. "
                  f"Decoding batch size 1, KV caches, {args.decode_threads} thread(s). Nothing was tuned on the "
                  "test prompts (no choice is made)."),
    }
    write_result(Path(args.results) / f"{args.name}.json", result)
    write_markdown(Path(args.results) / f"{args.name}.md", result,
                   "DistillSpec: speculative decoding with undistilled vs distilled drafts", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
