"""Memory of one trajectory-matching iteration: ``unroll: full`` against ``unroll: recompute``.

For Fashion-MNIST-sized inputs (1x28x28, ConvNet-3 width 128, instance norm, the dd-v1 network)
and IPC 1 / 10 / 50 (all synthetic images in every student step, as MTT's default ``batch_syn``),
one MTT iteration of N student steps is run in a fresh process per (mode, IPC, N, seed), and the
growth of the process's peak resident memory during the iteration is recorded (CPU; on a GPU the
same script reports ``torch.cuda.max_memory_allocated``). The expert buffer is two random
trajectories of the right shape - memory does not depend on the experts' values - so this needs
no expert training. The seeds change the start epoch, batches and DSA draws.

    python benchmarks/trajectory_memory.py            # ~5 min on 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from potstill.report.results import stat, write_markdown, write_result  # noqa: E402

NET = {"name": "convnet", "width": 128, "depth": 3, "norm": "instance", "pooling": "avg", "first_padding": 3}


def peak_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(mode: str, ipc: int, steps: int, seed: int) -> dict:
    """Run in a child process: build MTT on a random buffer, time and measure one iteration."""
    import torch

    import potstill
    from potstill.core.method import BuildContext
    from potstill.data import ArrayData, DataBundle
    from potstill.data.trajectories import ExpertBuffer
    from potstill.methods.dataset.experts import layout

    torch.set_num_threads(1)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(60 * 10, 1, 28, 28, generator=g)
    y = torch.arange(10).repeat_interleave(60)
    data = DataBundle(name="fmnist-shaped", train=ArrayData(x, y), val=None, test=ArrayData(x[:10], y[:10]),
                      num_classes=10, normalization={"mean": [0.0], "std": [1.0]})
    net = potstill.build_model(NET, (1, 28, 28), 10)
    with tempfile.TemporaryDirectory() as tmp:
        meta = {"net": NET, "data": {"name": data.name, "normalization": data.normalization, "in_shape": [1, 28, 28],
                                     "num_classes": 10}, "training": {}, "epochs": 3,
                "num_params": sum(p.numel() for p in net.parameters()), "layout": layout(net)}
        buf = ExpertBuffer.start(tmp, meta)
        for _ in range(2):
            buf.append(torch.randn(4, meta["num_params"], generator=g) * 0.05, {})
        cls = potstill.METHODS.get("mtt")
        torch.manual_seed(seed)
        m = cls.build(cls.Config(ipc=ipc, net=NET, buffer=tmp, syn_steps=steps, expert_epochs=1, max_start_epoch=2,
                                 unroll=mode), BuildContext(data=data)).to(dev)
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        before = peak_mib()
        t0 = time.time()
        out = m.loss({}, 0)
        out["images"].backward()
        return {"mode": mode, "ipc": ipc, "steps": steps, "seed": seed, "peak_growth_mib": round(peak_mib() - before, 1),
                "seconds": round(time.time() - t0, 2), "device": dev}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=4, metavar=("MODE", "IPC", "STEPS", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--cells", nargs="+", default=["1x5", "1x10", "10x5", "10x10", "50x5"], metavar="IPCxN",
                    help="(IPC, student steps) pairs; IPC 50 x N 10 with the full graph needs ~17 GiB")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    args = ap.parse_args(argv)
    if args.child:
        mode, ipc, steps, seed = args.child
        print(json.dumps(one(mode, int(ipc), int(steps), int(seed))))
        return 0
    cells_path = Path(args.results) / "trajectory_memory.cells.jsonl"   # resumable: one line per measurement
    done = {}
    if cells_path.is_file():
        for line in cells_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["mode"], r["ipc"], r["steps"], r["seed"])] = r
    cells = [tuple(int(v) for v in c.split("x")) for c in args.cells]
    rows = []
    for ipc, steps in cells:
        for mode in ("full", "recompute"):
            for seed in range(args.seeds):
                if (mode, ipc, steps, seed) not in done:
                    out = subprocess.run([sys.executable, __file__, "--child", mode, str(ipc), str(steps), str(seed)],
                                         capture_output=True, text=True, check=True)
                    rec = json.loads(out.stdout.strip().splitlines()[-1])
                    with open(cells_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    done[(mode, ipc, steps, seed)] = rec
                    print(rec, flush=True)
                rows.append(done[(mode, ipc, steps, seed)])
    metrics = {}
    for r in rows:
        k = f"ipc{r['ipc']}/N{r['steps']}/{r['mode']}"      # the setting first: rows compare within it
        metrics.setdefault(k + "/peak_growth_mib", []).append(r["peak_growth_mib"])
        metrics.setdefault(k + "/seconds", []).append(r["seconds"])
    metrics = {k: stat(v) for k, v in metrics.items()}
    import platform

    result = {"catalog_ids": ["B6"], "command": "python benchmarks/trajectory_memory.py",
              "dataset": "Fashion-MNIST-shaped random tensors (1x28x28, 10 classes); memory does not depend on values",
              "seeds": list(range(args.seeds)), "metrics": metrics, "baselines": {},
              "wall_clock_s": round(sum(r["seconds"] for r in rows), 1), "machine": f"{platform.machine()} {rows[0]['device']}",
              "date": time.strftime("%Y-%m-%d"),
              "notes": "One MTT iteration (N student steps on all K*IPC synthetic images, DSA on, ConvNet-3 w128) "
                       "per fresh process; peak_growth_mib is the growth of the process's peak resident memory "
                       "(CPU) during the iteration and its backward pass."}
    write_result(Path(args.results) / "trajectory_memory.json", result)
    lines = ["## Peak memory growth of one iteration (MiB), mean over seeds", "",
             "| IPC | N | full | recompute | full s | recompute s |", "|---|---|---|---|---|---|"]
    for ipc, steps in cells:
        f, r = metrics[f"ipc{ipc}/N{steps}/full/peak_growth_mib"], metrics[f"ipc{ipc}/N{steps}/recompute/peak_growth_mib"]
        fs, rs = metrics[f"ipc{ipc}/N{steps}/full/seconds"], metrics[f"ipc{ipc}/N{steps}/recompute/seconds"]
        lines.append(f"| {ipc} | {steps} | {f['mean']:.0f} | {r['mean']:.0f} | {fs['mean']:.1f} | {rs['mean']:.1f} |")
    write_markdown(Path(args.results) / "trajectory_memory.md", result,
                   "Trajectory matching: memory of the unroll (full graph vs recompute)", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
