"""``potstill`` command line: list, run, eval-syn, teacher, sample, demo."""
from __future__ import annotations

import argparse
import json
import os
import sys

EPILOG_RUN = """\
examples:
  potstill run recipes/kd/kd_fmnist.yaml
  potstill run recipes/kd/kd_fmnist.yaml trainer.steps=200 method.temperature=2 --out runs/kd_t2
  potstill run recipes/kd/kd_fmnist.yaml --out runs/kd_t2 --resume      # continue a killed run

Overrides are dotted keys into the recipe (values parsed as YAML). An unknown key or a wrong
type stops the run before anything is written, naming the key and the valid choices.
"""

EPILOG_LIST = """\
examples:
  potstill list                      # methods, models, datasets
  potstill list --json               # the same, machine-readable
  potstill list --config kd          # the fields of one method/model/dataset config
  potstill list --layers convnet     # module names of a model (for feature taps)
"""

EPILOG_EVAL_SYN = """\
examples:
  potstill eval-syn runs/dm_ipc10                        # a run folder, its export/ or a .safetensors
  potstill eval-syn runs/dm_ipc10 epochs=300 seeds=5     # protocol settings (dotted keys)
  potstill eval-syn runs/dm_ipc10 --arch convnet convnet_bn mlp resnet   # cross-architecture
  potstill eval-syn my_set.safetensors --data fmnist --json results.json

The dd-v1 protocol: train a fresh network (default ConvNet-3, width 128, instance norm) on the
synthetic set alone with DSA, for each of `seeds` seeds; report validation and test accuracy,
mean +- std. Settings: model, epochs, lr, momentum, weight_decay, decay_at, batch_size, dsa,
seeds, seed, threads, device. The data defaults to the dataset the set was distilled from.
"""

#: cross-architecture presets for ``eval-syn --arch``
ARCHS = {
    "convnet": {"name": "convnet", "width": 128, "depth": 3, "norm": "instance", "pooling": "avg", "first_padding": 3},
    "convnet_bn": {"name": "convnet", "width": 128, "depth": 3, "norm": "batch", "pooling": "avg", "first_padding": 3},
    "convnet_nonorm": {"name": "convnet", "width": 128, "depth": 3, "norm": "none", "pooling": "avg", "first_padding": 3},
    "mlp": {"name": "mlp", "hidden": [128, 128]},
    "resnet": {"name": "resnet", "width": 16, "blocks": [1, 1, 1], "norm": "batch"},
}

EPILOG_TEACHER = """\
examples:
  potstill teacher train recipes/gen/edm_toy2d.yaml          # trains once, then reuses
  potstill teacher train recipes/kd/teacher_fmnist.yaml trainer.steps=500

The run folder is $POTSTILL_CACHE/teachers/<recipe>-<hash> (default ~/.cache/potstill): the
hash covers the whole resolved recipe, so a changed recipe trains a new teacher and an
unchanged one is found again (a killed training resumes). Prints the folder.
"""

EPILOG_EXPERTS = """\
examples:
  potstill experts recipes/dd/digits/mtt.yaml                 # into the cache, as the method would
  potstill experts recipes/dd/digits/ast.yaml --out buffers/ast experts.num=20

Trains (or finishes) the expert trajectories a trajectory-matching recipe (mtt, ftd, datm, ast)
asks for: each expert's parameters at every epoch, one safetensors file per expert, resumable
(a killed run continues from the unfinished expert's last whole epoch). Without --out the folder is the cache one the method itself would use
($POTSTILL_CACHE/experts/<dataset>-<hash>); with --out, point the recipe at it with
method.buffer=DIR. Prints the folder and the experts' validation accuracy.
"""

EPILOG_SAMPLE = """\
examples:
  potstill sample runs/edm_toy2d --steps 18 --sampler heun         # a scatter plot (2-D data)
  potstill sample runs/edm_fmnist --steps 1 --sampler euler --n 100 --guidance 2 --out grid.png

Draws from an exported denoiser (a teacher or a student run) with the Karras schedule and the
chosen sampler (a distilled student brings its own sampler and steps unless you override them); class-conditional models get n/classes samples per class (rows of the grid).
Prints the NFE and the wall-clock per 1000 samples.
"""

EPILOG_DEMO = """\
examples:
  potstill demo            # every pillar: KD, dataset and generative tours (about 6 minutes on 2 CPU cores)
  potstill demo kd         # knowledge distillation only
  potstill demo dd         # dataset distillation only (DM vs a random subset, about 2 minutes)
  potstill demo gen        # generative distillation only (toy2d teacher vs one-step students, ~2 minutes)
  potstill demo --out runs/demo --fast

The KD tour trains (or reuses from the cache) a ConvNet-64 teacher on Fashion-MNIST, distils it
into a ConvNet-16 student (~1/13 of the parameters) with each KD method, prints a table
(accuracy, parameters, latency) and writes report.md with plots. Without Fashion-MNIST it falls back to
scikit-learn's digits and says so.

The dataset tour distils Fashion-MNIST into 10 images per class with DM, saves the picture grid,
and trains the same small network on those 100 images and on 100 random real ones.
"""


def cmd_list(args) -> int:
    from . import DATASETS, METHODS, MODELS
    from .core.config import describe

    if args.layers:
        from .models import build_model

        model = build_model(args.layers, (1, 28, 28), 10, "--layers")
        for name, mod in model.named_modules():
            if name:
                print(f"{name:24s} {type(mod).__name__}")
        return 0
    if args.config:
        for reg in (METHODS, MODELS, DATASETS):
            if args.config in reg:
                print(f"{reg.kind} {args.config!r} config fields:")
                for field, tp, default in describe(reg.config_cls(args.config)):
                    print(f"  {field:20s} {tp:28s} default: {default!r}")
                return 0
        print(f"no method, model or dataset named {args.config!r}", file=sys.stderr)
        return 2
    methods = [METHODS.get(n).info() for n in METHODS.names()]
    if args.json:
        print(json.dumps({"methods": methods, "models": MODELS.names(), "datasets": DATASETS.names()}, indent=2))
        return 0
    print(f"{'method':14s} {'pillar':10s} {'catalog':8s} {'arXiv':12s} paper")
    for m in methods:
        print(f"{m['name']:14s} {m['pillar']:10s} {','.join(m['catalog_ids']) or '-':8s} {m['arxiv'] or '-':12s} {m['paper']}")
    print(f"\nmodels:   {', '.join(MODELS.names())}")
    print(f"datasets: {', '.join(DATASETS.names())}")
    return 0


def cmd_run(args) -> int:
    from .core.run import resolve, run

    cfg = resolve(args.recipe, args.overrides)
    out = args.out or os.path.join("runs", os.path.splitext(os.path.basename(args.recipe))[0])
    summary = run(cfg, out, resume=args.resume)
    if "val" in summary:
        print(f"val: {json.dumps(summary['val'])}")
    if "test" in summary:
        print(f"test: {json.dumps(summary['test'])}")
    print(f"run folder: {out}")
    return 0


def cmd_eval_syn(args) -> int:
    from .core.config import apply_overrides, from_dict, to_dict
    from .core.checkpoint import atomic_write_json
    from .core.run import machine
    from .data import DataError, load_dataset
    from .data.synthetic_set import SyntheticSet
    from .eval.synthetic_set import SynEvalConfig, evaluate_synthetic

    path = args.path
    if os.path.isdir(os.path.join(path, "export")):
        path = os.path.join(path, "export")
    syn = SyntheticSet.load(path)
    data = args.data or syn.meta.get("dataset")
    if not data:
        raise DataError(f"{path}: the set does not say which dataset it came from; pass --data NAME")
    bundle = load_dataset(data, "--data")
    if bundle.in_shape != tuple(syn.images.shape[1:]) or bundle.num_classes != syn.num_classes:
        raise DataError(f"{path}: images {tuple(syn.images.shape[1:])} x {syn.num_classes} classes do not fit "
                        f"{bundle.name} ({bundle.in_shape} x {bundle.num_classes} classes)")
    base = from_dict(SynEvalConfig, apply_overrides({}, args.overrides), "eval-syn")
    results = {}
    for arch in args.arch or [None]:
        cfg = base if arch is None else from_dict(SynEvalConfig, {**to_dict(base), "model": ARCHS[arch]}, "eval-syn")
        name = arch or cfg.model.get("name", "model")
        r = evaluate_synthetic(syn, bundle, cfg, progress=True)
        results[name] = r
        t, v = r.get("test_acc", {}), r.get("val_acc", {})
        print(f"{name:16s} test {t.get('mean', float('nan')):6.2f} ± {t.get('std', 0):.2f}   "
              f"val {v.get('mean', float('nan')):6.2f} ± {v.get('std', 0):.2f}   "
              f"({r['eval_images_per_s']:.0f} img/s, {r['wall_clock_s']:.0f} s)")
    if args.json:
        atomic_write_json(args.json, {"set": str(args.path), "meta": syn.meta, "ipc": syn.ipc,
                                      "label_bytes": syn.label_bytes(), "machine": machine(), "results": results})
        print(f"wrote {args.json}")
    return 0


def teacher_dir(cfg, recipe: str):
    import hashlib

    from .demo import cache_root

    key = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]
    stem = os.path.splitext(os.path.basename(recipe))[0]
    return cache_root() / "teachers" / f"{stem}-{key}"


def cmd_teacher(args) -> int:
    from .core.run import resolve, run

    cfg = resolve(args.recipe, args.overrides)
    folder = teacher_dir(cfg, args.recipe)
    if (folder / "summary.json").is_file():
        print(f"teacher: reusing {folder}")
    else:
        run(cfg, folder, resume=(folder / "config.yaml").is_file())
    print(folder)
    return 0


def cmd_experts(args) -> int:
    from .core.config import ConfigError
    from .core.registry import METHODS
    from .core.run import resolve
    from .data import load_dataset
    from .demo import cache_root
    from .methods.dataset.experts import buffer_key, train_experts

    cfg = resolve(args.recipe, [f"method.{o}" for o in args.overrides])
    cls = METHODS.get(cfg.method.name)
    if not hasattr(cls, "expert_config"):
        raise ConfigError(f"method.name: {cfg.method.name} does not use expert trajectories (mtt, ftd, datm, ast do)")
    mcfg = cfg.method.config
    ecfg = cls.expert_config(mcfg)
    data = load_dataset(cfg.data)
    root = args.out or cache_root() / "experts" / f"{data.name}-{buffer_key(ecfg, mcfg.net, data)}"
    buf = train_experts(ecfg, mcfg.net, data, root)
    accs = [e.get("val_acc") for e in buf.meta["experts"] if e.get("val_acc") is not None]
    print(f"{len(buf)} experts x {buf.epochs} epochs" + (f", val acc {100 * sum(accs) / len(accs):.2f}%" if accs else ""))
    print(root)
    return 0


def cmd_sample(args) -> int:
    import time

    import torch
    import yaml

    from .core.run import load_denoiser
    from .data import load_dataset
    from .diffusion import plan_sigmas, sample

    d = load_denoiser(args.run)
    plan = d.sampling or {}                      # a distilled student says how it is sampled
    args.sampler = args.sampler or plan.get("sampler", "heun")
    args.steps = args.steps or plan.get("steps", 18)
    cfg_path = os.path.join(args.run, "config.yaml")
    bundle = load_dataset(yaml.safe_load(open(cfg_path))["data"]) if os.path.isfile(cfg_path) else None
    k = d.num_classes
    per = max(1, args.n // k)
    cond = None if args.uncond else torch.arange(k).repeat_interleave(per)
    n = per * k if cond is not None else args.n
    g = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(n, *d.in_shape, generator=g)
    t0 = time.perf_counter()
    out = sample(d, noise, plan_sigmas(plan, args.steps), args.sampler, cond=cond, guidance=args.guidance, uncond=k,
                 generator=g)
    dt = time.perf_counter() - t0
    print(f"{n} samples, {args.sampler} {args.steps} step(s), NFE {out.nfe}, {1000 * dt / n:.2f} s per 1000 samples")
    target = args.out or os.path.join(args.run, f"samples_{args.sampler}{args.steps}.png")
    if len(d.in_shape) == 1:
        from .report.plots import scatter2d

        scatter2d(out.x, target, f"{args.sampler}, NFE {out.nfe}", reference=bundle.test.x if bundle else None)
    else:
        from .data.synthetic_set import SyntheticSet

        labels = cond if cond is not None else torch.zeros(n, dtype=torch.long)
        meta = {"method": f"{args.sampler} NFE {out.nfe}", "normalization": bundle.normalization if bundle else None,
                "class_names": bundle.class_names if bundle else None}
        SyntheticSet(out.x.clamp(-10, 10), labels, k, meta).save_grid(target, max_per_class=min(per, 10))
    print(f"wrote {target}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.pillar, args.out, fast=args.fast)


EPILOG_LEADERBOARD = """\
Renders every result file in benchmarks/results/ (and preliminary/) into LEADERBOARD.md and a
static HTML page with its plots (accuracy vs IPC, quality vs NFE). Published numbers are marked;
every number links to the command that reproduces it.

examples:
  potstill leaderboard
  potstill leaderboard --screenshot docs/leaderboard/screenshot.png   # needs apt-get install chromium
"""


EPILOG_BENCH = """\
Runs every registered method of a suite (and its reference rows: teacher, scratch, random
subset) under the suite's fixed protocol, K seeds each, one result file per method in
<results>/<suite>/<method>.json. A result whose recipe, overrides, teacher, protocol version and
code version are unchanged is skipped; a killed bench resumes where it stopped.

suites: kd-fmnist, dd-fmnist, gen-toy2d, gen-fmnist, lm-text   (potstill bench --list)

examples:
  potstill bench dd-fmnist --quick              # minutes: digits, short schedules, 2 seeds
  potstill bench kd-fmnist                      # the full protocol, 3 seeds
  potstill bench kd-fmnist --methods kd         # one method (and the teacher it needs)
"""


def cmd_bench(args) -> int:
    from .bench import SUITES, plan, run

    if args.list or not args.suite:
        for s in SUITES.values():
            print(f"{s.name:11s} {s.title}  [{', '.join(e.name + (' (ref)' if e.reference else '') for e in s.entries)}]")
        return 0
    try:
        p = plan(args.suite, args.methods, args.seeds, args.quick, args.results, args.runs, ".", args.threads)
    except (ValueError, FileNotFoundError) as e:
        print(f"potstill: error: {e}", file=sys.stderr)
        return 2
    status = run(p, progress=not args.no_progress)
    for name, st in status.items():
        print(f"{name}: {st} -> {p.result_path(p.entry(name))}")
    return 0


def cmd_leaderboard(args) -> int:
    from .report.leaderboard import build, screenshot

    try:
        out = build(args.results, args.markdown, args.html)
    except (ValueError, FileNotFoundError) as e:
        print(f"potstill: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(out['sections'])} result files -> {out['markdown']}, {out['html']} ({len(out['plots'])} plots)")
    if args.screenshot:
        try:
            print("screenshot:", screenshot(out["html"], args.screenshot))
        except (FileNotFoundError, RuntimeError) as e:
            print(f"potstill: error: {e}", file=sys.stderr)
            return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="potstill",
        description="Knowledge, dataset and generative distillation through one trainer.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run `potstill COMMAND --help` for each command's options and examples")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered methods, models and datasets", epilog=EPILOG_LIST,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--config", metavar="NAME", help="show the config fields of a method, model or dataset")
    p.add_argument("--layers", metavar="MODEL", help="print the named modules of a model (default config)")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("run", help="train a YAML recipe", epilog=EPILOG_RUN,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="path to a YAML recipe (see recipes/)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted overrides of recipe keys")
    p.add_argument("--out", help="run folder (default: runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("eval-syn", help="judge a distilled dataset with the dd-v1 protocol", epilog=EPILOG_EVAL_SYN,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="run folder, export folder, or synthetic .safetensors/.json")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="protocol settings, e.g. epochs=300 seeds=5")
    p.add_argument("--data", help="dataset to evaluate on (default: the one the set was distilled from)")
    p.add_argument("--arch", nargs="+", choices=sorted(ARCHS), help="cross-architecture: evaluate with each preset")
    p.add_argument("--json", help="write all results to this JSON file")
    p.set_defaults(fn=cmd_eval_syn)

    p = sub.add_parser("teacher", help="train (or find in the cache) a teacher from a recipe", epilog=EPILOG_TEACHER,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["train"], help="what to do")
    p.add_argument("recipe", help="path to a YAML recipe")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted overrides of recipe keys")
    p.set_defaults(fn=cmd_teacher)

    p = sub.add_parser("experts", help="train the expert trajectories of a trajectory-matching recipe",
                       epilog=EPILOG_EXPERTS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="path to a YAML recipe whose method is mtt, ftd, datm or ast")
    p.add_argument("overrides", nargs="*", metavar="experts.key=value", help="overrides of method keys")
    p.add_argument("--out", help="buffer folder (default: the cache folder the method would use)")
    p.set_defaults(fn=cmd_experts)

    p = sub.add_parser("sample", help="draw samples from an exported denoiser", epilog=EPILOG_SAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder (or its export/) of a teacher or student")
    p.add_argument("--steps", type=int, help="sampler steps (Heun: 2*steps-1 NFE; default: the student's own, else 18)")
    p.add_argument("--sampler", choices=["euler", "heun", "ddim", "multistep"],
                   help="default: the distilled student's own sampler, else heun")
    p.add_argument("--n", type=int, default=100, help="number of samples (rounded to a multiple of the classes)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance weight (1 = none)")
    p.add_argument("--uncond", action="store_true", help="sample without class labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="PNG to write (default: <run>/samples_<sampler><steps>.png)")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("demo", help="a short tour of each pillar on built-in data", epilog=EPILOG_DEMO,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pillar", nargs="?", default="all", choices=["all", "kd", "dd", "gen"], help="which pillar to tour")
    p.add_argument("--out", default="runs/demo", help="where runs and report.md go (default: runs/demo)")
    p.add_argument("--fast", action="store_true", help="a much shorter version (smoke test)")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("bench", help="run a benchmark suite's methods under its fixed protocol", epilog=EPILOG_BENCH,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", nargs="?", help="suite name (see --list)")
    p.add_argument("--quick", action="store_true", help="a reduced version that finishes in minutes (its own folders)")
    p.add_argument("--methods", nargs="+", metavar="NAME", help="only these entries (teachers they need come along)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3; --quick uses 2)")
    p.add_argument("--results", default="benchmarks/results/bench", help="where result files go")
    p.add_argument("--runs", default="runs/bench", help="where run folders go")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list the suites and their methods")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("leaderboard", help="render benchmarks/results into LEADERBOARD.md and an HTML page",
                       epilog=EPILOG_LEADERBOARD, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="benchmarks/results", help="folder of result JSON files")
    p.add_argument("--markdown", default="LEADERBOARD.md", help="Markdown file to write")
    p.add_argument("--html", default="docs/leaderboard/index.html", help="HTML page to write (plots go beside it)")
    p.add_argument("--screenshot", metavar="PNG", help="also render the page with headless Chromium to this PNG")
    p.set_defaults(fn=cmd_leaderboard)

    # Overrides may come after options too (`run recipe --out X a=b`): argparse stops a nargs="*"
    # positional at the first option, and parse_intermixed_args does not support subparsers.
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if "=" not in e or e.startswith("-")]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from .core import distributed
    from .core.cpu import tune_allocator

    tune_allocator()                                # speed only: see potstill/core/cpu.py
    from .core.config import ConfigError
    from .data import DataError
    from .errors import PotstillError

    try:
        return args.fn(args)
    except (ConfigError, DataError) as e:           # bad input: nothing was started
        print(f"potstill: error: {e}", file=sys.stderr)
        return 2
    except PotstillError as e:                      # a run that had to stop (non-finite loss, full disk)
        print(f"potstill: error: {e}", file=sys.stderr)
        return 3
    finally:
        distributed.close()


if __name__ == "__main__":
    sys.exit(main())
