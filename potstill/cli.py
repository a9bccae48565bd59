"""``potstill`` command line: list, run, demo."""
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

EPILOG_DEMO = """\
examples:
  potstill demo            # every pillar that exists (about 2.5 minutes on 2 CPU cores)
  potstill demo kd         # knowledge distillation only
  potstill demo --out runs/demo --fast

The KD tour trains (or reuses from the cache) a ConvNet-64 teacher on Fashion-MNIST, distils it
into a ConvNet-16 student (~1/13 of the parameters) with each KD method, prints a table
(accuracy, parameters, latency) and writes report.md with plots. Without Fashion-MNIST it falls back to
scikit-learn's digits and says so.
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
    print(f"{'method':14s} {'pillar':8s} {'catalog':8s} {'arXiv':12s} paper")
    for m in methods:
        print(f"{m['name']:14s} {m['pillar']:8s} {','.join(m['catalog_ids']) or '-':8s} {m['arxiv'] or '-':12s} {m['paper']}")
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


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.pillar, args.out, fast=args.fast)


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

    p = sub.add_parser("demo", help="a short tour of each pillar on built-in data", epilog=EPILOG_DEMO,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pillar", nargs="?", default="all", choices=["all", "kd"], help="which pillar to tour")
    p.add_argument("--out", default="runs/demo", help="where runs and report.md go (default: runs/demo)")
    p.add_argument("--fast", action="store_true", help="a much shorter version (smoke test)")
    p.set_defaults(fn=cmd_demo)

    args = parser.parse_args(argv)
    from .core.config import ConfigError
    from .data import DataError

    from .core import distributed

    try:
        return args.fn(args)
    except (ConfigError, DataError) as e:
        print(f"potstill: error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.close()


if __name__ == "__main__":
    sys.exit(main())
