"""Canary exposure: high for a memorised secret, about zero for one the model never saw."""
import math

import pytest
import torch
import torch.nn.functional as F

from potstill.eval.privacy import exact_exposures, exposure, secret_nll_table, sequence_nll
from potstill.models import build_model



def test_sequence_nll_of_a_uniform_model_is_k_log_v(uniform_lm):
    nll = sequence_nll(uniform_lm(10), torch.tensor([1, 2]), torch.tensor([[3, 4, 5], [6, 7, 8]]))
    assert torch.allclose(nll, torch.full((2,), 3 * math.log(10)))
    assert exposure(uniform_lm(10), torch.tensor([1, 2]), torch.tensor([3, 4, 5]), list(range(10))) == pytest.approx(0.0)


def test_memorised_canary_is_exposed_and_an_unseen_one_is_not():
    torch.manual_seed(0)
    digits = list(range(10))
    prefix = torch.tensor([10, 11, 12])                        # "the code is"
    canary = torch.tensor([3, 1, 4, 1, 5])
    model = build_model({"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32}, (16,), 13)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for step in range(300):   # text: the canary line, and lines with random digits after the same prefix
        rows = [torch.cat([prefix, canary])] + [torch.cat([prefix, torch.randint(10, (5,), generator=g)])
                                               for _ in range(15)]
        x = torch.stack(rows)
        loss = F.cross_entropy(model(x[:, :-1]).reshape(-1, 13), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    high = exposure(model, prefix, canary, digits, n_candidates=1000)
    gen = torch.Generator().manual_seed(1)
    unseen = [torch.randint(10, (5,), generator=gen) for _ in range(8)]
    low = sum(exposure(model, prefix, u, digits, n_candidates=1000) for u in unseen) / len(unseen)
    assert high == pytest.approx(math.log2(1000), abs=0.01)   # above every sampled candidate: saturates at log2 n
    assert low < 2.5               # secrets never seen: about as likely as random candidates


def test_exact_rank_when_the_space_is_enumerated(uniform_lm):
    # a model that prefers digit 3 at every position ranks "33" first: exact exposure log2(100)
    class Prefers3(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            logits = torch.zeros(*x.shape, 10)
            logits[..., 3] = 5.0
            return logits + 0 * self.w

    m = Prefers3()
    assert exposure(m, torch.tensor([1]), torch.tensor([3, 3]), list(range(10)), n_candidates=100) == pytest.approx(math.log2(100))
    # "34" is beaten by "33" only and ties with 17 others ("3x" and "x3", x != 3): rank 1 + 18
    assert exposure(m, torch.tensor([1]), torch.tensor([3, 4]), list(range(10)), n_candidates=100) == pytest.approx(
        math.log2(100) - math.log2(19))


def test_nll_table_matches_scoring_every_secret_and_exact_exposure_agrees():
    torch.manual_seed(0)
    model = build_model({"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16}, (16,), 13)
    prefix, alphabet = torch.tensor([10, 11]), [0, 2, 4, 6, 8]
    table = secret_nll_table(model, prefix, alphabet, 3)
    every = torch.tensor(alphabet)[torch.cartesian_prod(*[torch.arange(5)] * 3)]
    assert torch.allclose(table, sequence_nll(model, prefix, every), atol=1e-5)
    secret = torch.tensor([4, 0, 8])
    want = exposure(model, prefix, secret, alphabet, n_candidates=125)
    assert exact_exposures(model, prefix, [secret], alphabet)[0] == pytest.approx(want, abs=1e-9)
