"""Screen HeLlO's frozen encoder and projector rank without the test split (catalog D1).

HeLlO's student is labelled online by the shipped low-rank projector instead of the teacher, so the
projector is only as good as its agreement with the teacher on the views the student will see:
the protocol's DSA augmentations of the *shipped* images. This script measures exactly that, for
several encoder settings and ranks, cheaply:

1. ``--views`` DSA views of each shipped image (fitting set) and ``--fresh`` other views (the
   held-out check), with the teacher's logits and each encoder's normalised features computed once;
2. for each rank, the method's own :class:`~potstill.methods.dataset.hello.LowRankProjector`
   (W0 = the shipped images' class prototypes, ``B = 0`` at the start) fitted with Adam on the KL
   of ``potstill/methods/dataset/hello.py`` over minibatches of the cached fitting views;
3. reported: argmax agreement with the teacher on the fitting and on the fresh views, the KL on the
   fresh views, and the label bytes the projector would ship.

Nothing here reads the test split (nor a class label beyond the shipped images' own classes).
The recipe's ``method.encoder`` is the base; each ``--variants`` entry overrides some of its keys
(``name:key=value,key=value``; dotted keys reach into ``model``). Rotation-trained encoders go to
the same cache as ``benchmarks/dd_decoupled.py``'s cells, so a chosen variant is not trained twice.

    python benchmarks/hello_screen.py --images benchmarks/runs/dd_decoupled_fmnist/hello_ipc10/export/synthetic.safetensors \\
        --variants pool2 pool4:pool=4 --ranks 4 6 8

The fitted heads are cached features, not the run's fresh views per step, so the agreement of a real
run (``log/agree_syn`` in its metrics) can differ by a point or two; the ranking is what this is for.
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT  # noqa: E402
from potstill.core.checkpoint import load_module_weights  # noqa: E402
from potstill.core.cpu import tune_allocator  # noqa: E402
from potstill.data import load_dataset  # noqa: E402
from potstill.data.dsa import DEFAULT_STRATEGY, DSA  # noqa: E402
from potstill.data.synthetic_set import SyntheticSet  # noqa: E402
from potstill.losses import kl_divergence  # noqa: E402
from potstill.methods.dataset.hello import (EncoderConfig, LowRankProjector, build_encoder,  # noqa: E402
                                            class_prototypes)
from potstill.models import build_model  # noqa: E402


class CachedFeatures(nn.Identity):
    """Stands in for the frozen encoder when its (normalised) features are already computed."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim


def parse_variant(text: str) -> tuple[str, dict]:
    """``name:key=value,key=value`` -> (name, {key: value}) with YAML-typed values."""
    name, _, rest = text.partition(":")
    over = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--variants {text!r}: '{item}' is not key=value")
        over[key.strip()] = yaml.safe_load(value)
    return name, over


def encoder_config(base: dict, over: dict, cache_dir: Path) -> EncoderConfig:
    cfg = copy.deepcopy(base)
    for key, value in over.items():
        node, *path = key.split(".")
        if path:
            cfg.setdefault(node, {})[path[0]] = value
        else:
            cfg[node] = value
    cfg["cache_dir"] = str(cache_dir)
    try:
        return EncoderConfig(**cfg)
    except TypeError as e:
        raise SystemExit(f"--variants: {e}") from None


@torch.no_grad()
def batched(fn, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def fit(features: torch.Tensor, targets: torch.Tensor, w0: torch.Tensor, rank: int, temperature: float,
        init_scale: float, steps: int, lr: float, batch: int, seed: int) -> LowRankProjector:
    torch.manual_seed(seed)
    proj = LowRankProjector(CachedFeatures(w0.shape[1]), w0, rank, temperature, "synthetic", init_scale)
    params = [proj.A, proj.B, proj.bias, proj.log_scale]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(len(features), (batch,))
        loss = kl_divergence(targets[idx], proj.logits(features[idx]), temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return proj.requires_grad_(False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/dd/fmnist_ipc10/hello.yaml",
                    help="the HeLlO recipe whose data, teacher model, encoder and temperature are the base")
    ap.add_argument("--images", required=True, help="an exported set whose images are the shipped ones")
    ap.add_argument("--teacher", default="benchmarks/runs/dd_decoupled_fmnist/teacher_dsa/export/model.safetensors")
    ap.add_argument("--cache", default="benchmarks/runs/dd_decoupled_fmnist/hello_encoder_cache")
    ap.add_argument("--variants", nargs="+", default=["recipe"], help="name[:key=value,...] over method.encoder")
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 6, 8])
    ap.add_argument("--views", type=int, default=200, help="fitting views per shipped image")
    ap.add_argument("--fresh", type=int, default=20, help="held-out views per shipped image")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="", help="markdown table (default benchmarks/results/hello_screen_<data>.md)")
    args = ap.parse_args(argv)
    tune_allocator()
    torch.set_num_threads(args.threads)
    t_start = time.time()

    recipe = yaml.safe_load((ROOT / args.recipe).read_text())
    m = recipe["method"]
    temperature, init_scale = float(m.get("temperature", 1.0)), float(m.get("init_scale", 10.0))
    data = load_dataset(recipe["data"])
    teacher = build_model(recipe["teacher"]["model"], tuple(data.in_shape), data.num_classes, "teacher.model")
    load_module_weights(teacher, ROOT / args.teacher, "--teacher")
    teacher.eval()
    shipped = SyntheticSet.load(ROOT / args.images)
    x, y = shipped.images.float(), shipped.hard_labels
    dsa = DSA(m.get("augment", DEFAULT_STRATEGY))

    def views(n: int) -> torch.Tensor:
        return torch.cat([dsa(x, int(torch.randint(2**31 - 1, (1,)))) for _ in range(n)])

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        with torch.no_grad():
            v_fit, v_fresh = views(args.views), views(args.fresh)
    t_fit, t_fresh = batched(teacher, v_fit), batched(teacher, v_fresh)

    rows = []
    for text in args.variants:
        name, over = parse_variant(text)
        cfg = encoder_config(m.get("encoder", {}), over, ROOT / args.cache)
        t0 = time.time()
        enc = build_encoder(cfg, data)
        enc_s = time.time() - t0

        def feats(v):
            return F.normalize(batched(enc, v).float(), dim=1)

        f_fit, f_fresh = feats(v_fit), feats(v_fresh)
        w0 = class_prototypes(enc, x, y, data.num_classes)
        for rank in args.ranks:
            proj = fit(f_fit, t_fit, w0, rank, temperature, init_scale, args.steps, args.lr, args.batch, args.seed)
            with torch.no_grad():
                agree = {k: float((proj.logits(f).argmax(1) == t.argmax(1)).float().mean())
                         for k, f, t in (("fit", f_fit, t_fit), ("fresh", f_fresh, t_fresh))}
                kl = float(kl_divergence(t_fresh, proj.logits(f_fresh), temperature))
            nbytes = sum(4 * v.numel() for v in proj.shipped().values())
            rows.append({"variant": name, "over": over, "dim": enc.dim, "rank": rank, "bytes": nbytes,
                         "agree_fit": agree["fit"], "agree_fresh": agree["fresh"], "kl_fresh": kl,
                         "rotation_acc": enc.info.get("rotation_acc"), "encoder_s": enc_s})
            r = rows[-1]
            print(f"{name:>12} D={r['dim']:<5} rank {rank:<3} {nbytes:>7} B  agreement fit {agree['fit']:.3f} "
                  f"fresh {agree['fresh']:.3f}  KL {kl:.3f}", flush=True)

    lines = [f"# HeLlO projector screen on {recipe['data']['name']} (no test split)", "",
             f"- command: `python benchmarks/hello_screen.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
             f"- shipped images: {len(x)} ({args.images}); teacher: {args.teacher}",
             f"- views: {args.views} fitting + {args.fresh} fresh DSA views per image; {args.steps} Adam steps, "
             f"lr {args.lr}, batch {args.batch}, seed {args.seed}",
             f"- machine: {platform.system()} {platform.machine()}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}; date {time.strftime('%Y-%m-%d')}; wall-clock {time.time() - t_start:.0f} s",
             "", "| variant | encoder overrides | D | rank | label bytes | agreement (fit views) | "
             "agreement (fresh views) | KL (fresh) | rotation acc | encoder s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        over = ", ".join(f"{k}={v}" for k, v in r["over"].items()) or "(recipe)"
        lines.append(f"| {r['variant']} | {over} | {r['dim']} | {r['rank']} | {r['bytes']:,} | {100 * r['agree_fit']:.1f} | "
                     f"{100 * r['agree_fresh']:.1f} | {r['kl_fresh']:.3f} | {r['rotation_acc']} | {r['encoder_s']:.0f} |")
    out = Path(args.out or ROOT / f"benchmarks/results/hello_screen_{recipe['data']['name']}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
