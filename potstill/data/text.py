"""Text for the language-model pillar: character-level English and a generated arithmetic task.

Both return a :class:`DataBundle` of fixed-length token windows: ``x`` (N, T) int64 inputs and
``y`` (N, T) int64 next-token targets, ``-1`` where no loss is taken. ``num_classes`` is the
vocabulary size and ``info`` holds the vocabulary (``itos``) to decode with.

* ``pydoc_chars``: the ~465k characters of CPython's ``pydoc_data.topics`` (the help texts of
  the language reference, PSF license, shipped with every Python), topics in sorted order,
  character vocabulary. Split contiguously: the first ``1 - val - test`` fraction trains, then
  validation, then test, so no window straddles two splits.
* ``arithmetic``: lines ``a+b=c`` with ``a, b`` uniform below ``10**digits``, answers reversed
  or not (``reverse``); training targets cover the whole line, and ``info["prompts"]`` /
  ``info["answers"]`` give the held-out exact-match task (prompt ``a+b=``, answer ``c`` then the
  newline). Train, validation and test problems are disjoint.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.registry import DATASETS
from . import ArrayData, DataBundle, DataError


def windows(tokens: torch.Tensor, block: int, stride: int) -> ArrayData:
    """(inputs, next-token targets) windows of ``block`` tokens every ``stride`` tokens."""
    if len(tokens) < block + 1:
        raise DataError(f"a split of {len(tokens)} tokens is shorter than one window of {block + 1}")
    starts = torch.arange(0, len(tokens) - block, stride)
    idx = starts[:, None] + torch.arange(block + 1)[None]
    w = tokens[idx]
    return ArrayData(w[:, :-1].contiguous(), w[:, 1:].contiguous())


def pydoc_text() -> str:
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


@dataclass
class PydocConfig:
    block_size: int = 128
    val_frac: float = 0.05
    test_frac: float = 0.05
    stride: int = 0                  # training-window stride; 0 = block_size // 2

    def __post_init__(self):
        if self.block_size < 2 or not (0 < self.val_frac < 0.5 and 0 < self.test_frac < 0.5):
            raise ValueError("block_size >= 2 and val_frac, test_frac in (0, 0.5)")


@DATASETS.register("pydoc_chars", PydocConfig)
def pydoc_chars(cfg: PydocConfig) -> DataBundle:
    text = pydoc_text()
    itos = sorted(set(text))
    stoi = {c: i for i, c in enumerate(itos)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n_val, n_test = int(len(ids) * cfg.val_frac), int(len(ids) * cfg.test_frac)
    n_train = len(ids) - n_val - n_test
    b = cfg.block_size
    train = windows(ids[:n_train], b, cfg.stride or max(1, b // 2))
    val = windows(ids[n_train:n_train + n_val], b, b)
    test = windows(ids[n_train + n_val:], b, b)
    return DataBundle("pydoc_chars", train, val, test, len(itos), info={"itos": itos, "chars": len(text)})


@dataclass
class ArithmeticConfig:
    digits: int = 2
    train_size: int = 20000          # problems (lines)
    val_size: int = 500
    test_size: int = 500
    reverse: bool = False            # write the answer's digits least-significant first
    block_size: int = 64
    seed: int = 0

    def __post_init__(self):
        if self.digits < 1 or min(self.train_size, self.val_size, self.test_size) < 1:
            raise ValueError("digits and the split sizes must be >= 1")


ARITH_VOCAB = list("0123456789+=\n")


def _problems(cfg: ArithmeticConfig) -> list[tuple[int, int]]:
    g = torch.Generator().manual_seed(cfg.seed)
    hi = 10 ** cfg.digits
    need = cfg.train_size + cfg.val_size + cfg.test_size
    if need > hi * hi:
        raise DataError(f"only {hi * hi} distinct {cfg.digits}-digit problems exist, {need} were asked for")
    perm = torch.randperm(hi * hi, generator=g)[:need]   # distinct pairs: the splits never share a problem
    return [(int(i) // hi, int(i) % hi) for i in perm]


def _answer(a: int, b: int, reverse: bool) -> str:
    s = str(a + b)
    return s[::-1] if reverse else s


@DATASETS.register("arithmetic", ArithmeticConfig)
def arithmetic(cfg: ArithmeticConfig) -> DataBundle:
    stoi = {c: i for i, c in enumerate(ARITH_VOCAB)}
    probs = _problems(cfg)
    splits = {"train": probs[:cfg.train_size], "val": probs[cfg.train_size:cfg.train_size + cfg.val_size],
              "test": probs[cfg.train_size + cfg.val_size:]}

    def stream(pairs):
        text = "".join(f"{a}+{b}={_answer(a, b, cfg.reverse)}\n" for a, b in pairs)
        return torch.tensor([stoi[c] for c in text], dtype=torch.long)

    b = cfg.block_size
    data = {k: windows(stream(v), b, b // 2 if k == "train" else b) for k, v in splits.items()}
    info = {"itos": ARITH_VOCAB, "reverse": cfg.reverse,
            **{f"{k}_prompts": [f"{a}+{b_}=" for a, b_ in v] for k, v in splits.items() if k != "train"},
            **{f"{k}_answers": [_answer(a, b_, cfg.reverse) + "\n" for a, b_ in v] for k, v in splits.items()
               if k != "train"}}
    return DataBundle("arithmetic", data["train"], data["val"], data["test"], len(ARITH_VOCAB), info=info)


def encode(text: str, itos: list[str]) -> torch.Tensor:
    stoi = {c: i for i, c in enumerate(itos)}
    missing = sorted(set(text) - set(stoi))
    if missing:
        raise DataError(f"characters {missing!r} are not in the vocabulary")
    return torch.tensor([stoi[c] for c in text], dtype=torch.long)


def decode(ids, itos: list[str]) -> str:
    return "".join(itos[int(i)] for i in ids)
