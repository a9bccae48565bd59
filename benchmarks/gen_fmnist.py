"""Generative distillation benchmark on Fashion-MNIST: EDM teacher vs one- and few-step students.

Teacher: ``recipes/gen/edm_fmnist.yaml`` (class-conditional EDM, a 2.3M-parameter U-Net, images in
[-1, 1]), measured with 1/2/4/8 Euler steps and 18 Heun steps (35 NFE). Students distilled from it:
DMD (1 step, ``dmd_fmnist.yaml``), DMD2 (1 step and 4 steps with backward simulation,
``dmd2_fmnist.yaml``).

``--family sid`` (result ``gen_sid_fmnist``, issue 6) trains the score-identity family from the same teacher
under the same protocol, DMD2 as the reference row of the same run: SiD at 1, 2 and 4 steps (one few-step
generator per row, trained on the uniform mixture of its step outputs), SiD with plain CFG 2 / Zero-CFG /
Anti-CFG, SIM (pseudo-Huber), SFD (forgets class 0 into the safe class 8; these rows also get the share of
forget-class samples the classifier still names class 0 and the other classes' FID), SwiftBrush (LoRA fake
score, image-free), MSD with 4 students vs 1 student of the same size and 4 smaller students with
teacher-score-matching pretraining, and DisBack.

Metrics, per sampling seed (``--n`` samples conditioned on the labels of the first ``--n`` test
images, so the class proportions match the reference), against the 10,000 official test images:

* FID in the feature space of a potstill classifier (``recipes/gen/fid_classifier_fmnist.yaml``,
  ConvNet-3 w64 with batch norm; Inception features do not fit 28x28 grey images, so these FIDs
  are comparable within potstill only). ``data`` rows give the floor: held-out real images;
* precision / recall (k = 3 nearest neighbours, Kynkaanniemi et al. 2019) on 5,000 samples;
* class accuracy: how often the classifier names the class the sample was asked for;
* NFE and wall-clock per 1,000 samples (same process, one after another).

The classifier, teacher and students are run folders under ``--runs`` (resumed if killed); the
measurements are cells appended to ``<name>.cells.jsonl`` (model x sampler x seed). No choice is
made on the test images: the recipes were fixed before this benchmark ran.
``--teacher-time`` / ``--student-time`` cap each training's wall-clock (``trainer.time_limit_s``)
for a machine that cannot run the recipes' full step counts; the steps reached are reported.

    python benchmarks/gen_fmnist.py                      # the recipes' full budgets (a GPU)
    python benchmarks/gen_fmnist.py --teacher-time 240 --student-time 150 --jobs 3
    python benchmarks/gen_fmnist.py --family sid --teacher benchmarks/assets/edm_fmnist \
        --classifier benchmarks/assets/fid_fmnist --student-time 600 --jobs 4      # a GPU
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import append_cell, load_cells, run_recipe  # noqa: E402
from potstill.core.run import load_denoiser, load_model, machine  # noqa: E402
from potstill.diffusion import karras_sigmas, plan_sigmas, sample  # noqa: E402
from potstill.eval.generative import fid_features, frechet_distance, precision_recall  # noqa: E402
from potstill.report.results import stat, write_markdown, write_result  # noqa: E402

STUDENTS = {  # name: (recipe, overrides)
    "dmd": ("dmd_fmnist.yaml", []),
    "dmd2": ("dmd2_fmnist.yaml", []),
    "dmd2_4step": ("dmd2_fmnist.yaml", ["method.steps=4"]),
}
#: the score-identity family (issue 6; ``--family sid``, result ``gen_sid_fmnist``), DMD2 as the reference row
SID_STUDENTS = {
    "dmd2": ("dmd2_fmnist.yaml", []),
    "sid": ("sid_fmnist.yaml", []),
    "sid_2step": ("sid_fmnist.yaml", ["method.steps=2", "method.schedule=strided"]),
    "sid_4step": ("sid_fmnist.yaml", ["method.steps=4", "method.schedule=strided"]),
    "sid_cfg2": ("sid_fmnist.yaml", ["method.guidance=2.0"]),
    "sid_zero": ("sid_fmnist.yaml", ["method.guidance_mode=zero"]),
    "sid_anti": ("sid_fmnist.yaml", ["method.guidance_mode=anti", "method.fake_label_dropout=0.1"]),
    "sim": ("sim_fmnist.yaml", []),
    "sfd": ("sfd_fmnist.yaml", []),
    "swiftbrush": ("swiftbrush_fmnist.yaml", []),
    "msd4": ("msd_fmnist.yaml", []),
    "msd1": ("msd_fmnist.yaml", ["method.students=1"]),
    "msd4_small": ("msd_small_fmnist.yaml", []),
    "disback": ("disback_fmnist.yaml", []),
}
STUDENTS.update({k: v for k, v in SID_STUDENTS.items() if k not in STUDENTS})
FAMILIES = {"core": ["dmd", "dmd2", "dmd2_4step"], "sid": list(SID_STUDENTS)}
CATALOG = {"dmd": "B9", "dmd2": "G4", "sid": "G1", "sim": "G16", "sfd": "G19", "swiftbrush": "G14", "msd4": "G3",
           "msd1": "G3", "disback": "G11"}
#: SFD forgets class 0 (T-shirt/top -> safe class 8, bag; recipes/gen/sfd_fmnist.yaml); these rows get the forgetting figures
FORGET_CLASSES, SAFE_CLASS = (0,), 8
FORGET_ROWS = ("teacher/heun18", "sid/", "sfd/")
TEACHER_PLANS = [("euler", 1), ("euler", 2), ("euler", 4), ("euler", 8), ("heun", 18)]
METRICS = ("fid", "precision", "recall", "class_acc", "nfe", "s_per_1000")
FORGET_METRICS = ("forget_share", "safe_share", "retained_fid")


def train(recipe: str, overrides: list[str], out: Path, log: Path | None = None) -> dict:
    return run_recipe(ROOT / "recipes/gen" / recipe, overrides, out, log)


def fmnist_test(pixels: str = "symmetric"):
    from potstill.data import load_dataset
    from potstill.core.run import resolve

    return load_dataset(resolve(ROOT / "recipes/gen/edm_fmnist.yaml", [f"data.pixels={pixels}"]).data)


@torch.no_grad()
def generate(d, sampler: str, sigmas, cond: torch.Tensor, seed: int, batch: int, device) -> tuple[torch.Tensor, int, float]:
    g = torch.Generator().manual_seed(1000 + seed)
    xs, nfe, dt = [], 0, 0.0
    for i in range(0, len(cond), batch):
        c = cond[i:i + batch].to(device)
        noise = torch.randn(len(c), *d.in_shape, generator=g).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = sample(d, noise, sigmas, sampler, cond=c, generator=g)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt += time.perf_counter() - t0
        xs.append(out.x.clamp(-1, 1).cpu())
        nfe = out.nfe
    return torch.cat(xs), nfe, 1000 * dt / len(cond)


def score(x: torch.Tensor, cond: torch.Tensor, classifier, ref_feats: torch.Tensor) -> dict:
    feats = fid_features(classifier, x)
    with torch.no_grad():
        dev = next(classifier.parameters()).device
        pred = torch.cat([classifier(x[i:i + 1000].to(dev)).argmax(1).cpu() for i in range(0, len(x), 1000)])
    pr = precision_recall(ref_feats[:5000].to(dev), feats[:5000].to(dev))
    return {"fid": frechet_distance(feats, ref_feats), **pr, "class_acc": float((pred == cond).double().mean() * 100)}


def forget_scores(x: torch.Tensor, cond: torch.Tensor, classifier, ref: torch.Tensor, ref_y: torch.Tensor) -> dict:
    """SFD's figures: the share of forget-class samples the classifier names a forget class (0 = forgotten) or the
    safe class, and the FID of the other classes' samples against the other classes' test images."""
    dev = next(classifier.parameters()).device
    with torch.no_grad():
        pred = torch.cat([classifier(x[i:i + 1000].to(dev)).argmax(1).cpu() for i in range(0, len(x), 1000)])
    forget = torch.tensor(FORGET_CLASSES)
    f, keep_ref = torch.isin(cond, forget), ~torch.isin(ref_y, forget)
    return {"forget_share": float(torch.isin(pred[f], forget).double().mean() * 100),
            "safe_share": float((pred[f] == SAFE_CLASS).double().mean() * 100),
            "retained_fid": frechet_distance(fid_features(classifier, x[~f]), fid_features(classifier, ref[keep_ref]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="")
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    ap.add_argument("--family", choices=sorted(FAMILIES), default="core",
                    help="core: DMD / DMD2 (result gen_fmnist); sid: the score-identity family with DMD2 as the "
                         "reference row (result gen_sid_fmnist, runs under benchmarks/runs/gen_sid_fmnist)")
    ap.add_argument("--name", default="")
    ap.add_argument("--teacher", default="", help="an exported teacher to use instead of training one "
                                                   "(e.g. benchmarks/assets/edm_fmnist)")
    ap.add_argument("--classifier", default="", help="an exported feature classifier (default: train the recipe)")
    ap.add_argument("--students", nargs="+", default=None, choices=list(STUDENTS), help="default: the family's")
    ap.add_argument("--seeds", type=int, default=3, help="sampling seeds")
    ap.add_argument("--n", type=int, default=10000, help="samples per seed")
    ap.add_argument("--batch", type=int, default=1000, help="samples per sampler call")
    ap.add_argument("--teacher-time", type=float, default=0, help="teacher training wall-clock cap, s (0: none)")
    ap.add_argument("--student-time", type=float, default=0, help="each student's wall-clock cap, s (0: none)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides for every student recipe (e.g. method.regression_pairs=256)")
    ap.add_argument("--jobs", type=int, default=1, help="students trained at once")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    args.name = args.name or {"core": "gen_fmnist", "sid": "gen_sid_fmnist"}[args.family]
    args.runs = args.runs or str(ROOT / "benchmarks/runs" / args.name)
    args.students = args.students or FAMILIES[args.family]
    torch.set_num_threads(args.threads)
    runs, results = Path(args.runs), Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    cells_path = results / f"{args.name}.cells.jsonl"
    done = load_cells(cells_path)
    quiet = ["trainer.progress=false", f"trainer.threads={args.threads}"]
    summaries: dict[str, dict] = {}

    # 1. the feature network and the teacher
    cls_dir = Path(args.classifier) if args.classifier else runs / "fid_classifier"
    if not args.classifier:
        summaries["fid_classifier"] = train("fid_classifier_fmnist.yaml", quiet, cls_dir, runs / "fid_classifier.log")
    if args.teacher:
        teacher_dir = Path(args.teacher)
    else:
        teacher_dir = runs / "teacher"
        cap = [f"trainer.time_limit_s={args.teacher_time:g}"] if args.teacher_time else []
        print("[teacher] training", flush=True)
        summaries["teacher"] = train("edm_fmnist.yaml", quiet + cap, teacher_dir, runs / "teacher.log")

    # 2. the students (in parallel processes: they only read the teacher)
    cap = [f"trainer.time_limit_s={args.student_time:g}"] if args.student_time else []

    def student(name):
        recipe, ov = STUDENTS[name]
        print(f"[{name}] training", flush=True)
        return name, train(recipe, ov + args.set + quiet + cap + [f"teacher.checkpoint={teacher_dir}"], runs / name,
                           runs / f"{name}.log")

    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for f in concurrent.futures.as_completed([pool.submit(student, n) for n in args.students]):
            try:
                name, s = f.result()
                summaries[name] = s
                print(f"[{name}] {s['steps']} steps, {s['wall_clock_s']:.0f} s {s.get('stopped') or ''}", flush=True)
            except Exception as e:  # noqa: BLE001 - one failed student must not cost the others' measurements
                failed.append(str(e))
                print(f"student FAILED: {e}", flush=True)

    # 3. measurements
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    classifier = load_model(cls_dir).to(device).eval()
    bundle = fmnist_test()
    ref = bundle.test.x
    ref_feats = fid_features(classifier, ref)
    cond_all = bundle.test.y
    n = min(args.n, len(ref))
    plans = []
    teacher = load_denoiser(teacher_dir).to(device)
    plans += [("teacher", teacher, s, k, karras_sigmas(k)) for s, k in TEACHER_PLANS]
    for name in args.students:
        if (runs / name / "export" / "model.json").is_file():
            d = load_denoiser(runs / name).to(device)
            plan = d.sampling
            plans.append((name, d, plan["sampler"], plan["steps"], plan_sigmas(plan)))
    # the floor: held-out real images (validation split) against the test images
    if "data/val/seed0" not in done:
        append_cell(cells_path, done, {"cell": "data/val/seed0", "model": "data", "sampler": "-", "steps": 0, "seed": 0,
                                  **score(bundle.val.x[:n], bundle.val.y[:n], classifier, ref_feats),
                                  "nfe": 0, "s_per_1000": 0.0})
    for who, d, sampler, steps, sig in plans:
        for seed in range(args.seeds):
            key = f"{who}/{sampler}{steps}/seed{seed}"
            if key in done:
                continue
            cond = cond_all[:n]
            x, nfe, s1000 = generate(d, sampler, sig, cond, seed, args.batch, device)
            extra = {}
            if args.family == "sid" and key.startswith(FORGET_ROWS):
                extra = forget_scores(x, cond, classifier, ref, cond_all)
            append_cell(cells_path, done, {"cell": key, "model": who, "sampler": sampler, "steps": steps, "seed": seed,
                                      **score(x, cond, classifier, ref_feats), "nfe": nfe, "s_per_1000": s1000,
                                      **extra})
            print(key, {k: round(v, 3) if isinstance(v, float) else v for k, v in done[key].items() if k != "cell"},
                  flush=True)
    report(args, done, plans, summaries, runs, device)
    if failed:
        print("failed students (rerun the same command to retry): " + "; ".join(failed), flush=True)
        return 1
    return 0


def report(args, done, plans, summaries, runs, device) -> None:
    metrics, baselines, rows = {}, {}, []
    groups = [("data", "-", 0)] + [(w, s, k) for w, _, s, k, _ in plans]
    for who, sampler, steps in groups:
        cells = [c for c in done.values() if c["model"] == who and c["sampler"] == sampler and c["steps"] == steps]
        if not cells:
            continue
        key = f"{who}/{sampler}{steps}" if who != "data" else "data/val"
        names = METRICS + tuple(m for m in FORGET_METRICS if all(m in c for c in cells))
        agg = {m: stat([c[m] for c in cells]) for m in names}
        for m in names:
            (metrics if who not in ("teacher", "data") else baselines)[f"{key}/{m}"] = agg[m]
        rows.append((who, sampler, steps, agg))
    train_info = {}
    for name, s in summaries.items():
        train_info[name] = {"steps": s.get("steps"), "train_s": s.get("wall_clock_s"), "stopped": s.get("stopped"),
                            "machine": s.get("machine")}
    t35 = baselines.get("teacher/heun18/s_per_1000", {}).get("mean")
    fid35 = baselines.get("teacher/heun18/fid", {}).get("mean")
    lines = [f"## Sample quality (mean ± std over {args.seeds} sampling seeds; {args.n} samples each vs the 10k test images)",
             "", "| model | sampler | NFE | FID ↓ | FID / teacher@35 | precision | recall | class acc % | s / 1000 | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for who, sampler, steps, m in rows:
        ratio = f"{m['fid']['mean'] / fid35:.2f}" if fid35 else "–"
        speed = f"{t35 / m['s_per_1000']['mean']:.1f}×" if t35 and m["s_per_1000"]["mean"] > 0 else "–"
        lines.append(f"| {who} | {sampler} {steps} | {m['nfe']['mean']:.0f} | {m['fid']['mean']:.2f} ± {m['fid']['std']:.2f} | "
                     f"{ratio} | {m['precision']['mean']:.3f} | {m['recall']['mean']:.3f} | {m['class_acc']['mean']:.1f} | "
                     f"{m['s_per_1000']['mean']:.3f} | {speed} |")
    forget_rows = [(w, sm, k, m) for w, sm, k, m in rows if "forget_share" in m]
    if forget_rows:
        lines += ["", f"## Forgetting (SFD forgets class {FORGET_CLASSES[0]}, safe class {SAFE_CLASS}; by the FID classifier)", "",
                  "| model | sampler | forget-class samples named a forget class % | ... named the safe class % | "
                  "FID of the other classes |", "|---|---|---|---|---|"]
        lines += [f"| {w} | {sm} {k} | {m['forget_share']['mean']:.2f} ± {m['forget_share']['std']:.2f} | "
                  f"{m['safe_share']['mean']:.2f} | {m['retained_fid']['mean']:.2f} ± {m['retained_fid']['std']:.2f} |"
                  for w, sm, k, m in forget_rows]
    lines += ["", "## Training", "", "| run | steps | s | stopped |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['steps']} | {v['train_s']} | {v['stopped'] or ''} |" for k, v in train_info.items()]
    lines += ["", f"![samples]({args.name}.png)"]
    result = {
        "catalog_ids": sorted({"B7", *(CATALOG[n.split('_')[0]] for n in args.students)}),
        "command": "python benchmarks/gen_fmnist.py " + " ".join(sys.argv[1:]),
        "dataset": "fmnist in [-1, 1]: 55k train (teacher, students' real data), 5k val (the data row), 10k test (reference)",
        "seeds": list(range(args.seeds)),
        "metrics": metrics, "baselines": baselines,
        "wall_clock_s": round(sum((v["train_s"] or 0) for v in train_info.values()), 1),
        "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "notes": ("Teacher rows and the data row are baselines; the data row scores the 5,000 validation images "
                  "(fewer than the models' samples: FID is biased upward at smaller n, so this floor is slightly "
                  "pessimistic). FID in the 1024-d features of the potstill "
                  "Fashion-MNIST classifier (not Inception: not comparable with published FIDs). Training runs: "
                  + json.dumps(train_info)),
    }
    write_result(Path(args.results) / f"{args.name}.json", result)
    title = {"core": "Generative distillation on Fashion-MNIST: EDM teacher vs few-step students",
             "sid": "Score-identity family on Fashion-MNIST (SiD, SIM, SFD, SwiftBrush, MSD, DisBack) vs DMD2"}[args.family]
    write_markdown(Path(args.results) / f"{args.name}.md", result, title, "\n".join(lines))
    grid(args, plans, device)
    print("\n".join(lines))


def grid(args, plans, device) -> None:
    """One row per model (teacher 35 NFE and 1 step, each student), one column per class (x2)."""
    from potstill.report.plots import _plt

    chosen = [p for p in plans if p[0] != "teacher" or p[3] in (1, 18)]
    plt = _plt()
    cond = torch.arange(20) % 10
    fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 1.1 * len(chosen)))
    for ax, (who, d, sampler, steps, sig) in zip(axes if len(chosen) > 1 else [axes], chosen):
        x, _, _ = generate(d, sampler, sig, cond, 7, 20, device)
        row = torch.cat([torch.cat([x[i, 0], x[i + 10, 0]], 0) for i in range(10)], 1)
        ax.imshow(((row + 1) / 2).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_ylabel(f"{who}\n{sampler} {steps}", fontsize=7, rotation=0, ha="right", va="center")
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(Path(args.results) / f"{args.name}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
