"""Dataset-distillation benchmark on Fashion-MNIST: coresets, DC, DSA, DM, DataDAM at IPC 1/10/50.

Every synthetic set is judged by the dd-v1 protocol (potstill/eval/synthetic_set.py): a fresh
ConvNet-3 (width 128, instance norm, avg-pool, 32x32 feature map) trained on the set alone with
DSA, SGD lr 0.01 momentum 0.9 wd 5e-4, lr x0.1 at half; K evaluation seeds; mean +- std of test
accuracy on the official 10k test images. The number of evaluation epochs is chosen once, on the
*validation* split (5,000 images carved from the training set), with a random IPC-10 subset
(cell ``select``), then frozen for every cell.

Distillation runs are the recipes in ``recipes/dd/fmnist_ipc<N>/<method>.yaml`` (the papers'
full budgets). On a small CPU machine, ``--budget cpu`` (the default) shortens them to fit:
the steps in CPU_STEPS and ``batch_real=64`` for DM (the paper: 256). ``--budget full`` runs the
recipes unchanged (the command for a GPU). Every change is written into the result's notes.

Resumable cell by cell (``select``, then method x IPC): each distillation is a run folder under
``--runs`` continued with ``--resume`` if it was killed; finished cells are appended to
``<name>.cells.jsonl`` and the JSON/Markdown tables are rewritten after every cell.

    python benchmarks/dd_fmnist.py                         # CPU budget, IPC 10, then 1, then 50
    python benchmarks/dd_fmnist.py --ipcs 10 --methods random dm datadam
    python benchmarks/dd_fmnist.py --budget full --runs /scratch/dd   # the papers' budgets (GPU)
    python benchmarks/dd_fmnist.py --budget full --time-limit 300 --tag gpu --jobs 12 --threads 1

``--time-limit S`` stops each distillation after S seconds of wall-clock (``trainer.time_limit_s``;
the steps reached are recorded); ``--tag`` keeps such cells apart from the CPU-budget ones
(``dm/ipc10@gpu``); ``--jobs N`` runs N cells at once (one process each, e.g. on one GPU).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import add_output_args, append_cell, dd_cell_metrics, open_cells, run_recipe  # noqa: E402
from potstill.report.results import stat, write_markdown, write_result  # noqa: E402

METHODS = ["random", "herding", "kcenter", "dm", "datadam", "dsa", "dc"]
CATALOG = {"random": "B3", "herding": "B3", "kcenter": "B3", "dc": "B4", "dsa": "B4", "dm": "B5", "datadam": "D2"}
#: published ConvNet-3 Fashion-MNIST test accuracy (DC / DSA / DM papers), IPC 1 / 10 / 50
PUBLISHED = {"random": (51.4, 73.8, 82.5), "herding": (67.0, 71.1, 71.9), "dc": (70.5, 82.3, 83.6),
             "dsa": (70.6, 84.6, 88.7), "dm": (70.7, 83.5, 88.1)}
FULL_DATA = 93.5
#: distillation steps that fit a 2-core CPU (the recipes hold the papers' budgets)
CPU_STEPS = {("dm", 1): 600, ("dm", 10): 1200, ("dm", 50): 800,
             ("datadam", 1): 400, ("datadam", 10): 700, ("datadam", 50): 500,
             ("dc", 1): 100, ("dc", 10): 100, ("dc", 50): 100,
             ("dsa", 1): 100, ("dsa", 10): 100, ("dsa", 50): 100}
CPU_OVERRIDES = {"dm": ["method.batch_real=64"]}
#: evaluation-epoch candidates, chosen on validation. The CPU tables were made with 150/300/600 (600
#: won); 1000 (the DM code's) scores higher still, 76.22 vs 75.70 (dd_reeval.py --select), so a fresh
#: results file now considers it; pass --epochs 600 to keep a CPU run affordable and comparable.
SELECT_EPOCHS = [150, 300, 600, 1000]


def cell_overrides(method: str, ipc: int, budget: str, epochs: int, seeds: int, threads: int,
                   time_limit: float = 0) -> list[str]:
    ov = [f"eval.epochs={epochs}", f"eval.seeds={seeds}", "trainer.progress=false", f"trainer.threads={threads}",
          f"eval.threads={threads}"]
    if budget == "cpu" and (method, ipc) in CPU_STEPS:
        ov += [f"trainer.steps={CPU_STEPS[(method, ipc)]}"] + CPU_OVERRIDES.get(method, [])
    if time_limit and (method, ipc) in CPU_STEPS:
        ov.append(f"trainer.time_limit_s={time_limit:g}")
    return ov


def cell_key(method: str, ipc: int, tag: str) -> str:
    """``dm/ipc10``; distillation cells run under a tag (another budget or machine) get ``@tag``."""
    distilled = any(m == method for m, _ in CPU_STEPS)
    return f"{method}/ipc{ipc}" + (f"@{tag}" if tag and distilled else "")


def select_epochs(args) -> dict:
    """Choose the evaluation epochs on the validation split with a random IPC-10 subset."""
    import torch

    from potstill.core.run import resolve
    from potstill.core.run import build
    from potstill.eval.synthetic_set import select_protocol

    torch.set_num_threads(args.threads)
    cfg = resolve(ROOT / "recipes/dd/fmnist_ipc10/random.yaml", ["method.seed=100"])
    method, bundle = build(cfg)
    t0 = time.time()
    chosen, table = select_protocol(method.export(), bundle, cfg.eval, SELECT_EPOCHS, [cfg.eval.lr], seeds=2)
    return {"cell": "select", "epochs": chosen.epochs, "lr": chosen.lr, "table": table,
            "wall_clock_s": round(time.time() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ipcs", type=int, nargs="+", default=[10, 1, 50])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--seeds", type=int, default=3, help="evaluation seeds per synthetic set")
    ap.add_argument("--budget", choices=["cpu", "full"], default="cpu")
    ap.add_argument("--epochs", type=int, default=0, help="evaluation epochs (0: choose on validation, cell 'select')")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per cell")
    ap.add_argument("--time-limit", type=float, default=0, help="seconds of distillation per cell (0: none)")
    ap.add_argument("--tag", default="", help="suffix of distillation cell keys, e.g. gpu (dm/ipc10@gpu)")
    ap.add_argument("--jobs", type=int, default=1, help="cells run at once")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra recipe overrides for the distillation cells (give them a --tag)")
    add_output_args(ap, "dd_fmnist", str(ROOT / "benchmarks/runs/dd_fmnist"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the result files from the cells, run nothing")
    args = ap.parse_args(argv)
    if (args.set or args.time_limit or args.budget != "cpu") and not args.tag:
        ap.error("--set, --time-limit and --budget full change the distillation: give the cells a --tag "
                 "so they are kept apart from the CPU-budget cells")

    runs = Path(args.runs)
    results, cells_path, done = open_cells(args.results, args.name)

    def append(rec):
        append_cell(cells_path, done, rec)
        report(args, done)

    if args.report_only:
        report(args, done)
        return 0
    if args.epochs:
        epochs = args.epochs
    else:
        if "select" not in done:
            print("[select] choosing evaluation epochs on the validation split ...", flush=True)
            append(select_epochs(args))
        epochs = done["select"]["epochs"]
    print(f"evaluation epochs: {epochs}", flush=True)

    todo = [(m, ipc) for ipc in args.ipcs for m in args.methods if cell_key(m, ipc, args.tag) not in done]
    lock = threading.Lock()

    def one(m: str, ipc: int) -> None:
        key = cell_key(m, ipc, args.tag)
        recipe = ROOT / f"recipes/dd/fmnist_ipc{ipc}/{m}.yaml"
        overrides = cell_overrides(m, ipc, args.budget, epochs, args.seeds, args.threads, args.time_limit)
        if (m, ipc) in CPU_STEPS:
            overrides += args.set
        print(f"[{key}] {' '.join(overrides)}", flush=True)
        t0 = time.time()
        s = run_recipe(recipe, overrides, runs / key.replace("/", "_").replace("@", "_"))
        grid = Path(s["export"]).parent / "synthetic.png"
        (results / args.name).mkdir(exist_ok=True)
        shutil.copyfile(grid, results / args.name / f"{key.replace('/', '_').replace('@', '_')}.png")
        ev = s["eval"]
        rec = {"cell": key, "method": m, "ipc": ipc, "tag": args.tag if "@" in key else "", "budget": args.budget,
               "overrides": overrides, "steps": s["steps"], "stopped": s.get("stopped"),
               "distill_s": s["wall_clock_s"], "s_per_step": round(s["wall_clock_s"] / max(1, s["steps"]), 3),
               "peak_rss_mib": s.get("peak_rss_mib"), "peak_cuda_mib": s.get("peak_cuda_mib"),
               "test_acc": ev["test_acc"]["values"], "val_acc": ev["val_acc"]["values"], "eval_s": ev["wall_clock_s"],
               "eval_images_per_s": ev["eval_images_per_s"], "label_bytes": s.get("label_bytes"),
               "soft_labels": bool(s.get("soft_labels")),
               "machine": s.get("machine"), "cell_wall_s": round(time.time() - t0, 1)}
        with lock:
            append(rec)
        print(f"[{key}] test {stat(ev['test_acc']['values'])['mean']:.2f}  "
              f"({s['wall_clock_s']:.0f} s distill, {ev['wall_clock_s']:.0f} s eval)", flush=True)

    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(one, m, ipc): cell_key(m, ipc, args.tag) for m, ipc in todo}
        for f in concurrent.futures.as_completed(futures):
            if f.exception() is not None:  # a failed cell does not stop the others; rerun to retry it
                failed.append(futures[f])
                print(f"[{futures[f]}] FAILED: {f.exception()}", flush=True)
    report(args, done)
    if failed:
        print("failed cells (rerun the same command to retry): " + ", ".join(failed), flush=True)
        return 1
    return 0


def row_name(c: dict) -> str:
    return c["method"] + (f" @{c['tag']}" if c.get("tag") else "")


def chosen_cells(cells: list[dict]) -> dict:
    """Per (method, IPC) the cell with the highest validation accuracy over all tags - the row a user
    would ship, picked without the test split."""
    best = {}
    for c in cells:
        k = (c["method"], c["ipc"])
        if k not in best or stat(c["val_acc"])["mean"] > stat(best[k]["val_acc"])["mean"]:
            best[k] = c
    return best


def target_lines(cells: list[dict]) -> list[str]:
    """The issue's targets, judged on the validation-chosen cell of each method and IPC: DM and DataDAM
    within 1 point of (or above) the published DM accuracy at IPC 10 and 50, and DataDAM >= DM."""
    best = chosen_cells(cells)
    out = ["## Targets (each method's cell chosen on validation over all its tags)", ""]
    for m in ("dm", "datadam"):
        for i in (10, 50):
            c = best.get((m, i))
            if c is None:
                continue
            goal, test = PUBLISHED["dm"][(1, 10, 50).index(i)] - 1, stat(c["test_acc"])["mean"]
            out.append(f"- {row_name(c)} IPC {i}: test {test:.2f} (val {stat(c['val_acc'])['mean']:.2f}) vs "
                       f"published DM {goal + 1} - 1 = {goal:.1f}: {'met' if test >= goal else f'NOT met ({goal - test:.2f} short)'}.")
    for i in (1, 10, 50):
        a, b = best.get(("datadam", i)), best.get(("dm", i))
        if a and b:
            ta, tb = stat(a["test_acc"])["mean"], stat(b["test_acc"])["mean"]
            out.append(f"- DataDAM >= DM, IPC {i}: {row_name(a)} {ta:.2f} vs {row_name(b)} {tb:.2f} "
                       f"({ta - tb:+.2f}; val {stat(a['val_acc'])['mean']:.2f} vs {stat(b['val_acc'])['mean']:.2f}): "
                       f"{'met' if ta >= tb else 'NOT met'}"
                       + (" (inside the seed spread)" if abs(ta - tb) <= max(stat(a["test_acc"])["std"],
                                                                           stat(b["test_acc"])["std"]) else "") + ".")
    return out


def report(args, done: dict) -> None:
    cells = [v for k, v in done.items() if k != "select"]
    if not cells:
        return
    metrics, baselines = dd_cell_metrics(cells), {}
    for m, accs in PUBLISHED.items():
        for ipc, a in zip((1, 10, 50), accs):
            baselines[f"published/{m}/ipc{ipc}/test_acc"] = {"mean": a, "std": 0.0, "n": 1}
    baselines["published/full_data/test_acc"] = {"mean": FULL_DATA, "std": 0.0, "n": 1}
    sel = done.get("select")
    epochs = sel["epochs"] if sel else args.epochs
    machines = sorted({c.get("machine") or "?" for c in cells})
    budget_txt = ("Untagged cells: CPU budget, distillation shortened to " + ", ".join(
        f"{m} IPC{i}: {n} steps" for (m, i), n in CPU_STEPS.items()) + "; DM batch_real 64 (paper 256); DC/DSA "
        "steps are outer iterations (the paper runs 1000 x outer_loop). Tagged cells (@gpu): the recipes' full "
        "budgets cut by a wall-clock limit (trainer.time_limit_s), steps reached in the cost table; their "
        "overrides are in the cells file. The @gpu cells ran as 13 processes sharing one H100 (with a diffusion "
        "training beside them), so their steps reached and s/step reflect that contention, not the GPU's speed. "
        "Other tags (@lr5, @p1, ...) are CPU-budget cells with the recipe changes in their overrides, chosen "
        "between on the validation split; @s2400 / @s1200 are the CPU budget with twice (DM) or 1.7x (DataDAM) "
        "the steps, every checkpoint kept (validation curve: benchmarks/dd_steps_curve.py). Tags ending in 'bsiam' "
        "or 'bs' ran with one DSA transform per class batch (method.siamese=batch, now the default): @s1200bs is "
        "DataDAM at DM's 1,200 steps, @s1600bsiam DM IPC 50 continued from the @bsiam run's 800-step checkpoint "
        "to 1,600 and @s2400bsiam from there to 2,400, @s800bs / @s1600bs / @s2400bs DataDAM IPC 50 at 800 / 1,600 / "
        "2,400 steps (continued from the 500-step CPU run), @s2000bs / @s2000bsiam DataDAM / DM IPC 10 continued from "
        "their 1,200-step runs to 2,000. A continuation is the previous run folder copied to the new tag's name, its "
        "overrides.json given the new trainer.steps, and the same command with --tag <new> --set ... "
        "trainer.steps=<n> (the run resumes from the last checkpoint); distill_s counts every part.")
    result = {
        "catalog_ids": sorted({CATALOG[c["method"]] for c in cells}),
        "command": "python benchmarks/dd_fmnist.py  (CPU budget); python benchmarks/dd_fmnist.py --budget full "
                   "--time-limit 300 --tag gpu --jobs 13 --threads 1 --ipcs 50 10 1  (GPU cells)",
        "dataset": "fmnist: 55k train (distillation source), 5k val (protocol choice), 10k official test",
        "seeds": list(range(args.seeds)),
        "metrics": metrics, "baselines": baselines,
        "wall_clock_s": round(sum(c["cell_wall_s"] for c in cells) + (sel or {}).get("wall_clock_s", 0), 1),
        "machine": " | ".join(machines), "date": time.strftime("%Y-%m-%d"),
        "notes": (f"Protocol dd-v1: ConvNet-3 w128 instance norm, first conv padding 3 (32x32 maps, as the DC code), "
                  f"DSA, SGD 0.01 m0.9 wd5e-4, lr x0.1 at half, {epochs} epochs chosen on the validation split "
                  f"(random IPC10 subset, candidates {[t['epochs'] for t in sel['table']] if sel else SELECT_EPOCHS}), evaluation seeds 0..{args.seeds - 1}, "
                  f"test accuracy read once at the end. Herding/k-center on pixel features. {budget_txt}"),
    }
    write_result(Path(args.results) / f"{args.name}.json", result)
    ipcs = sorted({c["ipc"] for c in cells})
    lines = ["## Test accuracy (%), ConvNet-3, mean ± std over evaluation seeds (published in brackets)", "",
             "| method | " + " | ".join(f"IPC {i}" for i in ipcs) + " |", "|---|" + "---|" * len(ipcs)]
    tags = [""] + sorted({c.get("tag", "") for c in cells} - {""})
    for m in METHODS:
        for tag in tags:
            row, any_cell = [], False
            for i in ipcs:
                c = done.get(f"{m}/ipc{i}" + (f"@{tag}" if tag else ""))
                any_cell |= c is not None
                pub = PUBLISHED.get(m, (None,) * 3)[(1, 10, 50).index(i)] if i in (1, 10, 50) else None
                txt = f"{stat(c['test_acc'])['mean']:.2f} ± {stat(c['test_acc'])['std']:.2f}" if c else "–"
                row.append(txt + (f" ({pub})" if pub is not None else ""))
            if any_cell:
                lines.append(f"| {m}{f' @{tag}' if tag else ''} | " + " | ".join(row) + " |")
    lines += ["", f"Full training set (published): {FULL_DATA}.", ""] + target_lines(cells) + ["",
              "## Cost per cell", "",
              "| cell | machine | steps | distill s | s/step | peak RSS MiB | eval s (all seeds) | eval img/s | val acc |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        where = "GPU" if "cuda" in (c.get("machine") or "") or "NVIDIA" in (c.get("machine") or "") else "CPU"
        lines.append(f"| {row_name(c)} IPC{c['ipc']} | {where} | {c['steps']} | {c['distill_s']:.0f} | {c['s_per_step']} | "
                     f"{c['peak_rss_mib']} | {c['eval_s']:.0f} | {c['eval_images_per_s']:.0f} | "
                     f"{stat(c['val_acc'])['mean']:.2f} |")
    lines += ["", "Machines: " + "; ".join(machines) + "."]
    if sel:
        lines += ["", "## Evaluation epochs chosen on validation (random IPC-10 subset, 2 seeds)", "",
                  "| epochs | val acc | s |", "|---|---|---|"]
        lines += [f"| {t['epochs']} | {t['val_acc']:.2f} | {t['wall_clock_s']:.0f} |" for t in sel["table"]]
    lines += ["", "Synthetic sets (rows = classes): " + ", ".join(
        f"[{row_name(c)} IPC{c['ipc']}]({args.name}/{c['cell'].replace('/', '_').replace('@', '_')}.png)"
        for c in cells)]
    write_markdown(Path(args.results) / f"{args.name}.md", result,
                   "Dataset distillation on Fashion-MNIST (ConvNet-3, protocol dd-v1)", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
