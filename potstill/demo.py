"""``potstill demo``: a short tour of each pillar on built-in data.

KD tour: a ConvNet-64 teacher trained on Fashion-MNIST (55k training images; cached under
``$POTSTILL_CACHE`` or ``~/.cache/potstill`` and reused), distilled into a ConvNet-16 student
(1/13 of the parameters) by every KD method, next to the same student trained from scratch.
One seed and short schedules: a tour, not a result (the benchmarks have seeds and stds).

Dataset tour: Fashion-MNIST distilled into 10 images per class by DM (catalog B5) in a couple
of minutes, shown as a picture grid, and the accuracy of a network trained on those 100 images
next to one trained on 100 random real images (same network, epochs and seeds). Small networks
and a short schedule; ``benchmarks/dd_fmnist.py`` runs the full protocol.

Generative tour: an EDM teacher on toy2d (8 Gaussians on a ring; cached like the KD teacher),
distilled into one-step students by consistency distillation (B8) and DMD (B9); scatter plots of
the teacher at 35 and at 1 network evaluation next to the students at 1, with sample quality and
the time per 1000 samples.

Prints tables and writes ``report.md`` with bar charts, the synthetic images and each run's curves.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from .core.checkpoint import atomic_write_text
from .core.run import machine, parse_run, run
from .data import fmnist, load_dataset
from .report.plots import bar_chart


def cache_root() -> Path:
    return Path(os.environ.get("POTSTILL_CACHE") or Path.home() / ".cache" / "potstill")


def kd_tour(out: Path, fast: bool = False) -> list[dict]:
    if fast or not fmnist.available():
        if not fast:
            print("Fashion-MNIST not found (apt-get install -y dataset-fashion-mnist); using scikit-learn digits instead.")
        data = {"name": "digits", "train_size": 600}  # the rest of the training split is the unlabeled pool
        teacher_model, student_model = {"name": "convnet", "width": 32, "depth": 2}, {"name": "convnet", "width": 8, "depth": 2}
        t_steps, s_steps, batch = (30, 20, 64) if fast else (400, 400, 64)
    else:
        data = {"name": "fmnist", "val_size": 5000}
        teacher_model, student_model = {"name": "convnet", "width": 64, "depth": 3}, {"name": "convnet", "width": 16, "depth": 3}
        t_steps, s_steps, batch = 700, 600, 128
    quiet = {"progress": not fast, "log_every": 20}
    optim = {"default": {"name": "adam", "lr": 0.002, "schedule": "cosine"}}
    teacher_recipe = {"description": "demo teacher", "method": {"name": "supervised"}, "data": data, "student": teacher_model,
                      "trainer": {"steps": t_steps, "batch_size": batch, **quiet, "optim": optim}}
    bundle = load_dataset(data)  # read once, shared by every run of the tour
    key = hashlib.sha256(json.dumps(parse_run(teacher_recipe).to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]
    teacher_dir = cache_root() / f"demo-teacher-{key}"
    if (teacher_dir / "summary.json").is_file():
        print(f"teacher: reusing {teacher_dir}")
        teacher = json.loads((teacher_dir / "summary.json").read_text())
    else:
        print(f"teacher: training {teacher_model['name']}-{teacher_model['width']} on {data['name']} ({t_steps} steps)")
        teacher = run(parse_run(teacher_recipe), teacher_dir, resume=(teacher_dir / "config.yaml").is_file(), bundle=bundle)
    tcfg = {"model": teacher_model, "checkpoint": str(teacher_dir / "export" / "model.safetensors"), "cache": True}
    # T and alpha as chosen on the validation split for this student size in benchmarks/kd_fmnist.py
    settings = {
        "scratch": {"name": "supervised"},
        "kd (B1)": {"name": "kd", "temperature": 1.0, "alpha": 0.9},
        "kd+fitnets (B1+B2)": {"name": "fitnets", "temperature": 1.0, "alpha": 0.9, "hint_weight": 1.0},
        "label_free (K7)": {"name": "label_free", "use_unlabeled": True},
    }
    rows = [{"name": f"teacher {teacher_model['name']}-{teacher_model['width']}", "acc": teacher["test"]["acc"],
             "val": teacher["val"]["acc"], "params": teacher["params"], "latency_ms": teacher["latency_ms"],
             "train_s": teacher["wall_clock_s"], "dir": str(teacher_dir)}]
    for label, method in settings.items():
        slug = label.split(" ")[0].replace("+", "_")
        recipe = {"description": f"demo: {label}", "method": method, "data": data, "student": student_model,
                  "trainer": {"steps": s_steps, "batch_size": batch, **quiet, "optim": optim}}
        if method["name"] != "supervised":
            recipe["teacher"] = tcfg
        print(f"student: {label}")
        s = run(parse_run(recipe), out / slug, bundle=bundle)
        rows.append({"name": label, "acc": s["test"]["acc"], "val": s["val"]["acc"], "params": s["params"],
                     "latency_ms": s["latency_ms"], "train_s": s["wall_clock_s"], "dir": slug})
    return rows


def dd_tour(out: Path, fast: bool = False) -> list[dict]:
    if fast or not fmnist.available():
        data, steps, epochs, width = {"name": "digits"}, (20 if fast else 200), (20 if fast else 150), 32
        net = {"name": "convnet", "width": 32, "depth": 2, "first_padding": 1}
    else:
        data, steps, epochs, width = {"name": "fmnist", "val_size": 5000}, 150, 150, 64
        net = {"name": "convnet", "width": 32, "depth": 3, "norm": "instance", "pooling": "avg", "first_padding": 3}
    bundle = load_dataset(data)
    ev = {"model": net, "epochs": epochs, "seeds": 2}
    quiet = {"progress": not fast, "log_every": 10, "ema_decay": 0.0}
    settings = {
        "random real subset (B3)": {"method": {"name": "random", "ipc": 10}, "trainer": {"steps": 0, **quiet}},
        "DM (B5)": {"method": {"name": "dm", "ipc": 10, "batch_real": 64, "net": {**net, "width": width}},
                    "trainer": {"steps": steps, "batch_size": 1, **quiet,
                                "optim": {"images": {"name": "sgd", "lr": 1.0, "momentum": 0.5}}}},
    }
    rows = []
    for label, recipe in settings.items():
        slug = recipe["method"]["name"]
        print(f"dataset: {label}, 10 images per class of {data['name']}")
        s = run(parse_run({"description": f"demo: {label}", "data": data, "eval": ev, **recipe}), out / slug, bundle=bundle)
        e = s["eval"]
        rows.append({"name": label, "acc": e["test_acc"]["mean"], "std": e["test_acc"]["std"],
                     "val": e["val_acc"]["mean"], "steps": s["steps"], "train_s": s["wall_clock_s"],
                     "eval_s": e["wall_clock_s"], "dir": slug})
    return rows


def dd_table(rows: list[dict]) -> str:
    head = ("| 100 training images | test acc (%) | val acc (%) | distillation steps | distillation (s) | evaluation (s) |\n"
            "|---|---|---|---|---|---|\n")
    return head + "".join(f"| {r['name']} | {r['acc']:.2f} ± {r['std']:.2f} | {r['val']:.2f} | {r['steps']} | "
                          f"{r['train_s']:.1f} | {r['eval_s']:.1f} |\n" for r in rows)


def gen_tour(out: Path, fast: bool = False) -> tuple[list[dict], Path]:
    import torch

    from .core.run import load_denoiser
    from .diffusion import karras_sigmas, sample
    from .eval.generative import mode_stats, sliced_wasserstein
    from .report.plots import _plt

    data = {"name": "toy2d", "kind": "ring", "modes": 8, "std": 0.05}
    # one thread: these networks are tiny, and a second thread only adds synchronisation
    quiet = {"progress": not fast, "log_every": 50, "eval_every": 0, "threads": 1}
    t_steps, s_steps = (60, 40) if fast else (3000, 1500)
    adam = {"name": "adam", "lr": 1e-3, "schedule": "cosine", "warmup_steps": 100}
    teacher_recipe = {"description": "demo EDM teacher", "method": {"name": "edm"}, "data": data,
                      "student": {"name": "toy_denoiser", "hidden": 256, "depth": 3},
                      "trainer": {"steps": t_steps, "batch_size": 512, "ema_decay": 0.999, **quiet,
                                  "optim": {"denoiser": adam}}}
    bundle = load_dataset(data)
    key = hashlib.sha256(json.dumps(parse_run(teacher_recipe).to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]
    teacher_dir = cache_root() / f"demo-edm-{key}"
    if (teacher_dir / "summary.json").is_file():
        print(f"generative teacher: reusing {teacher_dir}")
    else:
        print(f"generative teacher: training EDM on toy2d ({t_steps} steps)")
        run(parse_run(teacher_recipe), teacher_dir, resume=(teacher_dir / "config.yaml").is_file(), bundle=bundle)
    slow = {"name": "adam", "lr": 1e-4, "betas": [0.0, 0.999]}
    students = {
        "consistency (B8)": {"method": {"name": "consistency"}, "trainer": {"optim": {"student": {"name": "adam", "lr": 1e-4}}}},
        "dmd (B9)": {"method": {"name": "dmd", "regression_pairs": 512}, "trainer": {"optim": {"generator": slow, "fake_score": slow}}},
    }
    models = [("teacher, Heun 18 steps", load_denoiser(teacher_dir), "heun", karras_sigmas(18), None),
              ("teacher, 1 step", load_denoiser(teacher_dir), "euler", karras_sigmas(1), None)]
    for label, r in students.items():
        slug = r["method"]["name"]
        recipe = {"description": f"demo: {label}", "data": data, "teacher": {"checkpoint": str(teacher_dir)},
                  "method": r["method"], "trainer": {"steps": s_steps, "batch_size": 256, **quiet, **r["trainer"]}}
        print(f"generative student: {label}")
        s = run(parse_run(recipe), out / slug, bundle=bundle)
        models.append((f"{label}, 1 step", load_denoiser(out / slug), "multistep", karras_sigmas(1), s["wall_clock_s"]))
    rows, plt = [], _plt()
    fig, axes = plt.subplots(1, len(models), figsize=(2.7 * len(models), 2.9))
    centers = torch.tensor(bundle.info["centers"])
    for ax, (label, d, sampler, sig, train_s) in zip(axes, models):
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        o = sample(d, torch.randn(4000, 2, generator=g), sig, sampler, cond=bundle.test.y[:4000], generator=g)
        dt = time.perf_counter() - t0
        ms = mode_stats(o.x, centers, 0.05)
        rows.append({"name": label, "nfe": o.nfe, "swd": sliced_wasserstein(o.x, bundle.test.x), **ms,
                     "ms_per_1000": 1000 * dt / 4, "train_s": train_s})
        ax.scatter(bundle.test.x[:2000, 0], bundle.test.x[:2000, 1], s=1, c="#cccccc")
        ax.scatter(o.x[:2000, 0], o.x[:2000, 1], s=1, c="#4c72b0")
        ax.set_title(f"{label}\nNFE {o.nfe}", fontsize=8)
        ax.set_xlim(-3, 3), ax.set_ylim(-3, 3), ax.set_aspect("equal"), ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    png = out.parent / "gen_samples.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return rows, png


def gen_table(rows: list[dict]) -> str:
    head = ("| sampler | NFE | sliced W2 ↓ | modes hit | high-quality share | ms per 1000 samples | distillation (s) |\n"
            "|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        train = "" if r["train_s"] is None else f"{r['train_s']:.0f}"
        lines.append(f"| {r['name']} | {r['nfe']} | {r['swd']:.3f} | {r['mode_coverage']:.2f} | "
                     f"{r['high_quality']:.3f} | {r['ms_per_1000']:.1f} | {train} |\n")
    return head + "".join(lines)


def table(rows: list[dict]) -> str:
    head = "| model | test acc | val acc | params | latency (ms, batch 1) | train time (s) |\n|---|---|---|---|---|---|\n"
    return head + "".join(f"| {r['name']} | {r['acc']:.4f} | {r['val']:.4f} | {r['params']:,} | {r['latency_ms']:.3f} | "
                          f"{r['train_s']:.1f} |\n" for r in rows)


def run_demo(pillar: str = "all", out: str | Path = "runs/demo", fast: bool = False) -> int:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = out.with_name(f"{out.name}-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sections = []
    if pillar in ("all", "kd"):
        rows = kd_tour(out / "kd", fast)
        bar_chart(rows, "acc", out / "kd_accuracy.png", "KD demo: test accuracy")
        print("\n" + table(rows))
        links = ", ".join(f"[{r['name']}](kd/{r['dir']}/plots/train.png)" for r in rows[1:])
        sections.append("## Knowledge distillation\n\n" + table(rows) + "\n![accuracy](kd_accuracy.png)\n\n"
                        f"Training curves: {links}\n\nOne seed each: see `benchmarks/results/kd_fmnist_full.md` "
                        "(the same all-label setting) for the 3-seed comparison with standard deviations.\n")
    if pillar in ("all", "dd"):
        rows = dd_tour(out / "dd", fast)
        bar_chart([{**r, "acc": r["acc"] / 100, "std": r["std"] / 100} for r in rows], "acc", out / "dd_accuracy.png",
                  "DD demo: test accuracy from 100 training images", "std")
        print("\n" + dd_table(rows))
        sections.append("## Dataset distillation\n\n" + dd_table(rows) + "\n![accuracy](dd_accuracy.png)\n\n"
                        "The 100 distilled images (rows = classes):\n\n![DM IPC 10](dd/dm/export/synthetic.png)\n\n"
                        "Small networks (ConvNet-32 evaluator, 2 seeds) and a short schedule: see "
                        "`benchmarks/results/dd_fmnist.md` for the full protocol (ConvNet-128, 3 seeds, IPC 1/10/50).\n")
    if pillar in ("all", "gen"):
        rows, png = gen_tour(out / "gen", fast)
        print("\n" + gen_table(rows))
        sections.append("## Generative distillation\n\n" + gen_table(rows) + f"\n![samples]({png.name})\n\n"
                        "toy2d (8 Gaussians), 4000 samples each with the labels of the held-out points they are compared with (grey). See "
                        "`benchmarks/results/gen_toy2d.md` for every method with 3 sampling seeds.\n")
    report = (f"# potstill demo\n\n- machine: {machine()}\n- wall-clock: {time.time() - t0:.0f} s\n"
              f"- date: {time.strftime('%Y-%m-%d %H:%M')}\n\n" + "\n".join(sections))
    atomic_write_text(out / "report.md", report)
    print(f"report: {out / 'report.md'}  ({time.time() - t0:.0f} s)")
    return 0
