"""Memory of one training step of the generative methods on Fashion-MNIST (28x28 U-Net).

One network (the EDM teacher's own training) against the three-network students (generator,
fake score and frozen teacher: DMD, DMD2, SiD), at several batch sizes. Each (method, batch,
seed) runs in a fresh process: the recipe's method is built (data, teacher and networks loaded
first), then one step - every parameter group's loss and backward - runs, and the growth of the
process's peak resident memory during that step is recorded (CPU; ``torch.cuda.max_memory_allocated``
on a GPU). Parameter and optimizer-state memory come on top: parameters are reported per method.

    python benchmarks/generative_memory.py            # ~5 min on 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from potstill.report.results import stat, write_markdown, write_result  # noqa: E402

RECIPES = {"edm": "recipes/gen/edm_fmnist.yaml", "dmd": "recipes/gen/dmd_fmnist.yaml",
           "dmd2": "recipes/gen/dmd2_fmnist.yaml", "sid": "recipes/gen/sid_fmnist.yaml"}


def peak_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(method: str, batch: int, seed: int) -> dict:
    import torch

    from potstill.core.run import build, resolve

    torch.set_num_threads(1)
    ov = [f"trainer.seed={seed}"]
    if method != "edm":
        ov.append("teacher.checkpoint=" + str(ROOT / "benchmarks/assets/edm_fmnist"))
    if method == "dmd":   # DMD's regression set is built before training (2,048 teacher ODE solves): a
        ov.append("method.regression_pairs=64")   # smaller set changes the stored pairs (12 MB), not the step
    cfg = resolve(ROOT / RECIPES[method], ov)
    m, data = build(cfg)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m = m.to(dev)
    m.train()
    train = m.train_data(data) if m.train_data(data) is not None else data.train
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train), generator=g)[:batch]
    batch_d = {"x": train.x[idx].to(dev), "y": train.y[idx].to(dev)}
    # DMD looks its regression pairs up by the example index (what the trainer's batches carry)
    batch_d["index"] = train.index[idx] if getattr(train, "index", None) is not None else idx
    groups = m.param_groups()
    params = sum(p.numel() for ps in groups.values() for p in ps)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = peak_mib()
    t0 = time.time()
    losses = m.loss(batch_d, 0)
    names = list(groups)
    for i, gname in enumerate(names):
        losses[gname].backward(inputs=groups[gname], retain_graph=i < len(names) - 1)
    return {"method": method, "batch": batch, "seed": seed, "peak_growth_mib": round(peak_mib() - before, 1),
            "seconds": round(time.time() - t0, 2), "trainable_params": params, "groups": names, "device": dev}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "BATCH", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--methods", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one(args.child[0], int(args.child[1]), int(args.child[2]))))
        return 0
    cells_path = Path(args.results) / "generative_memory.cells.jsonl"   # resumable
    done = {}
    if cells_path.is_file():
        for line in cells_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["method"], r["batch"], r["seed"])] = r
    rows = []
    for m in args.methods:
        for b in args.batches:
            for s in range(args.seeds):
                if (m, b, s) not in done:
                    out = subprocess.run([sys.executable, __file__, "--child", m, str(b), str(s)], capture_output=True,
                                         text=True, check=True, cwd=ROOT)
                    rec = json.loads(out.stdout.strip().splitlines()[-1])
                    with open(cells_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    done[(m, b, s)] = rec
                    print(rec, flush=True)
                rows.append(done[(m, b, s)])
    metrics = {}
    for r in rows:
        k = f"batch{r['batch']}/{r['method']}"      # the setting first: rows compare within it
        metrics.setdefault(k + "/peak_growth_mib", []).append(r["peak_growth_mib"])
        metrics.setdefault(k + "/seconds", []).append(r["seconds"])
    metrics = {k: stat(v) for k, v in metrics.items()}
    params = {r["method"]: (r["trainable_params"], r["groups"]) for r in rows}
    result = {"catalog_ids": ["B7", "B9", "G4", "G1"], "command": "python benchmarks/generative_memory.py",
              "dataset": "fmnist (symmetric pixels), recipes/gen/*_fmnist.yaml networks, committed EDM teacher",
              "seeds": list(range(args.seeds)), "metrics": metrics, "baselines": {},
              "wall_clock_s": round(sum(r["seconds"] for r in rows), 1),
              "machine": f"{platform.machine()} {rows[0]['device']}", "date": time.strftime("%Y-%m-%d"),
              "notes": "One training step (every parameter group's loss and backward) per fresh process; "
                       "peak_growth_mib is the growth of the peak resident memory during the step (activations "
                       "and gradients; parameters and data were loaded before). edm = the teacher's own training "
                       "(one network); dmd/dmd2/sid = generator + fake score + frozen teacher. DMD built with 64 regression pairs "
                       "instead of 2,048 (the set is built before the step; its 2,048 pairs take 12 MB)."}
    write_result(Path(args.results) / "generative_memory.json", result)
    lines = ["## Peak memory growth of one step (MiB), mean ± std over seeds", "",
             "| method | trainable parameters (groups) | " + " | ".join(f"batch {b}" for b in args.batches) + " |",
             "|---|---|" + "---|" * len(args.batches)]
    for m in args.methods:
        cells = [metrics[f"batch{b}/{m}/peak_growth_mib"] for b in args.batches]
        n, groups = params[m]
        lines.append(f"| {m} | {n / 1e6:.2f} M ({', '.join(groups)}) | " +
                     " | ".join(f"{c['mean']:.0f} ± {c['std']:.0f}" for c in cells) + " |")
    write_markdown(Path(args.results) / "generative_memory.md", result,
                   "Generative methods: memory of one training step (one network vs three)", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
