"""Seconds per distillation step of DM and DataDAM (Fashion-MNIST, IPC 10), contiguous vs channels-last.

DM and DataDAM spend their step in forwards of a random ConvNet-3 (w128, instance norm) over
``batch_real`` real images per class (no gradient) and the synthetic images (gradient to the
pixels). ``potstill.methods.dataset.base.CHANNELS_LAST`` runs those forwards in channels-last
memory on CPU. This script times both layouts in alternating rounds in one process (so a load
change on the machine hits both), checks that they give the same loss on the same draw, and writes
``benchmarks/results/dd_step_speed.{json,md}``::

    python benchmarks/dd_step_speed.py --threads 2 --seeds 3 --steps 5
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from potstill.data import load_dataset  # noqa: E402
from potstill.methods.dataset import base  # noqa: E402
from potstill.methods.dataset.datadam import DataDAM, DataDAMConfig  # noqa: E402
from potstill.methods.dataset.dm import DM, DMConfig  # noqa: E402
from potstill.report.results import stat, write_markdown, write_result  # noqa: E402

#: the CPU budget's settings (benchmarks/dd_fmnist.py): DM with 64 real images per class, DataDAM's recipe
METHODS = {"dm": (DM, DMConfig, 64), "datadam": (DataDAM, DataDAMConfig, 64)}


def one_step(method, opt) -> float:
    opt.zero_grad(set_to_none=True)
    loss = method.loss(None, 0)["images"]
    loss.backward()
    opt.step()
    return float(loss.detach())


def same_loss(method) -> float:
    """Relative difference of the loss on one draw (same net, batches, DSA) in the two layouts."""
    out = []
    for cl in (False, True):
        base.CHANNELS_LAST = cl
        torch.manual_seed(123)
        with torch.no_grad():
            out.append(float(method.loss(None, 0)["images"]))
    return abs(out[0] - out[1]) / max(abs(out[0]), 1e-12)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3, help="synthetic sets (seeds 0..N-1), each timed in --rounds")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds per layout and seed")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round (after one warm-up step)")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_dataset({"name": "fmnist", "val_size": 5000})
    t_all = time.time()
    metrics, rows = {}, []
    for name, (cls, cfg_cls, batch_real) in METHODS.items():
        times, rels = {False: [], True: []}, []
        for seed in range(args.seeds):                      # a fresh synthetic set per seed
            torch.manual_seed(seed)
            method = cls(cfg_cls(ipc=args.ipc, batch_real=batch_real), bundle)
            opt = torch.optim.SGD([method.images], lr=1.0, momentum=0.5)
            rels.append(same_loss(method))
            for _ in range(args.rounds):
                for cl in (False, True):
                    base.CHANNELS_LAST = cl
                    one_step(method, opt)                   # warm-up (oneDNN primitive caches)
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        one_step(method, opt)
                    times[cl].append((time.perf_counter() - t0) / args.steps)
        rel = max(rels)
        base.CHANNELS_LAST = True
        a, b = stat(times[False]), stat(times[True])
        metrics[f"{name}/s_per_step_contiguous"] = a
        metrics[f"{name}/s_per_step_channels_last"] = b
        metrics[f"{name}/speedup"] = stat([x / y for x, y in zip(times[False], times[True])])
        rows.append(f"| {name} | {batch_real} | {a['mean']:.3f} ± {a['std']:.3f} | {b['mean']:.3f} ± {b['std']:.3f} | "
                    f"{statistics.median(times[False]) / statistics.median(times[True]):.2f}x | {rel:.1e} |")
        print(rows[-1], flush=True)
    machine = f"{platform.system()} {platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    cmd = (f"python benchmarks/dd_step_speed.py --threads {args.threads} --seeds {args.seeds} --rounds {args.rounds} "
           f"--steps {args.steps}")
    result = {"catalog_ids": ["B5", "D2"], "command": cmd,
              "dataset": f"fmnist, IPC {args.ipc}, 55k train images as the real pool", "seeds": list(range(args.seeds)),
              "metrics": metrics, "baselines": {}, "wall_clock_s": round(time.time() - t_all, 1),
              "machine": machine, "date": time.strftime("%Y-%m-%d"),
              "notes": "Distillation step = draw a random ConvNet-3 w128 (instance norm), DSA'd real batch per class "
                       "(no grad) and the synthetic images (grad), loss, backward, SGD step. Rounds alternate "
                       "contiguous / channels-last in one process; mean ± std over seeds x rounds."}
    write_result(Path(args.results) / "dd_step_speed.json", result)
    body = "\n".join(["| method | real per class | s/step contiguous | s/step channels-last | speed-up (medians) | "
                      "loss rel. diff |", "|---|---|---|---|---|---|", *rows])
    write_markdown(Path(args.results) / "dd_step_speed.md", result,
                   "Distillation step time, contiguous vs channels-last (DM, DataDAM)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
