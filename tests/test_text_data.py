"""Text datasets for the LM pillar and the LM metrics."""
import math

import pytest
import torch

from potstill.data import load_dataset
from potstill.data.text import ARITH_VOCAB, decode, pydoc_text, windows
from potstill.eval.lm import exact_match, token_nll


def test_windows_are_shifted_by_one():
    w = windows(torch.arange(10), 4, 2)
    assert torch.equal(w.x[0], torch.tensor([0, 1, 2, 3])) and torch.equal(w.y[0], torch.tensor([1, 2, 3, 4]))
    assert torch.equal(w.x[1], torch.tensor([2, 3, 4, 5])) and len(w) == 3


def test_pydoc_splits_are_contiguous_and_decode_to_the_text():
    b = load_dataset({"name": "pydoc_chars", "block_size": 64})
    text, itos = pydoc_text(), b.info["itos"]
    assert b.num_classes == len(itos) == len(set(text))
    assert decode(b.train.x[0], itos) == text[:64]
    n_train = len(text) - 2 * int(len(text) * 0.05)
    assert decode(b.val.x[0], itos) == text[n_train:n_train + 64]   # validation starts where training ends
    assert b.train.x.dtype == torch.long and b.in_shape == (64,)


def test_arithmetic_splits_are_disjoint_and_answers_right():
    b = load_dataset({"name": "arithmetic", "digits": 2, "train_size": 300, "val_size": 50, "test_size": 50,
                      "block_size": 32})
    val, test = set(b.info["val_prompts"]), set(b.info["test_prompts"])
    assert not val & test and len(val) == 50
    for p, a in zip(b.info["test_prompts"], b.info["test_answers"]):
        x, y = p[:-1].split("+")
        assert int(a) == int(x) + int(y) and a.endswith("\n")
    rev = load_dataset({"name": "arithmetic", "digits": 2, "train_size": 10, "val_size": 5, "test_size": 5,
                        "reverse": True, "block_size": 16})
    p, a = rev.info["val_prompts"][0], rev.info["val_answers"][0]
    assert int(a[:-1][::-1]) == sum(int(t) for t in p[:-1].split("+"))
    pad = load_dataset({"name": "arithmetic", "digits": 3, "train_size": 10, "val_size": 50, "test_size": 5,
                        "reverse": True, "pad": True, "block_size": 16})
    for p, a in zip(pad.info["val_prompts"], pad.info["val_answers"]):   # fixed widths: 3+1+3+1 and 4+1
        assert len(p) == 8 and len(a) == 5 and int(a[:-1][::-1]) == sum(int(t) for t in p[:-1].split("+"))
    ans = load_dataset({"name": "arithmetic", "digits": 3, "train_size": 10, "val_size": 5, "test_size": 5,
                        "pad": True, "answer_only": True, "block_size": 13})     # one 13-character line per window
    x, y = ans.val.x[0], ans.val.y[0]
    # inputs "aaa+bbb=cccc\n"; targets "aa+bbb=cccc\n" + the next operand: only the answer and newline are scored
    assert (y[:7] == -1).all() and (y[7:12] >= 0).all() and y[11].item() == ARITH_VOCAB.index("\n") and y[12] == -1


class Oracle(torch.nn.Module):
    """Always predicts token (input + 1) mod V with probability ~1: a hand-checkable LM."""

    def __init__(self, v):
        super().__init__()
        self.v, self.w = v, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, cache=None):
        return 50.0 * torch.nn.functional.one_hot((x + 1) % self.v, self.v).float()

    def generate(self, prompt, n, greedy=True):
        out = [prompt]
        for _ in range(n):
            out.append((out[-1][:, -1:] + 1) % self.v)
        return torch.cat(out, 1)


def test_nll_and_exact_match_on_a_known_model(uniform_lm):
    w = windows(torch.arange(20) % 5, 4, 4)
    m = token_nll(Oracle(5), w)
    assert m["nll"] == pytest.approx(0.0, abs=1e-6) and m["tokens"] == 16
    itos = list("abcde")
    assert exact_match(Oracle(5), ["ab", "cd", "e"], ["cd", "ea", "b"], itos) == pytest.approx(100 * 2 / 3)
    assert math.isclose(token_nll(uniform_lm(5), w)["bpc"], math.log2(5), rel_tol=1e-6)

