"""Validation accuracy of dataset-distillation runs against their distillation steps.

Each run folder must keep every checkpoint (``trainer.keep_checkpoints=0``, e.g.
``dd_fmnist.py --set trainer.keep_checkpoints=0 ...``). The images of the checkpoint at each
requested step are judged by the dd-v1 protocol (potstill/eval/synthetic_set.py) on the
*validation* split only: the test split is never read, so this is the tool for choosing a step
budget (and for seeing whether a longer run would still help). Labels are the run's exported
ones, or, while a run is still going, the fixed class-by-class hard labels that DC/DM/DataDAM
keep while their images move.

Resumable: one line per (run, step, seed) in ``<name>.cells.jsonl``; the JSON, Markdown and a
plot (``<name>.png``) are rewritten at the end.

    python benchmarks/dd_steps_curve.py benchmarks/runs/dd_fmnist/dm_ipc10_s2400 \\
        --steps 600 1200 1800 2400 --epochs 600
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from potstill.report.results import stat, write_markdown, write_result  # noqa: E402


def checkpoint_images(run: Path, step: int):
    """The synthetic images of ``run`` after ``step`` distillation steps (clear error if absent)."""
    from potstill.core.checkpoint import load_checkpoint

    path = run / "checkpoints" / f"step-{step:07d}"
    if not path.is_dir():
        have = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
        raise SystemExit(f"{path}: no such checkpoint (have: {', '.join(have) or 'none'}); "
                         "run the distillation with trainer.keep_checkpoints=0 and ckpt_every dividing the steps")
    tensors, _ = load_checkpoint(path)
    if "method/images" not in tensors:
        raise SystemExit(f"{path}: not a dataset-distillation checkpoint (no method/images)")
    return tensors["method/images"]


def evaluate(run: Path, step: int, seed: int, epochs: int, threads: int) -> dict:
    import torch
    import yaml

    from potstill.data import load_dataset
    from potstill.data.synthetic_set import SyntheticSet
    from potstill.eval.synthetic_set import SynEvalConfig, evaluate_synthetic

    images = checkpoint_images(run, step)
    config = yaml.safe_load((run / "config.yaml").read_text())
    bundle = load_dataset(config["data"], f"{run}/config.yaml: data")
    if (run / "export.safetensors").is_file() or (run / "export").is_dir():
        exported = SyntheticSet.load(run / "export")
        if images.shape != exported.images.shape:
            raise SystemExit(f"{run}: checkpoint images {tuple(images.shape)} differ from the export's "
                             f"{tuple(exported.images.shape)}")
        labels, method = exported.labels, exported.meta.get("method")
    else:  # still running: the images are stored class by class with fixed hard labels (base.py)
        if config["method"].get("soft_labels") or config["method"].get("learn_labels"):
            raise SystemExit(f"{run}: no export yet and the run learns its labels; wait for it to finish")
        ipc = len(images) // bundle.num_classes
        labels, method = torch.arange(bundle.num_classes).repeat_interleave(ipc), config["method"]["name"]
    cfg = SynEvalConfig(epochs=epochs, seeds=1, seed=seed, threads=threads)
    t0 = time.time()
    r = evaluate_synthetic((images, labels), bundle, cfg, test=False)
    return {"run": run.name, "step": step, "seed": seed, "epochs": epochs, "val_acc": r["val_acc"]["values"][0],
            "eval_s": round(time.time() - t0, 1), "method": method}


def plot(path: Path, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for run, pts in curves.items():
        xs = sorted(pts)
        ax.errorbar(xs, [pts[x]["mean"] for x in xs], yerr=[pts[x]["std"] for x in xs], marker="o", capsize=3, label=run)
    ax.set_xlabel("distillation steps")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders with every checkpoint kept")
    ap.add_argument("--steps", type=int, nargs="+", required=True, help="checkpoint steps to judge")
    ap.add_argument("--seeds", type=int, default=3, help="evaluation seeds per checkpoint (results need >= 3)")
    ap.add_argument("--epochs", type=int, default=600, help="evaluation epochs (dd_fmnist chose 600 on validation)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    ap.add_argument("--name", default="dd_steps_curve_fmnist")
    args = ap.parse_args(argv)

    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    cells_path = results / f"{args.name}.cells.jsonl"
    done = {}
    if cells_path.is_file():
        for line in cells_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["run"], r["step"], r["seed"], r["epochs"])] = r
    runs = [Path(r) for r in args.runs]
    for run in runs:
        for step in args.steps:
            for seed in range(args.seeds):
                key = (run.name, step, seed, args.epochs)
                if key in done:
                    continue
                rec = evaluate(run, step, seed, args.epochs, args.threads)
                with open(cells_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                done[key] = rec
                print(f"[{run.name} step {step} seed {seed}] val {rec['val_acc']:.2f} ({rec['eval_s']:.0f} s)", flush=True)

    cells = [r for r in done.values() if r["epochs"] == args.epochs]
    curves, metrics = {}, {}
    for r in cells:
        curves.setdefault(r["run"], {}).setdefault(r["step"], []).append(r["val_acc"])
    for run, pts in curves.items():
        for step, vals in pts.items():
            pts[step] = stat(vals)
            metrics[f"{run}/step{step}/val_acc"] = pts[step]
    import platform

    import torch

    catalog = {"dm": "B5", "datadam": "D2", "dc": "B4", "dsa": "B4", "mtt": "B6"}
    result = {"catalog_ids": sorted({catalog[r["method"]] for r in cells if r.get("method") in catalog}),
              "command": "python benchmarks/dd_steps_curve.py " + " ".join(sys.argv[1:]),
              "dataset": "validation split of each run's dataset (its config.yaml); no test accuracy is computed",
              "seeds": sorted({r["seed"] for r in cells}), "metrics": metrics, "baselines": {},
              "wall_clock_s": round(sum(r["eval_s"] for r in cells), 1),
              "machine": f"{platform.system()} {platform.machine()}, torch {torch.__version__}",
              "date": time.strftime("%Y-%m-%d"),
              "notes": f"dd-v1 protocol, {args.epochs} evaluation epochs, validation accuracy of the images at each "
                       "checkpoint with the run's exported labels."}
    write_result(results / f"{args.name}.json", result)
    plot(results / f"{args.name}.png", curves)
    steps = sorted({r["step"] for r in cells})
    lines = ["## Validation accuracy (%) against distillation steps", "",
             "| run | " + " | ".join(str(s) for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for run, pts in curves.items():
        cellstr = [f"{pts[s]['mean']:.2f} ± {pts[s]['std']:.2f} (n={pts[s]['n']})" if s in pts else "–" for s in steps]
        lines.append(f"| {run} | " + " | ".join(cellstr) + " |")
    lines += ["", f"![validation accuracy against steps]({args.name}.png)"]
    write_markdown(results / f"{args.name}.md", result, "Dataset distillation: validation accuracy against steps",
                   "\n".join(lines))
    print(f"wrote {results / args.name}.json/.md/.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
