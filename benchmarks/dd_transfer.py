"""Self-supervised dataset distillation for transfer: KRR-ST (D9, arXiv 2310.06511) on a CPU.

A pre-training set of N images (default 100) with regression targets is distilled from the
*unlabelled* source data (Fashion-MNIST) and judged by the transfer protocol ``transfer-v1``
(``potstill/eval/transfer.py``): pre-train a fresh ConvNet-3 (width 32; 64 on digits) on the set by MSE regression
(300 epochs, DSA), then on each target task either fine-tune every weight or fit a linear probe
on the frozen features; epochs / lr / L2 weight are chosen on the target task's *validation* split
(2 seeds), then ``--seeds`` networks are trained and the test split is read once at the end.

Rows (each a set of the same N images, or none):

* ``krr_st`` - recipes/dd/<source>/krr_st.yaml, learned images and targets;
* ``random`` - the same recipe with ``trainer.steps=0``: KRR-ST's starting point, N random real
  images (class-balanced draw) with the teacher's targets t(x);
* ``kmeans`` - ``method.init=kmeans``, ``trainer.steps=0``: the real images nearest to N k-means
  centroids of the teacher's representations, with the teacher's targets;
* ``none`` - no pre-training (the fresh random network);
* ``ssl teacher (reference)`` - the Barlow Twins teacher itself, trained on all the source images
  (a bigger budget than N images; a ceiling, not a competitor).

Target tasks (``--targets``; labelled training rows capped at ``--target-labels`` per task):
``digits28`` = scikit-learn digits upsampled to 28x28 (bilinear) and normalised like fmnist
(cross-domain), ``fmnist`` = Fashion-MNIST classification with few labels (in-domain; the source
set never used labels; test = the official 10k). For ``--source digits`` (tests, minutes):
target ``digits`` (8x8).

Cells, appended to ``<name>.cells.jsonl`` as they finish (rerun the same command to continue;
run folders under ``--runs`` resume): ``teacher`` (recipes/dd/ssl_teacher_<source>.yaml, Barlow
Twins, no labels), ``set/<row>`` (the recipe runs; their dd-v1 by-product is cut to 1 epoch and
ignored) and ``transfer/<row>`` (every target task, the same pre-trained backbones).

    python benchmarks/dd_transfer.py                         # fmnist -> digits28 + fmnist, ~40 CPU-minutes
    python benchmarks/dd_transfer.py --source digits         # digits -> digits, a few minutes
    python benchmarks/dd_transfer.py --source digits --steps 5 --pretrain-epochs 2 --finetune-epochs 1 \\
        --results /tmp/ddt --runs /tmp/ddt/runs              # smoke test
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import add_output_args, append_cell, open_cells, run_recipe  # noqa: E402
from potstill.report.results import stat, write_markdown, write_result  # noqa: E402

SOURCES = {
    "fmnist": {"recipe": "recipes/dd/fmnist_ipc10/krr_st.yaml", "teacher": "recipes/dd/ssl_teacher_fmnist.yaml",
               "targets": ["digits28", "fmnist"], "first_padding": 3, "width": 32,
               "text": "fmnist: 55k training images without labels (distillation source), 5k held out"},
    "digits": {"recipe": "recipes/dd/digits/krr_st.yaml", "teacher": "recipes/dd/ssl_teacher_digits.yaml",
               "targets": ["digits"], "first_padding": 1, "width": 64,
               "text": "scikit-learn digits 8x8: 1257 training images without labels (distillation source)"},
}
TARGETS = {
    "digits28": "scikit-learn digits upsampled to 28x28 (bilinear), fmnist normalisation; 180 val, 360 test",
    "fmnist": "Fashion-MNIST with few labels; 1000 val carved from the training images, official 10k test",
    "digits": "scikit-learn digits 8x8; 180 val, 360 test",
}
SET_ROWS = {"krr_st": [], "random": ["method.init=real", "trainer.steps=0"],
            "kmeans": ["method.init=kmeans", "trainer.steps=0"]}
ROWS = ["krr_st", "random", "kmeans", "none", "teacher"]
LABELS = {"krr_st": "KRR-ST", "random": "random real subset + teacher targets",
          "kmeans": "k-means subset + teacher targets", "none": "no pre-training",
          "teacher": "ssl teacher (reference, all source images)"}


def target_task(name: str, labels: int):
    import potstill
    from potstill.data.fmnist import MEAN, STD
    from potstill.eval.transfer import resize_task

    if name == "digits28":
        return resize_task(potstill.load_dataset({"name": "digits", "train_size": labels}), 28, MEAN, STD, "digits28")
    if name == "digits":
        return potstill.load_dataset({"name": "digits", "train_size": labels})
    return potstill.load_dataset({"name": "fmnist", "val_size": 1000, "train_size": labels})


def transfer_config(args):
    from potstill.eval.transfer import TransferConfig, _default_model

    model = {**_default_model(), "first_padding": SOURCES[args.source]["first_padding"],
             "width": SOURCES[args.source]["width"]}
    return TransferConfig(model=model, pretrain_epochs=args.pretrain_epochs, finetune_epochs=args.finetune_epochs,
                          seeds=args.seeds, threads=args.threads)


def transfer_cell(args, row: str, source, in_shape, tasks: dict) -> dict:
    from dataclasses import asdict

    from potstill.core.run import machine
    from potstill.eval.transfer import evaluate_transfer, initial_backbones

    cfg = transfer_config(args)
    t0 = time.time()
    pretrained = initial_backbones(source, in_shape, cfg, progress=True)
    rec = {"cell": f"transfer/{row}", "row": row, "settings": asdict(cfg), "pretrain": pretrained[1], "targets": {}}
    for name, task in tasks.items():
        r = evaluate_transfer(source, task, cfg, pretrained=pretrained, progress=True)
        rec["targets"][name] = {m: {k: r[m][k] for k in ("chosen", "table", "val_acc", "test_acc")} for m in cfg.modes}
        rec["targets"][name]["task_rows"] = r["task_rows"]
    rec.update({"wall_s": round(time.time() - t0, 1), "machine": machine()})
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", choices=sorted(SOURCES), default="fmnist")
    ap.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=None,
                    help="default: digits28 fmnist (source fmnist), digits (source digits)")
    ap.add_argument("--target-labels", type=int, default=100, help="labelled training rows of every target task")
    ap.add_argument("--rows", nargs="+", choices=ROWS, default=ROWS)
    ap.add_argument("--seeds", type=int, default=3, help="transfer seeds (>= 3 for the record)")
    ap.add_argument("--pretrain-epochs", type=int, default=300)
    ap.add_argument("--finetune-epochs", type=int, nargs="+", default=[15, 40], help="candidates (chosen on val)")
    ap.add_argument("--steps", type=int, default=0, help="smoke test: teacher and KRR-ST training N steps")
    ap.add_argument("--threads", type=int, default=2)
    add_output_args(ap, "", "")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    src = SOURCES[args.source]
    args.targets = args.targets or src["targets"]
    args.name = args.name or f"dd_transfer_{args.source}"
    runs = Path(args.runs or ROOT / f"benchmarks/runs/{args.name}")
    results, cells_path, done = open_cells(args.results, args.name)
    if args.report_only:
        report(args, done)
        return 0

    import torch

    torch.set_num_threads(args.threads)
    neutral = ["trainer.progress=false", f"trainer.threads={args.threads}"]
    if "teacher" not in done:
        recipe = ROOT / src["teacher"]
        ov = neutral + ([f"trainer.steps={args.steps}", "trainer.eval_every=0"] if args.steps else [])
        print(f"[teacher] {recipe.relative_to(ROOT)} {' '.join(ov)}", flush=True)
        t0 = time.time()
        s = run_recipe(recipe, ov, runs / "teacher")
        append_cell(cells_path, done, {"cell": "teacher", "export": s["export"], "steps": s["steps"],
                                       "val_knn_acc": s["val"].get("acc"), "test_knn_acc": s["test"].get("acc"),
                                       "overrides": ov, "wall_s": round(time.time() - t0, 1)})
    ckpt = done["teacher"]["export"]

    failed = []
    for row in [r for r in args.rows if r in SET_ROWS]:
        key = f"set/{row}"
        if key in done:
            continue
        recipe = ROOT / src["recipe"]
        ov = SET_ROWS[row] + [f"teacher.checkpoint={ckpt}", "eval.epochs=1", "eval.seeds=1"] + neutral \
            + [f"eval.threads={args.threads}"]
        if args.steps and row == "krr_st":
            ov += [f"trainer.steps={args.steps}", f"method.pool_reset={max(2, args.steps)}"]
        print(f"[{key}] {recipe.relative_to(ROOT)} {' '.join(ov)}", flush=True)
        t0 = time.time()
        try:
            s = run_recipe(recipe, ov, runs / key.replace("/", "_"))
        except (SystemExit, Exception) as e:   # one failed cell does not stop the others; rerun to retry
            failed.append(key)
            print(f"[{key}] FAILED: {e}", flush=True)
            continue
        meta = json.loads(Path(s["export"]).with_suffix(".json").read_text())
        grid = Path(s["export"]).parent / "synthetic.png"
        if grid.is_file():
            (results / args.name).mkdir(exist_ok=True)
            shutil.copyfile(grid, results / args.name / f"{row}.png")
        append_cell(cells_path, done, {"cell": key, "row": row, "export": s["export"], "steps": s["steps"],
                                       "recipe": src["recipe"], "overrides": ov, "distill_s": s["wall_clock_s"],
                                       "images": meta["images_shape"][0], "target_dim": meta["targets_shape"][1],
                                       "label_bytes": meta["label_bytes"], "peak_rss_mib": s.get("peak_rss_mib"),
                                       "machine": s.get("machine"), "cell_wall_s": round(time.time() - t0, 1)})

    tasks = {t: target_task(t, args.target_labels) for t in args.targets}
    in_shape = tuple(next(iter(tasks.values())).in_shape)
    for row in args.rows:
        key = f"transfer/{row}"
        if key in done:
            continue
        if row in SET_ROWS:
            if f"set/{row}" not in done:
                continue
            from potstill.data.synthetic_set import SyntheticSet

            source = SyntheticSet.load(done[f"set/{row}"]["export"])
        elif row == "teacher":
            from potstill.core.run import load_model

            source = load_model(Path(ckpt).parent)
        else:
            source = None
        print(f"[{key}] targets {', '.join(tasks)}", flush=True)
        try:
            rec = transfer_cell(args, row, source, in_shape, tasks)
        except Exception as e:  # noqa: BLE001
            failed.append(key)
            print(f"[{key}] FAILED: {type(e).__name__}: {e}", flush=True)
            continue
        append_cell(cells_path, done, rec)
        report(args, done)
        print(f"[{key}] " + "  ".join(f"{t}/{m} {v[m]['test_acc']['mean']:.2f}" for t, v in rec["targets"].items()
                                      for m in ("finetune", "linear") if m in v), flush=True)
    report(args, done)
    if failed:
        print("failed cells (rerun the same command to retry): " + ", ".join(failed), flush=True)
        return 1
    return 0


def _acc(per: dict, mode: str, split: str = "test_acc") -> str:
    if mode not in per:
        return "-"
    s = stat(per[mode][split]["values"])
    return f"{s['mean']:.2f} ± {s['std']:.2f}"


def report(args, done: dict) -> None:
    cells = [v for k, v in done.items() if k.startswith("transfer/")]
    if not cells:
        return
    sets = {k[len("set/"):]: v for k, v in done.items() if k.startswith("set/")}
    teacher = done.get("teacher", {})
    metrics, baselines = {}, {}
    for c in cells:
        target = metrics if c["row"] == "krr_st" else baselines
        for t, per in c["targets"].items():
            for m in ("finetune", "linear"):
                if m in per:
                    target[f"{c['row']}/{t}/{m}/test_acc"] = stat(per[m]["test_acc"]["values"])
                    target[f"{c['row']}/{t}/{m}/val_acc"] = stat(per[m]["val_acc"]["values"])
        target[f"{c['row']}/transfer_s"] = stat([c["wall_s"]])
        if c["row"] in sets:
            target[f"{c['row']}/label_bytes"] = stat([sets[c["row"]]["label_bytes"]])
            target[f"{c['row']}/distill_s"] = stat([sets[c["row"]]["distill_s"]])
    machines = sorted({c.get("machine") or "?" for c in cells})
    settings = cells[0]["settings"]
    smoke = f" SMOKE TEST: teacher and KRR-ST shortened to {args.steps} steps - not a result." if args.steps else ""
    n_images = next((s["images"] for s in sets.values()), "?")
    result = {
        "catalog_ids": ["D9"],
        "command": f"python benchmarks/dd_transfer.py --source {args.source} --targets {' '.join(args.targets)} "
                   f"--target-labels {args.target_labels} --seeds {args.seeds} --pretrain-epochs {args.pretrain_epochs}"
                   + (f" --steps {args.steps}" if args.steps else ""),
        "dataset": SOURCES[args.source]["text"] + "; targets: " + "; ".join(f"{t}: {TARGETS[t]}, {args.target_labels} "
                                                                          "labelled training rows" for t in args.targets),
        "seeds": list(range(args.seeds)),
        "metrics": metrics, "baselines": baselines,
        "wall_clock_s": round(sum(c["wall_s"] for c in cells) + sum(s.get("cell_wall_s", 0) for s in sets.values())
                              + teacher.get("wall_s", 0), 1),
        "machine": " | ".join(machines), "date": time.strftime("%Y-%m-%d"),
        "notes": (f"Protocol transfer-v1 (potstill/eval/transfer.py): pre-train a fresh {settings['model'].get('name')} "
                  f"(width {settings['model'].get('width')}) on the {n_images} images by MSE to their targets, "
                  f"{settings['pretrain_epochs']} epochs, SGD lr {settings['pretrain_lr']}, DSA; then per target "
                  f"task fine-tune (epochs x lr from {settings['finetune_epochs']} x {settings['finetune_lrs']}) or "
                  f"linear probe (L2 from {settings['linear_wds']}), chosen on the target's validation split with "
                  f"{settings['select_seeds']} seeds; test read once at the end; {args.seeds} seeds. Teacher: Barlow "
                  f"Twins, {SOURCES[args.source]['teacher']} (val k-NN acc {teacher.get('val_knn_acc')}). "
                  "random / kmeans rows: the KRR-ST recipe with 0 steps (its start: class-balanced random real "
                  "images; or nearest images to k-means centroids in teacher space), targets t(x). The teacher row "
                  "saw every source image (reference). Label bytes = N x d x 4 (float32 targets)." + smoke),
    }
    write_result(Path(args.results) / f"{args.name}.json", result)
    lines = ["## Test accuracy (%) after transfer, mean ± std over seeds", "",
             "| row | target | fine-tune test | linear-probe test | fine-tune val | chosen (ft / probe) |",
             "|---|---|---|---|---|---|"]
    for c in sorted(cells, key=lambda c: ROWS.index(c["row"])):
        for t, per in c["targets"].items():
            chosen = " / ".join(",".join(f"{k}={v}" for k, v in per[m]["chosen"].items()) for m in ("finetune", "linear")
                                if m in per)
            lines.append(f"| {LABELS[c['row']]} | {t} | {_acc(per, 'finetune')} | {_acc(per, 'linear')} | "
                         f"{_acc(per, 'finetune', 'val_acc')} | {chosen} |")
    lines += ["", "## Sets and cost", "", "| row | images | target dim | label bytes | distill steps | distill s | "
              "transfer s |", "|---|---|---|---|---|---|---|"]
    for c in sorted(cells, key=lambda c: ROWS.index(c["row"])):
        s = sets.get(c["row"], {})
        lines.append(f"| {LABELS[c['row']]} | {s.get('images', '-')} | {s.get('target_dim', '-')} | "
                     f"{s.get('label_bytes', '-')} | {s.get('steps', '-')} | {s.get('distill_s', '-')} | {c['wall_s']} |")
    if teacher:
        lines += ["", f"Teacher: {teacher.get('steps')} Barlow Twins steps, k-NN accuracy val "
                      f"{teacher.get('val_knn_acc')} / test {teacher.get('test_knn_acc')}, {teacher.get('wall_s')} s."]
    lines += ["", "Machines: " + "; ".join(machines) + "."]
    write_markdown(Path(args.results) / f"{args.name}.md", result,
                   f"Self-supervised dataset distillation for transfer (KRR-ST) from {args.source}", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
