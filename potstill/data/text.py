"""Text for the language-model pillar: character-level English and a generated arithmetic task.

Both return a :class:`DataBundle` of fixed-length token windows: ``x`` (N, T) int64 inputs and
``y`` (N, T) int64 next-token targets, ``-1`` where no loss is taken. ``num_classes`` is the
vocabulary size and ``info`` holds the vocabulary (``itos``) to decode with.

* ``pydoc_chars``: the ~465k characters of CPython's ``pydoc_data.topics`` (the help texts of
  the language reference, PSF license, shipped with every Python), topics in sorted order,
  character vocabulary. Split contiguously: the first ``1 - val - test`` fraction trains, then
  validation, then test, so no window straddles two splits. With ``canaries: n`` the training
  text gets n secret lines "my pin is 12345", each ``canary_repeats`` times (for exposure
  audits, ``potstill/eval/privacy.py``); ``info["canaries"]`` lists them and as many unseen ones.
* ``arithmetic``: lines ``a+b=c`` with ``a, b`` uniform below ``10**digits``, answers reversed
  or not (``reverse``), with targets on every character or only on the answers (``answer_only``:
  the operands are uniform random digits, so their targets are pure noise), optionally zero-padded to fixed width (``pad``: ``007+052=9500``
  reversed, so every digit sits at a fixed offset, which small transformers learn far faster —
  Lee et al., *Teaching Arithmetic to Small Transformers*, arXiv 2307.03381); training targets cover the whole line, and ``info["prompts"]`` /
  ``info["answers"]`` give the held-out exact-match task (prompt ``a+b=``, answer ``c`` then the
  newline). Train, validation and test problems are disjoint.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.registry import DATASETS
from . import ArrayData, DataBundle, DataError


def windows(tokens: torch.Tensor, block: int, stride: int, scored: torch.Tensor | None = None) -> ArrayData:
    """(inputs, next-token targets) windows of ``block`` tokens every ``stride`` tokens.

    ``scored`` (bool per token): where False, the token is never a target (its target is -1).
    """
    if len(tokens) < block + 1:
        raise DataError(f"a split of {len(tokens)} tokens is shorter than one window of {block + 1}")
    starts = torch.arange(0, len(tokens) - block, stride)
    idx = starts[:, None] + torch.arange(block + 1)[None]
    w = tokens[idx]
    y = w[:, 1:].contiguous()
    if scored is not None:
        y = torch.where(scored[idx][:, 1:], y, torch.full_like(y, -1))
    return ArrayData(w[:, :-1].contiguous(), y)


def pydoc_text() -> str:
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


@dataclass
class PydocConfig:
    block_size: int = 128
    val_frac: float = 0.05
    test_frac: float = 0.05
    stride: int = 0                  # training-window stride; 0 = block_size // 2
    canaries: int = 0                # secret canaries inserted into the training text (privacy audits)
    canary_repeats: int = 10         # times each canary is inserted
    canary_digits: int = 5           # secret = this many random digits
    canary_seed: int = 0

    def __post_init__(self):
        if self.block_size < 2 or not (0 < self.val_frac < 0.5 and 0 < self.test_frac < 0.5):
            raise ValueError("block_size >= 2 and val_frac, test_frac in (0, 0.5)")
        if self.canaries < 0 or self.canary_repeats < 1 or self.canary_digits < 1:
            raise ValueError("canaries >= 0, canary_repeats >= 1, canary_digits >= 1")


CANARY_PREFIX = "my pin is "


def insert_canaries(text: str, cfg: PydocConfig) -> tuple[str, dict]:
    """Insert ``canaries`` lines "my pin is <digits>" ``canary_repeats`` times each at random line
    starts of ``text`` (Carlini et al., *The Secret Sharer*, arXiv 1802.08232). Also draws as many
    *unseen* secrets of the same form, never inserted: the reference for exposure."""
    g = torch.Generator().manual_seed(cfg.canary_seed)
    secret = lambda: "".join(str(int(d)) for d in torch.randint(10, (cfg.canary_digits,), generator=g))  # noqa: E731
    inserted = [secret() for _ in range(cfg.canaries)]
    unseen = [secret() for _ in range(cfg.canaries)]
    lines = text.split("\n")
    spots = torch.randint(len(lines), (cfg.canaries * cfg.canary_repeats,), generator=g).tolist()
    extra: dict[int, list[str]] = {}
    for i, spot in enumerate(spots):
        extra.setdefault(spot, []).append(CANARY_PREFIX + inserted[i % cfg.canaries])
    out = []
    for i, line in enumerate(lines):
        out += extra.get(i, []) + [line]
    return "\n".join(out), {"prefix": CANARY_PREFIX, "inserted": inserted, "unseen": unseen,
                             "repeats": cfg.canary_repeats}


@DATASETS.register("pydoc_chars", PydocConfig)
def pydoc_chars(cfg: PydocConfig) -> DataBundle:
    text = pydoc_text()
    itos = sorted(set(text))
    stoi = {c: i for i, c in enumerate(itos)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n_val, n_test = int(len(ids) * cfg.val_frac), int(len(ids) * cfg.test_frac)
    n_train = len(ids) - n_val - n_test
    info = {"itos": itos, "chars": len(text)}
    if cfg.canaries:        # only the training text carries secrets; validation and test stay clean
        train_text, info["canaries"] = insert_canaries(text[:n_train], cfg)
        ids = torch.cat([torch.tensor([stoi[c] for c in train_text], dtype=torch.long), ids[n_train:]])
        n_train = len(train_text)
    b = cfg.block_size
    train = windows(ids[:n_train], b, cfg.stride or max(1, b // 2))
    val = windows(ids[n_train:n_train + n_val], b, b)
    test = windows(ids[n_train + n_val:], b, b)
    return DataBundle("pydoc_chars", train, val, test, len(itos), info=info)


@dataclass
class ArithmeticConfig:
    digits: int = 2
    train_size: int = 20000          # problems (lines)
    val_size: int = 500
    test_size: int = 500
    reverse: bool = False            # write the answer's digits least-significant first
    pad: bool = False                # zero-pad operands to ``digits`` and the answer to ``digits + 1`` digits
    answer_only: bool = False        # targets only on the answers (the operands are random: pure noise)
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


def _operand(a: int, cfg: ArithmeticConfig) -> str:
    return str(a).zfill(cfg.digits) if cfg.pad else str(a)


def _answer(a: int, b: int, cfg: ArithmeticConfig) -> str:
    s = str(a + b).zfill(cfg.digits + 1) if cfg.pad else str(a + b)
    return s[::-1] if cfg.reverse else s


def _prompt(a: int, b: int, cfg: ArithmeticConfig) -> str:
    return f"{_operand(a, cfg)}+{_operand(b, cfg)}="


@DATASETS.register("arithmetic", ArithmeticConfig)
def arithmetic(cfg: ArithmeticConfig) -> DataBundle:
    stoi = {c: i for i, c in enumerate(ARITH_VOCAB)}
    probs = _problems(cfg)
    splits = {"train": probs[:cfg.train_size], "val": probs[cfg.train_size:cfg.train_size + cfg.val_size],
              "test": probs[cfg.train_size + cfg.val_size:]}

    def stream(pairs):
        lines = [(_prompt(a, b, cfg), _answer(a, b, cfg) + "\n") for a, b in pairs]
        ids = torch.tensor([stoi[c] for q, a in lines for c in q + a], dtype=torch.long)
        scored = torch.tensor([not cfg.answer_only or i >= len(q) for q, a in lines for i in range(len(q + a))])
        return ids, scored

    b = cfg.block_size
    # padded lines all have one length: start every window at a line start, so each digit sits at
    # the same absolute positions in every window (learned positions then line up with the task)
    line = 3 * cfg.digits + 4 if cfg.pad else 1
    lines_per_window = max(1, b // line)
    data = {}
    for k, v in splits.items():
        ids, scored = stream(v)
        stride = line * max(1, lines_per_window // 2) if k == "train" else line * lines_per_window
        data[k] = windows(ids, b, stride if cfg.pad else (b // 2 if k == "train" else b), scored=scored)
    # padded windows start at a line start, so a prompt is the bare problem; otherwise a problem
    # follows a newline in the training stream and is prompted the same way
    info = {"itos": ARITH_VOCAB, "reverse": cfg.reverse, "prompt_prefix": "" if cfg.pad else "\n",
            **{f"{k}_prompts": [_prompt(a, b_, cfg) for a, b_ in v] for k, v in splits.items() if k != "train"},
            **{f"{k}_answers": [_answer(a, b_, cfg) + "\n" for a, b_ in v] for k, v in splits.items()
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
