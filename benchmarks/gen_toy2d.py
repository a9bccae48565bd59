"""Generative distillation benchmark on toy2d (8 Gaussians on a ring, class-conditional).

Teacher: the EDM recipe ``recipes/gen/edm_toy2d.yaml`` (toy MLP denoiser, 4000 steps), measured
at 1/2/4/8 Euler steps and 18 Heun steps (35 NFE). Students, all distilled from that teacher with
their toy2d recipes: progressive distillation (64 -> 1 and 64 -> 4 steps), consistency
distillation (sampled with 1 and 4 steps), DMD (1 step) and DMD2 (1 step; and a 4-step generator
with backward simulation).

Metrics (5,000 samples per sampling seed, 3 sampling seeds, conditioned on the labels of the
5,000 held-out test points they are compared with, so class proportions match): sliced Wasserstein distance, MMD (RBF), mode coverage
(modes with >= 1 sample within 3 std), high-quality share (samples within 3 std of a mode),
NFE, and wall-clock per 1,000 samples (measured in this process, one after another, so the
speed-up ratios compare like with like). Students are trained once (seed 0); no choice is made on
the test points (the recipes were written before this benchmark ran).

Resumable: run folders under ``--runs``; finished measurement cells in ``<name>.cells.jsonl``.

    python benchmarks/gen_toy2d.py            # about 10 minutes on 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import add_output_args, append_cell, open_cells  # noqa: E402
from potstill.core.run import load_denoiser, machine, resolve, run  # noqa: E402
from potstill.data import load_dataset  # noqa: E402
from potstill.diffusion import karras_sigmas, plan_sigmas, sample  # noqa: E402
from potstill.eval.generative import mmd_rbf, mode_stats, sliced_wasserstein  # noqa: E402
from potstill.report.results import stat, write_markdown, write_result  # noqa: E402

STUDENTS = {  # name: (recipe, overrides)
    "progressive": ("progressive_toy2d.yaml", []),
    "progressive_4step": ("progressive_toy2d.yaml", ["method.final_steps=4", "trainer.steps=2000"]),
    "consistency": ("consistency_toy2d.yaml", []),
    "dmd": ("dmd_toy2d.yaml", []),
    "dmd2": ("dmd2_toy2d.yaml", []),
    "dmd2_4step": ("dmd2_toy2d.yaml", ["method.steps=4"]),
    "dmd2_4step_strided": ("dmd2_toy2d.yaml", ["method.steps=4", "method.schedule=strided"]),
}
CATALOG = {"progressive": "B8", "consistency": "B8", "dmd": "B9", "dmd2": "G4"}
N_SAMPLES = 5000


def measure(d, sampler: str, sigmas, bundle, seed: int) -> dict:
    g = torch.Generator().manual_seed(1000 + seed)
    noise = torch.randn(N_SAMPLES, 2, generator=g)
    cond = bundle.test.y[:N_SAMPLES]  # the test points' labels: same class proportions as the reference
    t0 = time.perf_counter()
    out = sample(d, noise, sigmas, sampler, cond=cond, generator=g)
    dt = time.perf_counter() - t0
    ref = bundle.test.x
    ms = mode_stats(out.x, torch.tensor(bundle.info["centers"]), bundle.info["std"])
    return {"swd": sliced_wasserstein(out.x, ref), "mmd": mmd_rbf(out.x[:2000], ref[:2000]), **ms,
            "nfe": out.nfe, "s_per_1000": 1000 * dt / N_SAMPLES}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_args(ap, "gen_toy2d", str(ROOT / "benchmarks/runs/gen_toy2d"))
    ap.add_argument("--seeds", type=int, default=3, help="sampling seeds")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    results, cells_path, done = open_cells(args.results, args.name)

    def append(rec):
        append_cell(cells_path, done, rec)

    quiet = ["trainer.progress=false", f"trainer.threads={args.threads}"]
    teacher_dir = runs / "teacher"

    def train(recipe, overrides, out):
        if (out / "summary.json").is_file():
            return json.loads((out / "summary.json").read_text())
        return run(resolve(ROOT / "recipes/gen" / recipe, overrides + quiet), out, resume=(out / "config.yaml").is_file())

    t_sum = train("edm_toy2d.yaml", [], teacher_dir)
    bundle = load_dataset(resolve(ROOT / "recipes/gen/edm_toy2d.yaml").data)
    teacher = load_denoiser(teacher_dir)
    plans = [("teacher", teacher, "euler", n, karras_sigmas(n)) for n in (1, 2, 4, 8)]
    plans.append(("teacher", teacher, "heun", 18, karras_sigmas(18)))
    train_s = {"teacher": t_sum["wall_clock_s"]}
    for name, (recipe, ov) in STUDENTS.items():
        s = train(recipe, ov + [f"teacher.checkpoint={teacher_dir}"], runs / name)
        train_s[name] = s["wall_clock_s"]
        d = load_denoiser(runs / name)
        plan = d.sampling
        plans.append((name, d, plan["sampler"], plan["steps"], plan_sigmas(plan)))
        if name == "consistency":  # one model, also sampled with 4 steps
            plans.append((name, d, "multistep", 4, karras_sigmas(4, sigma_max=plan["sigma_max"])))
    for who, d, sampler, steps, sig in plans:
        for seed in range(args.seeds):
            key = f"{who}/{sampler}{steps}/seed{seed}"
            if key not in done:
                append({"cell": key, "model": who, "sampler": sampler, "steps": steps, "seed": seed,
                        **measure(d, sampler, sig, bundle, seed)})
                print(key, {k: round(v, 4) if isinstance(v, float) else v for k, v in done[key].items() if k != "cell"},
                      flush=True)
    report(args, done, train_s, plans, bundle, runs)
    return 0


def report(args, done, train_s, plans, bundle, runs) -> None:
    from potstill.report.plots import _plt

    metrics, baselines, rows = {}, {}, []
    for who, _, sampler, steps, _ in plans:
        cells = [done[f"{who}/{sampler}{steps}/seed{s}"] for s in range(args.seeds)]
        key = f"{who}/{sampler}{steps}"
        target = baselines if who == "teacher" else metrics
        for m in ("swd", "mmd", "mode_coverage", "high_quality", "nfe", "s_per_1000"):
            target[f"{key}/{m}"] = stat([c[m] for c in cells])
        rows.append((who, sampler, steps, {m: stat([c[m] for c in cells]) for m in
                                           ("swd", "mmd", "mode_coverage", "high_quality", "nfe", "s_per_1000")}))
    for name, s in train_s.items():
        (baselines if name == "teacher" else metrics)[f"{name}/train_s"] = stat([s])
    t35 = baselines["teacher/heun18/s_per_1000"]["mean"]
    lines = ["## Sample quality (mean ± std over 3 sampling seeds; 5,000 samples each vs 5,000 test points)", "",
             "| model | sampler | NFE | SWD ↓ | MMD ↓ | modes hit | high-quality share | s / 1000 samples | speed-up vs teacher@35 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for who, sampler, steps, m in rows:
        lines.append(f"| {who} | {sampler} {steps} | {m['nfe']['mean']:.0f} | {m['swd']['mean']:.4f} ± {m['swd']['std']:.4f} | "
                     f"{m['mmd']['mean']:.4f} ± {m['mmd']['std']:.4f} | {m['mode_coverage']['mean']:.3f} | "
                     f"{m['high_quality']['mean']:.3f} ± {m['high_quality']['std']:.3f} | {m['s_per_1000']['mean']:.4f} | "
                     f"{t35 / m['s_per_1000']['mean']:.1f}× |")
    lines += ["", "Training wall-clock (s): " + ", ".join(f"{k} {v:.0f}" for k, v in train_s.items()) + ".",
              "", f"![samples]({args.name}.png)"]
    result = {
        "catalog_ids": ["B7", "B8", "B9", "G4"],
        "command": "python benchmarks/gen_toy2d.py",
        "dataset": "toy2d ring of 8 Gaussians (std 0.05, radius 2): 20k train, 2k val, 5k test points",
        "seeds": list(range(args.seeds)),
        "metrics": metrics, "baselines": baselines,
        "wall_clock_s": round(sum(train_s.values()), 1),
        "machine": machine() + f", {args.threads} torch threads", "date": time.strftime("%Y-%m-%d"),
        "notes": ("Teacher = baselines (EDM, 4000 steps). Students trained once (seed 0) from the toy2d recipes; "
                  "sampling seeds 0-2. DMD's regression uses MSE instead of LPIPS and consistency distillation "
                  "uses squared L2 (no pretrained perceptual network offline). Speed-ups are per sample, measured "
                  "in the same process. SWD/MMD against the test points; mode coverage and high-quality share "
                  "use 3 std of the mode centres."),
    }
    write_result(Path(args.results) / f"{args.name}.json", result)
    write_markdown(Path(args.results) / f"{args.name}.md", result,
                   "Generative distillation on toy2d: EDM teacher vs few-step students", "\n".join(lines))
    plt = _plt()
    panels = [(w, d, s, n, sig) for (w, d, s, n, sig) in plans if (w, n) in
              {("teacher", 18), ("teacher", 1), ("progressive", 1), ("consistency", 1), ("dmd", 1), ("dmd2", 1)}]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8))
    for ax, (who, d, sampler, steps, sig) in zip(axes, panels):
        g = torch.Generator().manual_seed(7)
        x = sample(d, torch.randn(2000, 2, generator=g), sig, sampler, cond=torch.arange(2000) % 8, generator=g).x
        ax.scatter(bundle.test.x[:2000, 0], bundle.test.x[:2000, 1], s=1, c="#cccccc")
        ax.scatter(x[:, 0], x[:, 1], s=1, c="#4c72b0")
        ax.set_title(f"{who} ({sampler} {steps})", fontsize=8)
        ax.set_xlim(-3, 3), ax.set_ylim(-3, 3), ax.set_aspect("equal")
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(Path(args.results) / f"{args.name}.png", dpi=100)
    plt.close(fig)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
