"""Reliability benchmark (issue: scale-out and reliability): faults, bad input, torchrun agreement.

For one small recipe per pillar (``tests/pillar_recipes.py``: KD supervised ConvNet on digits, DM
on digits, EDM on toy2d, a GPT on arithmetic), on CPU with one thread per process:

* **fault injection**: ``--trials`` runs per pillar are SIGKILLed at a random moment after their
  first checkpoint (a random delay of 0-0.4 s), resumed with ``--resume``, and compared with one
  uninterrupted run: identical = the exported weights (or synthetic set) are bitwise equal and the
  val/test metrics are equal;
* **bad input**: ``--fuzz`` seeded random mutations (truncation, byte flips, splices, garbage, JSON
  field swaps) of a valid idx file, npz file, synthetic set, checkpoint and recipe each; counted
  are clean rejections (a ``PotstillError`` with a message), harmless mutations (loaded fine) and
  anything else (a crash: the target is zero);
* **torchrun**: each pillar's recipe with ``torchrun --standalone --nproc_per_node=2`` (gloo) vs one
  process: the largest weight difference and the val/test metric differences.

    python benchmarks/reliability.py                      # ~10 min on 2 cores
    python benchmarks/reliability.py --trials 2 --fuzz 50  # a quick look
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from pillar_recipes import PILLARS  # noqa: E402
from potstill.core.run import machine  # noqa: E402
from potstill.core.subrun import run_killed, run_recipe  # noqa: E402
from potstill.errors import PotstillError  # noqa: E402
from potstill.report.results import stat, write_markdown, write_result  # noqa: E402


def export_tensors(run: Path) -> dict:
    exp = run / "export"
    f = exp / "model.safetensors" if (exp / "model.safetensors").is_file() else exp / "synthetic.safetensors"
    return load_file(str(f))


def same_run(a: Path, b: Path) -> bool:
    ta, tb = export_tensors(a), export_tensors(b)
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta) and \
        sa.get("val") == sb.get("val") and sa.get("test") == sb.get("test")


def faults(work: Path, trials: int, rng: np.random.Generator) -> dict:
    out = {}
    for pillar, text in PILLARS.items():
        recipe = work / f"{pillar}.yaml"
        recipe.write_text(text)
        full = work / f"{pillar}-full"
        run_recipe(recipe, [], full, log=work / f"{pillar}-full.log", root=ROOT)
        results = []
        for t in range(trials):
            killed = work / f"{pillar}-killed{t}"
            step = run_killed(recipe, [], killed, delay_s=float(rng.uniform(0, 0.4)), root=ROOT)
            run_recipe(recipe, [], killed, log=work / f"{pillar}-killed{t}.log", root=ROOT)
            results.append({"killed_at": step, "identical": same_run(full, killed)})
            print(f"[faults] {pillar} trial {t}: killed at step {step}, identical={results[-1]['identical']}", flush=True)
        out[pillar] = results
    return out


# --- bad input -------------------------------------------------------------------------------------
def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = rng.integers(4)
    if kind == 0 and len(b):
        return bytes(b[:rng.integers(len(b))])
    if kind == 1 and len(b):
        for i in rng.integers(0, len(b), size=rng.integers(1, 9)):
            b[i] = rng.integers(256)
        return bytes(b)
    if kind == 2:
        i = rng.integers(len(b) + 1)
        return bytes(b[:i]) + rng.bytes(int(rng.integers(1, 64))) + bytes(b[i:])
    return rng.bytes(int(rng.integers(0, 256)))


def mutate_json(text: str, rng: np.random.Generator) -> str:
    obj = json.loads(text)
    if rng.random() < 0.3 or not isinstance(obj, dict) or not obj:
        return mutate(text.encode(), rng).decode("utf-8", errors="replace")
    key = sorted(obj)[rng.integers(len(obj))]
    choices = [None, True, -1, 0, 10**12, 1.5, float("nan"), "x", [], [1, "a"], {"a": 1}]
    if rng.random() < 0.2:
        del obj[key]
    else:
        obj[key] = choices[rng.integers(len(choices))]
    return json.dumps(obj)


def fuzz(work: Path, n: int, rng: np.random.Generator) -> dict:
    from potstill.core.checkpoint import load_checkpoint, load_module_weights, save_checkpoint
    from potstill.core.run import resolve
    from potstill.data.fmnist import read_idx
    from potstill.data.npz import read_npz
    from potstill.data.synthetic_set import SyntheticSet

    d = work / "fuzz"
    d.mkdir(exist_ok=True)
    x = (np.arange(18) % 251).astype(np.uint8)
    idx = bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in (2, 3, 3)) + x.tobytes()
    buf = io.BytesIO()
    np.savez(buf, x=np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32), y=np.arange(6) % 2)
    npz = buf.getvalue()
    SyntheticSet(torch.randn(4, 1, 4, 4), torch.tensor([0, 0, 1, 1]), 2, {"method": "dm"}).save(d / "set")
    syn_t, syn_m = (d / "set.safetensors").read_bytes(), (d / "set.json").read_text()
    ck = save_checkpoint(d / "ck", 3, {"method/w": torch.randn(3, 2)}, {"step": 3, "optim": {}})
    ck_t, ck_m = (ck / "state.safetensors").read_bytes(), (ck / "meta.json").read_text()
    recipe = PILLARS["kd"]

    def case_idx(i):
        p = d / f"i{i}-idx3-ubyte" if i % 2 else d / f"i{i}-idx3-ubyte.gz"
        data = mutate(idx, rng)
        p.write_bytes(data if i % 2 else (gzip.compress(data) if rng.random() < 0.7 else data))
        read_idx(p)

    def case_npz(i):
        (d / f"n{i}.npz").write_bytes(mutate(npz, rng))
        read_npz(str(d / f"n{i}.npz"))

    def case_synthetic(i):
        s = d / f"s{i}"
        (s.with_suffix(".safetensors")).write_bytes(mutate(syn_t, rng) if rng.random() < 0.5 else syn_t)
        (s.with_suffix(".json")).write_text(mutate_json(syn_m, rng))
        SyntheticSet.load(s)

    def case_checkpoint(i):
        c = d / f"c{i}"
        c.mkdir(exist_ok=True)
        (c / "state.safetensors").write_bytes(mutate(ck_t, rng))
        (c / "meta.json").write_text(mutate_json(ck_m, rng))
        try:
            load_checkpoint(c)
        finally:
            load_module_weights(torch.nn.Linear(2, 3), c / "state.safetensors")

    def case_recipe(i):
        p = d / f"r{i}.yaml"
        p.write_bytes(mutate(recipe.encode(), rng))
        resolve(p)

    out = {}
    for name, case in (("idx", case_idx), ("npz", case_npz), ("synthetic_set", case_synthetic),
                       ("checkpoint", case_checkpoint), ("recipe", case_recipe)):
        counts = {"tried": 0, "rejected_cleanly": 0, "loaded": 0, "crashed": 0}
        crashes = []
        for i in range(n):
            counts["tried"] += 1
            try:
                case(i)
                counts["loaded"] += 1
            except PotstillError as e:
                counts["rejected_cleanly" if str(e) else "crashed"] += 1
            except Exception as e:  # noqa: BLE001  (what the benchmark is looking for)
                counts["crashed"] += 1
                crashes.append(f"{type(e).__name__}: {str(e)[:120]}")
        out[name] = {**counts, "crash_examples": crashes[:3]}
        print(f"[fuzz] {name}: {counts}", flush=True)
    return out


# --- torchrun agreement ---------------------------------------------------------------------------
def ddp(work: Path) -> dict:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = {}
    for pillar, text in PILLARS.items():
        recipe = work / f"{pillar}.yaml"
        recipe.write_text(text)
        one, two = work / f"{pillar}-ddp1", work / f"{pillar}-ddp2"
        for o, cmd in ((one, [sys.executable, "-m", "potstill"]),
                       (two, [torchrun, "--standalone", "--nproc_per_node=2", "-m", "potstill"])):
            shutil.rmtree(o, ignore_errors=True)
            r = subprocess.run(cmd + ["run", str(recipe), "--out", str(o)], env=env, capture_output=True, text=True,
                               timeout=600, cwd=ROOT)
            if r.returncode != 0:
                raise RuntimeError(f"{pillar}: {' '.join(cmd)} failed: {r.stderr[-800:]}")
        ta, tb = export_tensors(one), export_tensors(two)
        sa, sb = (json.loads((p / "summary.json").read_text()) for p in (one, two))
        diffs = {}
        for split in ("val", "test"):
            for k, v in (sa.get(split) or {}).items():
                if isinstance(v, (int, float)) and k != "tokens" and isinstance((sb.get(split) or {}).get(k), (int, float)):
                    diffs[f"{split}_{k}"] = {"one": v, "two": sb[split][k], "abs_diff": abs(v - sb[split][k])}
        maxdiff = max(float((ta[k].float() - tb[k].float()).abs().max()) for k in ta)
        out[pillar] = {"metrics": diffs, "max_weight_diff": maxdiff}
        print(f"[ddp] {pillar}: max weight diff {maxdiff:.3g}, {diffs}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=5, help="kill-and-resume runs per pillar")
    ap.add_argument("--fuzz", type=int, default=300, help="mutated inputs per loader")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-ddp", action="store_true")
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    work = Path(tempfile.mkdtemp(prefix="potstill-reliability-"))
    try:
        f = faults(work, args.trials, rng)
        z = fuzz(work, args.fuzz, rng)
        g = {} if args.skip_ddp else ddp(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    metrics, baselines = {}, {}
    for pillar, trials in f.items():
        metrics[f"faults/{pillar}/identical"] = stat([float(t["identical"]) for t in trials])
        metrics[f"faults/{pillar}/killed_at_step"] = stat([t["killed_at"] for t in trials])
    for name, c in z.items():
        for k in ("tried", "rejected_cleanly", "loaded", "crashed"):
            metrics[f"fuzz/{name}/{k}"] = stat([c[k]])
    for pillar, r in g.items():
        metrics[f"ddp/{pillar}/max_weight_diff"] = stat([r["max_weight_diff"]])
        for k, v in r["metrics"].items():
            metrics[f"ddp/{pillar}/{k}_abs_diff"] = stat([v["abs_diff"]])
            baselines[f"ddp/{pillar}/{k}_one_process"] = stat([v["one"]])
    result = {"catalog_ids": ["X1", "X5"], "command": f"python benchmarks/reliability.py --trials {args.trials} --fuzz {args.fuzz}"
              + (" --skip-ddp" if args.skip_ddp else ""),
              "dataset": "digits, toy2d ring, arithmetic (tiny recipes in tests/pillar_recipes.py)",
              "seeds": list(range(args.trials)), "metrics": metrics, "baselines": baselines,
              "wall_clock_s": round(time.time() - t0, 1), "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "notes": "CPU, one thread per process. Fault trials: SIGKILL 0-0.4 s after the first checkpoint, then "
                       "--resume; identical = bitwise-equal export and equal val/test metrics. Fuzz: crashed counts "
                       "anything but a PotstillError with a message (target 0). torchrun: 2 gloo processes vs 1, same "
                       "global batch; the processes draw different noise/real batches, so agreement is in expectation."}
    write_result(Path(args.results) / "reliability.json", result)
    lines = ["| pillar | fault runs | resumed identical | killed at steps | torchrun max weight diff | torchrun metric diffs |",
             "|---|---|---|---|---|---|"]
    for pillar, trials in f.items():
        dd = g.get(pillar, {})
        md = ", ".join(f"{k} {v['one']:.4g} vs {v['two']:.4g}" for k, v in dd.get("metrics", {}).items()) or "–"
        lines.append(f"| {pillar} | {len(trials)} | {sum(t['identical'] for t in trials)} | "
                     f"{', '.join(str(t['killed_at']) for t in trials)} | "
                     f"{dd.get('max_weight_diff', float('nan')):.3g} | {md} |")
    lines += ["", "| loader | mutated inputs | rejected cleanly | loaded (harmless) | crashed |", "|---|---|---|---|---|"]
    for name, c in z.items():
        lines.append(f"| {name} | {c['tried']} | {c['rejected_cleanly']} | {c['loaded']} | {c['crashed']} |")
        if c["crash_examples"]:
            lines.append(f"| | crash examples: {'; '.join(c['crash_examples'])} | | | |")
    write_markdown(Path(args.results) / "reliability.md", result, "Reliability: faults, bad input, torchrun",
                   "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
