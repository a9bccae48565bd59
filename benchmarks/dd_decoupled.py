"""Decoupled dataset distillation (no unrolled training): SRe2L / CDA (D4), CV-DD (D3), INFER (D7), DQ (D5),
HeLlO (D1).

Same protocol and result schema as ``benchmarks/dd_fmnist.py``: every set is judged by dd-v1
(potstill/eval/synthetic_set.py; soft labels train with soft cross-entropy), ``--seeds`` evaluation
seeds (default 3), test accuracy read once at the end; the evaluation epochs are chosen once on
the *validation* split with a random IPC-10 subset (cell ``select``) unless ``--epochs`` is given.

Cells, each a run folder under ``--runs`` (resumed if killed), appended to ``<name>.cells.jsonl``
as it finishes (rerun the same command to continue):

* ``teacher`` - the batch-norm teacher of ``recipes/dd/teacher_bn_<dataset>.yaml`` (squeeze);
  its checkpoint is passed to every recipe with a ``teacher`` section, except HeLlO's;
* ``teacher_dsa`` (when HeLlO runs) - the same network trained on the protocol's DSA views,
  ``recipes/dd/teacher_bn_dsa_<dataset>.yaml``: the teacher that labels augmented batches online, passed to
  every HeLlO cell (projector fit, teacher-online, static and prototype rows alike);
* ``<method>/ipc<N>`` - the recipes ``recipes/dd/<dataset>[_ipcN]/<method>.yaml``;
* for every soft-label method, the *random subset with the same soft labels*: random real images
  relabelled by the same teacher(s) the same way - the same recipe with ``method.init=real`` and
  zero recovery steps (SRe2L: the teacher's per-image soft labels, shared by CDA; CV-DD: the same
  committee's vote), INFER with ``method.compensate=false`` (``ipc`` real images per class with the
  same static averaged-logit labels);
* HeLlO, on the *same images* (same recipe and seeds, only the export differs): ``hello`` (labels
  generated online by the shipped low-rank projector; label bytes = the projector), ``hello+teacher_online``
  (the heavy reference: the teacher relabels every augmented batch online - label bytes = what storing
  those labels would cost, epochs x N x K float32, as counted by the protocol), ``hello+static`` (one stored
  teacher soft label per image, N x K float32) and ``hello+prototypes`` (the unfitted projector: zero
  fitting steps, B A = 0); ``hello+refine`` is HeLlO with its optional image refinement (the images move
  to lower the teacher-vs-projector KL on their views, so they differ from the other rows' images). The
  rotation-trained encoder is cached under ``<kept>/hello_encoder_cache``,
  CV-DD's committee and INFER's extra teachers under ``<kept>/member_cache`` (one training per member);
* ``random/ipc<N>`` - the hard-label random coreset (context);
* DQ (datasets with a ``dq`` recipe) at keep ratios 1% / 5% / 10% of every class, judged on the
  recipe's evaluation network (a ResNet; the selection used the ConvNet teacher's embedding), next
  to a uniform random subset at the same ratio under the same evaluation (``method.bins=1``).

Every row records label storage in bytes (soft: N x K float32; hard: one byte per image) and the
images stored. ``--steps N`` shortens every training (teacher, recovery) to N steps: a smoke test,
kept apart with ``--results`` / ``--runs`` elsewhere.

    python benchmarks/dd_decoupled.py                       # digits (default), minutes on a laptop
    python benchmarks/dd_decoupled.py --dataset fmnist --ipcs 10 50
    python benchmarks/dd_decoupled.py --steps 5 --epochs 5 --seeds 3 --results /tmp/ddd --runs /tmp/ddd/runs
"""
from __future__ import annotations

import argparse
import fnmatch
import itertools
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "benchmarks/assets"
sys.path.insert(0, str(ROOT))

from benchmarks.common import add_output_args, append_cell, open_cells, run_recipe  # noqa: E402
from potstill.report.results import stat, write_markdown, write_result  # noqa: E402

METHODS = ["random", "sre2l", "cda", "cvdd", "infer", "dq", "hello"]
CATALOG = {"sre2l": "D4", "cda": "D4", "cvdd": "D3", "infer": "D7", "dq": "D5", "random": "B3", "hello": "D1"}
#: the "random subset with the same soft labels" of each soft-label method (CDA shares SRe2L's teacher labels)
RELABELLED_RANDOM = {"sre2l": ["method.init=real"], "cvdd": ["method.init=real"], "infer": ["method.compensate=false", "trainer.optim={}"]}
#: variants of a method: its own images with other labels, or an ablation (cell tag, row, overrides, label
#: bytes: "summary" = the set's own, "if_stored" = the per-augmentation labels the protocol generated, as if
#: stored). CDA from real images with CV-DD's 200 steps separates CV-DD's committee from its initialisation.
VARIANTS = {"cda": [("realinit", "cda, real init, 200 steps (ablation)",
                     ["method.init=real", "trainer.steps=200", "method.curriculum_steps=200"], "summary")],
            "hello": [
    ("teacher_online", "hello images + teacher labels per augmentation (online)", ["method.labels=teacher"], "if_stored"),
    ("static", "hello images + static teacher labels", ["method.labels=static"], "summary"),
    ("prototypes", "hello, unfitted projector (prototypes only)", ["trainer.steps=0"], "summary"),
    ("refine", "hello, images refined against the projector", ["method.refine=true"], "summary")]}
#: methods whose teacher labels DSA views online: they read ``teacher_dsa`` (trained on those views)
DSA_TEACHER = {"hello"}
DQ_RATIOS = [0.01, 0.05, 0.1]
#: ``--dq-eval``: the unseen architecture DQ's selections are judged on. ``recipe`` = the recipe's ResNet;
#: ``mlp`` = a 2-layer MLP (256-256), for Fashion-MNIST on 2 CPU cores, where the ResNet's 600 epochs over
#: 550-5,500 images take hours per seed. Neither network built the selection (a batch-norm ConvNet did).
DQ_EVAL = {"recipe": "", "mlp": "{name: mlp, hidden: [256, 256]}"}
SELECT_EPOCHS = [150, 300, 600]
DATASETS = {"digits": "scikit-learn digits 8x8: 1257 train (distillation source), 180 val (protocol choice), 360 test",
            "fmnist": "fmnist: 55k train (distillation source), 5k val (protocol choice), 10k official test"}


def recipe_path(dataset: str, method: str, ipc: int) -> tuple[Path, list[str]]:
    """The recipe of (dataset, method, ipc) and the overrides it needs (digits has IPC-10 recipes only)."""
    if dataset == "digits":
        return ROOT / f"recipes/dd/digits/{method}.yaml", ([] if ipc == 10 or method == "dq" else [f"method.ipc={ipc}"])
    if method == "dq":                       # a selection at keep ratios, not at an IPC
        return ROOT / f"recipes/dd/dq_{dataset}.yaml", []
    return ROOT / f"recipes/dd/{dataset}_ipc{ipc}/{method}.yaml", []


def has_teacher(recipe: Path) -> bool:
    import yaml

    return bool((yaml.safe_load(recipe.read_text()) or {}).get("teacher"))


def common_overrides(args, epochs: int) -> list[str]:
    return [f"eval.epochs={epochs}", f"eval.seeds={args.seeds}", "trainer.progress=false",
            f"trainer.threads={args.threads}", f"eval.threads={args.threads}"]


def select_epochs(args) -> dict:
    import torch

    from potstill.core.run import build, resolve
    from potstill.eval.synthetic_set import select_protocol

    torch.set_num_threads(args.threads)
    recipe, extra = recipe_path(args.dataset, "random", 10)
    cfg = resolve(recipe, extra + ["method.seed=100"])
    method, bundle = build(cfg)
    t0 = time.time()
    chosen, table = select_protocol(method.export(), bundle, cfg.eval, SELECT_EPOCHS, [cfg.eval.lr], seeds=2)
    return {"cell": "select", "epochs": chosen.epochs, "lr": chosen.lr, "table": table,
            "wall_clock_s": round(time.time() - t0, 1)}


def plan(args) -> list[dict]:
    """Every cell: key, row name, method, recipe, overrides (without the teacher checkpoint)."""
    cells = []
    for ipc in args.ipcs:
        for m in args.methods:
            if m == "dq":
                continue
            recipe, extra = recipe_path(args.dataset, m, ipc)
            if not recipe.is_file():
                print(f"[skip] no recipe {recipe.relative_to(ROOT)}", flush=True)
                continue
            steps = [] if m == "random" else [f"trainer.steps={args.steps}"] * bool(args.steps)
            if m == "cda" and args.steps:
                steps.append(f"method.curriculum_steps={args.steps}")
            cells.append({"cell": f"{m}/ipc{ipc}", "row": m, "method": m, "ipc": ipc, "recipe": recipe,
                          "overrides": extra + steps})
            if m in RELABELLED_RANDOM:
                cells.append({"cell": f"random+{m}_labels/ipc{ipc}", "row": f"random + {m} labels", "method": m,
                              "ipc": ipc, "recipe": recipe,
                              "overrides": extra + RELABELLED_RANDOM[m] + ["trainer.steps=0"]})
            for tag, row, ov, account in VARIANTS.get(m, []):
                cells.append({"cell": f"{m}+{tag}/ipc{ipc}", "row": row, "method": m, "ipc": ipc, "recipe": recipe,
                              "overrides": extra + steps + ov, "label_bytes": account})
    if "dq" in args.methods:
        recipe, _ = recipe_path(args.dataset, "dq", 0)
        if recipe.is_file():
            net = DQ_EVAL[args.dq_eval]
            for r, d in itertools.product(DQ_RATIOS, range(args.dq_draws)):
                tag = f"r{round(100 * r)}" + (f"_{args.dq_eval}" if net else "") + ("_tdsa" if args.dq_teacher == "teacher_dsa" else "")
                tag += f"_d{d}" if d else ""     # draw d: the same bins, another sample from them (method.seed=d)
                ov = [f"method.ratio={r}"] + [f"eval.model={net}"] * bool(net) + [f"method.seed={d}"] * bool(d)
                cells.append({"cell": f"dq/{tag}", "row": "dq", "method": "dq", "ipc": 0, "ratio": r, "draw": d,
                              "recipe": recipe, "overrides": ov})
                cells.append({"cell": f"random_ratio/{tag}", "row": "random (same ratio)", "method": "dq", "ipc": 0,
                              "ratio": r, "draw": d, "recipe": recipe, "overrides": ov + ["method.bins=1"]})
        else:
            print(f"[skip] no DQ recipe for {args.dataset}", flush=True)
    return cells


def teacher_of(args, c: dict) -> str:
    """The teacher cell whose checkpoint a cell's recipe reads."""
    dsa = c["method"] in DSA_TEACHER or (c["method"] == "dq" and args.dq_teacher == "teacher_dsa")
    return "teacher_dsa" if dsa else "teacher"


def pending(args, done: dict) -> list[dict]:
    """The planned cells not finished yet (and matching ``--cells`` when given)."""
    return [c for c in plan(args) if c["cell"] not in done
            and (not args.cells or any(fnmatch.fnmatchcase(c["cell"], p) for p in args.cells))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    ap.add_argument("--ipcs", type=int, nargs="+", default=None, help="default: 10 (digits), 10 50 (fmnist)")
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--seeds", type=int, default=3, help="evaluation seeds per set (>= 3 for the record)")
    ap.add_argument("--epochs", type=int, default=0, help="evaluation epochs (0: choose on validation, cell 'select')")
    ap.add_argument("--steps", type=int, default=0, help="smoke test: every training (teacher, recovery) N steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cells", nargs="+", default=None, metavar="PATTERN",
                    help="run only the cells matching these shell patterns (e.g. 'hello+*'), so that two processes "
                         "can share the work; then --report-only rebuilds the result from the shared cells file")
    add_output_args(ap, "", "")
    ap.add_argument("--dq-eval", choices=sorted(DQ_EVAL), default="recipe",
                    help="the unseen network DQ's keep-ratio subsets are judged on (mlp: a CPU budget)")
    ap.add_argument("--dq-draws", type=int, default=1,
                    help="DQ and its random subset drawn this many times per ratio (method.seed 0..N-1); the target "
                         "line pools the draws")
    ap.add_argument("--dq-teacher", choices=["teacher", "teacher_dsa"], default="teacher",
                    help="whose embedding DQ's GraphCut bins use: the batch-norm teacher, or the same network trained "
                         "on DSA views (HeLlO's); either is a ConvNet, not the network that judges the subsets")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    args.ipcs = args.ipcs or ([10] if args.dataset == "digits" else [10, 50])
    args.name = args.name or f"dd_decoupled_{args.dataset}"
    runs = Path(args.runs or ROOT / f"benchmarks/runs/{args.name}")
    results, cells_path, done = open_cells(args.results, args.name)
    if args.report_only:
        report(args, done)
        return 0

    kept = kept_dir(args, runs)
    needs_dsa = bool(DSA_TEACHER & set(args.methods)) or ("dq" in args.methods and args.dq_teacher == "teacher_dsa")
    teachers = [("teacher", "teacher_bn")] + [("teacher_dsa", "teacher_bn_dsa")] * needs_dsa
    for cell, name in teachers:
        if cell in done and teacher_export(kept, done, cell):
            continue                      # (a recorded teacher whose weights are gone everywhere retrains)
        if cell in done and not any(has_teacher(c["recipe"]) and teacher_of(args, c) == cell for c in pending(args, done)):
            continue                      # ... but only when a cell still to run needs that teacher
        recipe = ROOT / f"recipes/dd/{name}_{args.dataset}.yaml"
        ov = ["trainer.progress=false", f"trainer.threads={args.threads}"]
        ov += [f"trainer.steps={args.steps}", "trainer.eval_every=0"] if args.steps else []
        print(f"[{cell}] {recipe.relative_to(ROOT)} {' '.join(ov)}", flush=True)
        t0 = time.time()
        s = run_recipe(recipe, ov, runs / cell)
        keep(kept, cell, Path(s["export"]))
        append_cell(cells_path, done, {"cell": cell, "export": s["export"], "steps": s["steps"],
                                       "val_acc": s["val"].get("acc"), "test_acc": s["test"].get("acc"),
                                       "overrides": ov, "wall_s": round(time.time() - t0, 1)})
    if args.epochs:
        epochs = args.epochs
    else:
        if "select" not in done:
            print("[select] choosing evaluation epochs on the validation split ...", flush=True)
            append_cell(cells_path, done, select_epochs(args))
        epochs = done["select"]["epochs"]
    print(f"evaluation epochs: {epochs}", flush=True)

    failed = []
    for c in pending(args, done):
        ov = c["overrides"] + common_overrides(args, epochs)
        if has_teacher(c["recipe"]):
            ov.append(f"teacher.checkpoint={teacher_export(kept, done, teacher_of(args, c))}")
        if c["method"] == "hello":
            ov.append(f"method.encoder.cache_dir={kept / 'hello_encoder_cache'}")
        if c["method"] in ("cvdd", "infer"):       # committee / extra teachers trained once, shared with the relabelled row
            ov.append(f"method.member_cache={kept / 'member_cache'}")
        print(f"[{c['cell']}] {c['recipe'].relative_to(ROOT)} {' '.join(ov)}", flush=True)
        t0 = time.time()
        try:
            s = run_recipe(c["recipe"], ov, runs / c["cell"].replace("/", "_").replace("+", "_"))
        except (SystemExit, Exception) as e:   # one failed cell does not stop the others; rerun to retry
            failed.append(c["cell"])
            print(f"[{c['cell']}] FAILED: {e}", flush=True)
            continue
        meta = json.loads((Path(s["export"]).with_suffix(".json")).read_text())
        grid = Path(s["export"]).parent / "synthetic.png"
        if grid.is_file():
            (results / args.name).mkdir(exist_ok=True)
            shutil.copyfile(grid, results / args.name / f"{c['cell'].replace('/', '_').replace('+', '_')}.png")
        ev = s["eval"]
        rec = {"cell": c["cell"], "row": c["row"], "method": c["method"], "ipc": c["ipc"], "ratio": c.get("ratio"),
               "draw": c.get("draw", 0),
               "recipe": str(c["recipe"].relative_to(ROOT)), "overrides": ov, "steps": s["steps"],
               "distill_s": s["wall_clock_s"], "peak_rss_mib": s.get("peak_rss_mib"),
               "test_acc": ev["test_acc"]["values"], "val_acc": ev["val_acc"]["values"], "eval_s": ev["wall_clock_s"],
               "eval_model": ev["settings"]["model"].get("name"), "images": meta["images_shape"][0],
               "stored_images": meta.get("stored_images", meta["images_shape"][0]),
               "label_bytes": ev["online_labels"]["bytes_if_stored"] if c.get("label_bytes") == "if_stored"
               else s["label_bytes"], "online_labels": ev.get("online_labels"),
               "soft_labels": bool(s["soft_labels"]), "labels": meta.get("labels", ""),
               "machine": s.get("machine"), "cell_wall_s": round(time.time() - t0, 1)}
        append_cell(cells_path, done, rec)
        report(args, done)
        print(f"[{c['cell']}] test {stat(rec['test_acc'])['mean']:.2f}  label bytes {rec['label_bytes']}", flush=True)
    report(args, done)
    if failed:
        print("failed cells (rerun the same command to retry): " + ", ".join(failed), flush=True)
        return 1
    return 0


def kept_dir(args, runs: Path) -> Path:
    """Where the expensive shared pieces live: teachers' weights, CV-DD/INFER members, HeLlO's encoder.

    Real runs keep them in ``benchmarks/assets/<name>`` (small files, committed) so that a fresh
    clone reuses them instead of retraining - a retrained teacher is a different teacher, and the
    rows made before would no longer share it. Smoke runs (``--steps``) and runs given their own
    ``--runs`` folder keep them there, as ``dd_trajectory.py`` does with its expert buffers.
    """
    return runs if args.steps or args.runs else ASSETS / args.name


def keep(kept: Path, cell: str, export: Path) -> None:
    """Copy a trained teacher's weights (+ config) next to the other kept pieces."""
    dst = kept / cell
    dst.mkdir(parents=True, exist_ok=True)
    for f in (export, export.with_suffix(".json")):
        if f.is_file():
            shutil.copyfile(f, dst / f.name)


def teacher_export(kept: Path, done: dict, cell: str) -> Path | None:
    """The teacher's weights: the run folder's export, else the kept copy; None when both are gone."""
    for p in (Path(done[cell]["export"]), kept / cell / Path(done[cell]["export"]).name):
        if p.is_file():
            return p
    return None


def teacher_history(cells_path: Path) -> list[dict]:
    """Every training of the batch-norm teacher in the cells file, oldest first (load_cells keeps the last)."""
    if not cells_path.is_file():
        return []
    return [r for r in map(json.loads, cells_path.read_text().splitlines()) if r.get("cell") == "teacher"]


def report(args, done: dict) -> None:
    cells = [v for k, v in done.items() if k not in ("select", "teacher", "teacher_dsa")]
    if not cells:
        return
    metrics, baselines = {}, {}
    for c in cells:
        k = c["cell"]
        target = baselines if c["cell"].startswith("random") else metrics
        target[f"{k}/test_acc"] = stat(c["test_acc"])
        target[f"{k}/val_acc"] = stat(c["val_acc"])
        target[f"{k}/label_bytes"] = stat([c["label_bytes"]])
        target[f"{k}/stored_images"] = stat([c["stored_images"]])
        target[f"{k}/distill_s"] = stat([c["distill_s"]])
    sel, teacher, teacher_dsa = done.get("select"), done.get("teacher"), done.get("teacher_dsa")
    epochs = sel["epochs"] if sel else args.epochs
    teacher_note = f"(test acc {(teacher or {}).get('test_acc')})"
    trained = teacher_history(Path(args.results) / f"{args.name}.cells.jsonl")
    if len(trained) > 1:   # its weights were lost (e.g. a fresh clone) and a later cell needed them
        teacher_note = (f"(trained {len(trained)} times, test acc {' then '.join(str(t['test_acc']) for t in trained)}: "
                        "its weights were lost and retrained for later cells, which use the last one)")
    machines = sorted({c.get("machine") or "?" for c in cells})
    smoke = f" SMOKE TEST: every training shortened to {args.steps} steps - not a result." if args.steps else ""
    result = {
        "catalog_ids": sorted({CATALOG[c["method"]] for c in cells} - {"B3"}),
        "command": f"python benchmarks/dd_decoupled.py --dataset {args.dataset} --ipcs {' '.join(map(str, args.ipcs))}"
                   + (f" --steps {args.steps}" if args.steps else "") + (f" --epochs {args.epochs}" if args.epochs else ""),
        "dataset": DATASETS[args.dataset],
        "seeds": list(range(args.seeds)),
        "metrics": metrics, "baselines": baselines,
        "wall_clock_s": round(sum(c["cell_wall_s"] for c in cells) + (sel or {}).get("wall_clock_s", 0)
                              + sum(t.get("wall_s", 0) for t in trained) + (teacher_dsa or {}).get("wall_s", 0), 1),
        "machine": " | ".join(machines), "date": time.strftime("%Y-%m-%d"),
        "notes": (f"Protocol dd-v1 (soft cross-entropy for soft labels), {epochs} evaluation epochs "
                  f"({'chosen on the validation split, candidates ' + str(SELECT_EPOCHS) if sel else 'given'}), "
                  f"evaluation seeds 0..{args.seeds - 1}. Batch-norm teacher: recipes/dd/teacher_bn_{args.dataset}.yaml "
                  f"{teacher_note}. 'random + X labels' rows: random real images "
                  "relabelled by X's teacher(s) the same way (SRe2L's also stand for CDA, same teacher and relabelling). "
                  "Soft labels are stored once per image (N x K float32), not per crop per epoch as in the papers. "
                  "DQ rows: keep ratio of every class, GraphCut bins on the ConvNet teacher's embedding, judged on "
                  "the network in the eval net column (the recipe's ResNet, or an MLP on 2 CPU cores); 'random (same ratio)' = uniform subset (bins=1) under the same evaluation; "
                  "no patch dropping / MAE."
                  + (" HeLlO rows share one set of images and one teacher trained on the protocol's DSA views, "
                     f"recipes/dd/teacher_bn_dsa_{args.dataset}.yaml (test acc {(teacher_dsa or {}).get('test_acc')}): "
                     "projector labels generated online (bytes: the shipped "
                     "low-rank projector, the frozen rotation-trained encoder not counted), the teacher relabelling "
                     "every augmented batch online (bytes: epochs x N x K float32 if stored), static per-image teacher "
                     "labels, and the unfitted prototype projector." if any(c["method"] == "hello" for c in cells) else "")
                  + smoke),
    }
    write_result(Path(args.results) / f"{args.name}.json", result)
    lines = ["## Test accuracy (%), mean ± std over evaluation seeds, with label storage", "",
             "| row | budget | eval net | test acc | val acc | images trained on | images stored | label bytes |",
             "|---|---|---|---|---|---|---|---|"]
    for c in sorted(cells, key=lambda c: (c["ipc"], c.get("ratio") or 0, c["method"], c["row"])):
        budget = f"IPC {c['ipc']}" if not c.get("ratio") else f"{100 * c['ratio']:g}% per class" + (
            f", draw {c['draw']}" if c.get("draw") else "")
        t, v = stat(c["test_acc"]), stat(c["val_acc"])
        lines.append(f"| {c['row']} | {budget} | {c['eval_model']} | {t['mean']:.2f} ± {t['std']:.2f} | "
                     f"{v['mean']:.2f} | {c['images']} | {c['stored_images']} | {c['label_bytes']} |")
    lines += target_lines(cells, epochs)
    lines += ["", "## Cost per cell", "", "| cell | steps | distill s | eval s | peak RSS MiB |", "|---|---|---|---|---|"]
    lines += [f"| {c['cell']} | {c['steps']} | {c['distill_s']:.1f} | {c['eval_s']:.1f} | {c['peak_rss_mib']} |"
              for c in cells]
    if sel:
        lines += ["", "## Evaluation epochs chosen on validation (random IPC-10 subset, 2 seeds)", "",
                  "| epochs | val acc | s |", "|---|---|---|"]
        lines += [f"| {t['epochs']} | {t['val_acc']:.2f} | {t['wall_clock_s']:.0f} |" for t in sel["table"]]
    lines += ["", "Machines: " + "; ".join(machines) + "."]
    write_markdown(Path(args.results) / f"{args.name}.md", result,
                   f"Decoupled dataset distillation on {args.dataset} (protocol dd-v1)", "\n".join(lines))


def target_lines(cells: list[dict], epochs: int) -> list[str]:
    """The issue's targets, checked on whatever cells are finished (test accuracy means)."""
    by = {c["cell"]: c for c in cells}
    acc = lambda k: stat(by[k]["test_acc"])["mean"]  # noqa: E731
    out = []
    for ipc in sorted({c["ipc"] for c in cells if c["ipc"]}):
        k = lambda m: f"{m}/ipc{ipc}"  # noqa: E731
        for a, b in (("cda", "sre2l"), ("cvdd", "cda")):
            if k(a) in by and k(b) in by:
                ok = acc(k(a)) >= acc(k(b))
                out.append(f"- IPC {ipc}: {a} {acc(k(a)):.2f} {'≥' if ok else '<'} {b} {acc(k(b)):.2f}: "
                           f"{'met' if ok else 'NOT met'}.")
        if k("cvdd") in by and k("cda+realinit") in by:
            a, b = acc(k("cvdd")), acc(k("cda+realinit"))
            out.append(f"  - ablation: CDA from random real images with CV-DD's 200 steps gets {b:.2f}; CV-DD (committee, "
                       f"medium-loss real images) is {a - b:+.2f} points against it, so its gain over CDA "
                       f"{'is not only' if a > b else 'comes from'} the real-image initialisation.")
        if k("infer") in by and k("sre2l") in by:
            i, r = by[k("infer")], by[k("sre2l")]
            paper = epochs * r["images"] * (r["label_bytes"] // max(r["images"], 1))   # one label per crop per epoch
            ok = acc(k("infer")) >= acc(k("sre2l"))
            out.append(f"- IPC {ipc}: infer {acc(k('infer')):.2f} {'≥' if ok else '<'} sre2l {acc(k('sre2l')):.2f}; "
                       f"label bytes {i['label_bytes']:,} = {100 * i['label_bytes'] / paper:.2f}% of SRe2L's as its "
                       f"paper stores them (one soft label per crop per epoch: {paper:,} B) and "
                       f"{100 * i['label_bytes'] / r['label_bytes']:.0f}% of our once-per-image SRe2L row: "
                       f"{'met' if ok and i['label_bytes'] <= paper / 100 else 'NOT met'}.")
        if k("hello") in by and k("hello+teacher_online") in by:     # the target: per-augmentation labels
            h, st = by[k("hello")], by[k("hello+teacher_online")]
            gap, ratio = acc(k("hello+teacher_online")) - acc(k("hello")), st["label_bytes"] / h["label_bytes"]
            ok = gap <= 1.0 and ratio >= 100
            out.append(f"- IPC {ipc}: hello {acc(k('hello')):.2f} vs teacher labels per augmentation, as the papers "
                       f"store them {acc(k('hello+teacher_online')):.2f} ({gap:.2f} points short) at {ratio:,.1f}x "
                       f"less label storage: {'met' if ok else 'NOT met'}.")
        if k("hello") in by and k("hello+static") in by:              # context, not a target
            h, st = by[k("hello")], by[k("hello+static")]
            out.append(f"- IPC {ipc} (context): static per-image teacher labels {acc(k('hello+static')):.2f} with "
                       f"{st['label_bytes']:,} label bytes, hello {acc(k('hello')):.2f} with {h['label_bytes']:,}.")
    pooled = {}       # DQ and its random subset per (ratio, evaluation): every draw's seeds pooled
    for c in cells:
        if c["cell"].startswith(("dq/", "random_ratio/")):
            base = c["cell"].split("/")[1].removesuffix(f"_d{c['draw']}" if c.get("draw") else "")
            pooled.setdefault((c["ratio"], base, c["eval_model"]), {}).setdefault(c["row"], []).append(c)
    for (ratio, _, net), rows in sorted(pooled.items()):
        dq, rnd = rows.get("dq", []), rows.get("random (same ratio)", [])
        both = sorted({c.get("draw", 0) for c in dq} & {c.get("draw", 0) for c in rnd})
        if not both:
            continue
        a = stat([v for c in dq if c.get("draw", 0) in both for v in c["test_acc"]])
        b = stat([v for c in rnd if c.get("draw", 0) in both for v in c["test_acc"]])
        draws = f" ({len(both)} draws x seeds, n={a['n']})" if len(both) > 1 else ""
        out.append(f"- DQ keep {100 * ratio:g}%: {a['mean']:.2f} ± {a['std']:.2f} vs random {b['mean']:.2f} ± {b['std']:.2f} "
                   f"on {net}{draws}: {'met' if a['mean'] >= b['mean'] else 'NOT met'}"
                   + (" (the gap is inside the spread)." if abs(a["mean"] - b["mean"]) < max(a["std"], b["std"]) else "."))
    return ["", "## Targets (on the finished cells)", "", *out] if out else []


if __name__ == "__main__":
    sys.exit(main())
