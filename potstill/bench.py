"""``potstill bench SUITE``: every registered method of a suite under its fixed protocol (catalog X2).

A suite is a list of entries, each a recipe from ``recipes/`` (run from the repository root). The
reference entries (teacher, scratch, random subset) are run the same way as the methods and
reported as baselines. Every entry runs K seeds (``trainer.seed``), each in its own process and
run folder (a killed bench resumes where it stopped); dataset-distillation entries run once and
get their K seeds from the evaluation protocol (``eval.seeds``).

Each entry writes one result file, ``<results>/<suite>/<entry>.json``, in the common schema
(:mod:`potstill.report.results`) with a ``provenance`` block. Its ``key`` hashes the recipe text,
the overrides, the teacher's key, the protocol version and the code version (a hash of the
package sources), so a result is skipped while all of them are unchanged and rerun when any
of them changes. ``--quick`` runs a reduced version (shorter schedules, smaller data, 2 seeds)
into its own folders; quick results are for checking a setup, not for the leaderboard.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .core.run import machine
from .core.subrun import recipe_hash, run_recipe
from .report.results import stat, write_result


@dataclass(frozen=True)
class Entry:
    name: str
    recipe: str
    overrides: tuple[str, ...] = ()
    teacher: str = ""                           # name of the entry whose run this one distils
    teacher_override: str = "teacher.checkpoint={dir}/export/model.safetensors"
    reference: bool = False                     # a comparison row: reported under baselines
    once: bool = False                          # one run (teachers; DD: seeds are evaluation seeds)
    row: str = ""                               # the row name in the result (default: name)
    quick: tuple[str, ...] = ()                 # extra overrides under --quick
    quick_recipe: str = ""                      # another recipe under --quick


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    catalog_ids: tuple[str, ...]
    dataset: str
    protocol: str                               # bump when the protocol changes: every result reruns
    entries: tuple[Entry, ...]
    quick_dataset: str = ""
    notes: str = ""


_KD_QUICK = ("trainer.steps=150", "trainer.eval_every=150", "trainer.ckpt_every=150", "data.train_size=2000")
_GEN_QUICK = ("trainer.steps=300", "trainer.eval_every=300", "trainer.ckpt_every=300")
_LM_QUICK = ("trainer.steps=150", "trainer.eval_every=150", "trainer.ckpt_every=150")
_DD = ("random", "herding", "kcenter", "dm", "datadam", "dc", "dsa")

SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite("kd-fmnist", "Classifier KD on Fashion-MNIST (10k labels), ConvNet-128 -> ConvNet-32", ("B1", "B2", "K7"),
          "fmnist: 10k labelled train, 5k val, 10k test", "kd-v1",
          (Entry("teacher", "recipes/kd/teacher_fmnist.yaml", reference=True, once=True,
                 quick=_KD_QUICK + ("trainer.log_every=50",)),
           Entry("scratch", "recipes/kd/scratch_fmnist.yaml", reference=True, quick=_KD_QUICK),
           *(Entry(m, f"recipes/kd/{m}_fmnist.yaml", teacher="teacher", quick=_KD_QUICK)
             for m in ("kd", "fitnets", "label_free"))),
          quick_dataset="fmnist: 2k labelled train, 150 steps",
          notes="Hyperparameters are the recipes' (chosen on the validation split by benchmarks/kd_fmnist.py)."),
    Suite("dd-fmnist", "Dataset distillation on Fashion-MNIST, IPC 10, protocol dd-v1", ("B3", "B4", "B5", "D2"),
          "fmnist: 55k train, 5k val, 10k test", "dd-v1",
          tuple(Entry(m, f"recipes/dd/fmnist_ipc10/{m}.yaml", once=True, row=f"{m}/ipc10",
                      reference=m == "random", quick_recipe=f"recipes/dd/digits/{m}.yaml",
                      quick=("eval.seeds=2",)) for m in _DD),
          quick_dataset="scikit-learn digits, IPC 10 (the laptop-sized recipes/dd/digits), 2 evaluation seeds",
          notes="One distillation per method; seeds are the protocol's evaluation seeds."),
    Suite("gen-toy2d", "Generative distillation on a toy 2-D ring of 8 Gaussians", ("B7", "B8", "B9", "G4"),
          "toy2d ring8 (generated)", "gen-toy2d-v1",
          (Entry("teacher", "recipes/gen/edm_toy2d.yaml", reference=True, once=True, quick=_GEN_QUICK),
           *(Entry(m, f"recipes/gen/{m}_toy2d.yaml", teacher="teacher", teacher_override="teacher.checkpoint={dir}",
                   quick=_GEN_QUICK) for m in ("progressive", "consistency", "dmd", "dmd2"))),
          quick_dataset="toy2d ring8, 300 steps"),
    Suite("gen-fmnist", "Generative distillation on Fashion-MNIST (EDM teacher)", ("B7", "B9", "G4"),
          "fmnist: 55k train", "gen-fmnist-v1",
          (Entry("teacher", "recipes/gen/edm_fmnist.yaml", reference=True, once=True, quick=_GEN_QUICK),
           *(Entry(m, f"recipes/gen/{m}_fmnist.yaml", teacher="teacher", teacher_override="teacher.checkpoint={dir}",
                   quick=("trainer.steps=30", "trainer.eval_every=30", "trainer.ckpt_every=30"))
             for m in ("dmd", "dmd2"))),
          quick_dataset="fmnist, 300 teacher steps, 30 student steps", notes="Sized for a GPU."),
    Suite("lm-text", "Token-level LM distillation on the arithmetic task", ("B10", "K17"),
          "arithmetic (generated a+b=c lines; exact-match answers)", "lm-v1",
          (Entry("teacher", "recipes/lm/teacher_arith.yaml", reference=True, once=True, quick=_LM_QUICK),
           Entry("scratch", "recipes/lm/scratch_arith.yaml", reference=True, quick=_LM_QUICK),
           Entry("token_kd", "recipes/lm/token_kd_arith.yaml", teacher="teacher", quick=_LM_QUICK),
           Entry("distillspec", "recipes/lm/distillspec_arith.yaml", teacher="teacher", quick=_LM_QUICK)),
          quick_dataset="arithmetic, 150 steps"),
)}

QUICK_SEEDS = 2


def code_version(package: Path | None = None) -> str:
    """A hash of every source file of the package: any code change gives a new version."""
    package = package or Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        h.update(f.relative_to(package).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def metrics_of(summary: dict) -> dict[str, list[float]]:
    """The numbers of one run summary: ``val_*``/``test_*``, evaluation-seed lists, cost."""
    out: dict[str, list[float]] = {}
    for split in ("val", "test"):
        for k, v in (summary.get(split) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "tokens":
                out[f"{split}_{k}"] = [float(v)]
    ev = summary.get("eval") or {}
    for k in ("val_acc", "test_acc"):
        if isinstance(ev.get(k), dict) and ev[k].get("values"):
            out[k] = [float(x) for x in ev[k]["values"]]
    for k in ("wall_clock_s", "peak_rss_mib", "params", "label_bytes", "latency_ms"):
        if isinstance(summary.get(k), (int, float)):
            out[k] = [float(summary[k])]
    if "soft_labels" in summary:
        out["soft_labels"] = [1.0 if summary["soft_labels"] else 0.0]
    return out


@dataclass
class Plan:
    suite: Suite
    entries: list[Entry]
    seeds: int
    quick: bool
    results: Path
    runs: Path
    root: Path
    threads: int = 0
    keys: dict[str, str] = field(default_factory=dict)

    def recipe(self, e: Entry) -> Path:
        return self.root / (e.quick_recipe if self.quick and e.quick_recipe else e.recipe)

    def overrides(self, e: Entry, seed: int) -> list[str]:
        ov = list(e.overrides) + (list(e.quick) if self.quick else [])
        if e.teacher:
            ov.append(e.teacher_override.format(dir=self.run_dir(self.entry(e.teacher), 0)))
        if not e.once:
            ov.append(f"trainer.seed={seed}")
        return ov

    def entry(self, name: str) -> Entry:
        for e in self.suite.entries:
            if e.name == name:
                return e
        raise KeyError(f"suite {self.suite.name} has no entry {name!r}")

    def run_dir(self, e: Entry, seed: int) -> Path:
        return self.runs / (e.name if e.once else f"{e.name}-s{seed}")

    def n_seeds(self, e: Entry) -> int:
        return 1 if e.once else self.seeds

    def key(self, e: Entry) -> str:
        """What the entry's result depends on; the teacher's key is part of it."""
        if e.name not in self.keys:
            parts = {"recipe": recipe_hash(self.recipe(e)),
                     "overrides": list(e.overrides) + (list(e.quick) if self.quick else []),
                     "teacher": self.key(self.entry(e.teacher)) if e.teacher else "", "seeds": self.n_seeds(e),
                     "protocol": self.suite.protocol, "code": code_version(), "quick": self.quick}
            self.keys[e.name] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
        return self.keys[e.name]

    def result_path(self, e: Entry) -> Path:
        return self.results / self.suite.name / f"{e.name}.json"

    def up_to_date(self, e: Entry) -> bool:
        p = self.result_path(e)
        if not p.is_file():
            return False
        try:
            return json.loads(p.read_text()).get("provenance", {}).get("key") == self.key(e)
        except ValueError:
            return False


def plan(suite: str, methods: list[str] | None = None, seeds: int = 3, quick: bool = False,
         results: str | Path = "benchmarks/results/bench", runs: str | Path = "runs/bench", root: str | Path = ".",
         threads: int = 0) -> Plan:
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    s = SUITES[suite]
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    names = [e.name for e in s.entries]
    for m in methods or []:
        if m not in names:
            raise ValueError(f"suite {suite} has no method {m!r}; it has {', '.join(names)}")
    wanted = set(methods or names)
    for e in s.entries:                      # a method brings the teacher it needs
        if e.name in wanted and e.teacher:
            wanted.add(e.teacher)
    tag = f"{suite}-quick" if quick else suite
    root = Path(root).resolve()
    if not (root / s.entries[0].recipe).is_file():
        raise FileNotFoundError(f"{root / s.entries[0].recipe} not found: run potstill bench from the repository root")
    return Plan(s, [e for e in s.entries if e.name in wanted], QUICK_SEEDS if quick else seeds, quick,
                Path(results) / ("quick" if quick else ""), Path(runs) / tag, root, threads)


def run(p: Plan, progress: bool = True, log=print) -> dict[str, str]:
    """Run what is not up to date; write one result per entry. Returns {entry: 'done'|'skipped'}."""
    from tqdm import tqdm

    todo = [e for e in p.entries if not p.up_to_date(e)]
    status = {e.name: "skipped" for e in p.entries if e not in todo}
    for name in status:
        log(f"[{p.suite.name}] {name}: up to date ({p.result_path(p.entry(name))})")
    cells = [(e, s) for e in todo for s in range(p.n_seeds(e))]
    neutral = ["trainer.progress=false"] + ([f"trainer.threads={p.threads}"] if p.threads else [])
    bar = tqdm(total=len(cells), desc=f"bench {p.suite.name}{' --quick' if p.quick else ''}", unit="run",
               disable=not progress)
    summaries: dict[str, list[dict]] = {}
    for e, seed in cells:
        bar.set_postfix_str(f"{e.name} seed {seed}")
        out = p.run_dir(e, seed)
        if out.exists() and _stale(out, p, e):
            shutil.rmtree(out)      # made by other code or settings: redo it (a killed run of this key resumes)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_key.txt").write_text(p.key(e) + "\n")
        summaries.setdefault(e.name, []).append(
            run_recipe(p.recipe(e), p.overrides(e, seed) + neutral, out, log=out.parent / f"{out.name}.log", root=p.root))
        bar.update(1)
        if len(summaries[e.name]) == p.n_seeds(e):
            write_entry(p, e, summaries[e.name])
            status[e.name] = "done"
    bar.close()
    return status


def _stale(out: Path, p: Plan, e: Entry) -> bool:
    f = out / "bench_key.txt"
    return not f.is_file() or f.read_text().strip() != p.key(e)


def write_entry(p: Plan, e: Entry, summaries: list[dict]) -> Path:
    merged: dict[str, list[float]] = {}
    for s in summaries:
        for k, v in metrics_of(s).items():
            merged.setdefault(k, []).extend(v)
    row = e.row or e.name
    numbers = {f"{row}/{k}": stat(v) for k, v in sorted(merged.items())}
    seeds = list(range(len(merged.get("test_acc", [0])))) if e.once else list(range(p.n_seeds(e)))
    command = f"potstill bench {p.suite.name} --methods {e.name}" + (" --quick" if p.quick else "") + \
        ("" if p.quick or p.seeds == 3 else f" --seeds {p.seeds}")
    result = {"catalog_ids": list(p.suite.catalog_ids), "command": command,
              "dataset": p.suite.quick_dataset if p.quick and p.suite.quick_dataset else p.suite.dataset,
              "seeds": seeds,
              "metrics": {} if e.reference else numbers, "baselines": numbers if e.reference else {},
              "wall_clock_s": round(sum(float(s.get("run_wall_clock_s", s.get("wall_clock_s", 0))) for s in summaries), 1),
              "machine": summaries[0].get("machine") or machine(), "date": time.strftime("%Y-%m-%d"),
              "notes": f"{p.suite.title}. Protocol {p.suite.protocol}; recipe {e.quick_recipe if p.quick and e.quick_recipe else e.recipe}"
                       + (f" with {' '.join(e.overrides + (e.quick if p.quick else ()))}" if e.overrides or p.quick else "")
                       + (f"; teacher from entry '{e.teacher}'" if e.teacher else "") + (". " + p.suite.notes if p.suite.notes else ""),
              "provenance": {"key": p.key(e), "suite": p.suite.name, "entry": e.name, "protocol": p.suite.protocol,
                             "code": code_version(), "quick": p.quick}}
    return write_result(p.result_path(e), result)
