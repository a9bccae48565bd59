"""Token-level divergences (B10) against values computed by hand on small distributions."""
import math

import pytest
import torch

from potstill.losses.divergences import (TOKEN_DIVERGENCES, masked_token_mean, token_divergence,
                                         top_k_teacher)

P = torch.tensor([0.5, 0.25, 0.25])
Q = torch.tensor([0.25, 0.25, 0.5])


def div(kind, p=P, q=Q, **kw):
    return token_divergence(q.log().view(1, 1, -1), p.log().view(1, 1, -1), kind, **kw).item()


def kl(a, b):
    return float((a * (a / b).log()).sum())


def test_closed_form_values():
    assert div("forward_kl") == pytest.approx(0.5 * math.log(2) + 0.25 * math.log(0.5))
    assert div("reverse_kl") == pytest.approx(kl(Q, P))
    assert div("tv") == pytest.approx(0.25)
    m = 0.3 * P + 0.7 * Q
    assert div("jsd", beta=0.3) == pytest.approx(0.3 * kl(P, m) + 0.7 * kl(Q, m))
    assert div("skew_kl", beta=0.1) == pytest.approx(kl(P, 0.1 * P + 0.9 * Q))
    assert div("skew_rkl", beta=0.1) == pytest.approx(kl(Q, 0.1 * Q + 0.9 * P))


def test_zero_for_identical_inputs_and_known_asymmetry():
    for kind in TOKEN_DIVERGENCES:
        assert div(kind, p=P, q=P) == pytest.approx(0.0, abs=1e-7)
    p, q = torch.tensor([0.9, 0.1]), torch.tensor([0.5, 0.5])
    assert div("forward_kl", p, q) == pytest.approx(kl(p, q)) and kl(p, q) != pytest.approx(kl(q, p))
    assert div("reverse_kl", p, q) == pytest.approx(kl(q, p))   # reverse = forward with roles swapped


def test_jsd_endpoints_tend_to_forward_and_reverse_kl():
    assert div("jsd", beta=0.0) == 0.0 and div("jsd", beta=1.0) == 0.0
    eps = 1e-4
    assert div("jsd", beta=eps) / eps == pytest.approx(kl(P, Q), rel=1e-3)
    assert div("jsd", beta=1 - eps) / eps == pytest.approx(kl(Q, P), rel=1e-3)
    assert div("jsd", beta=0.5) <= math.log(2)
    assert div("skew_kl", beta=0.0) == pytest.approx(kl(P, Q))        # no skew: plain KL


def test_masked_mean_is_exact_under_gradient_accumulation():
    torch.manual_seed(0)
    v = torch.rand(4, 6)
    mask = torch.rand(4, 6) > 0.4
    full = masked_token_mean(v, mask)
    n = mask.sum()
    parts = masked_token_mean(v[:1], mask[:1], n) + masked_token_mean(v[1:], mask[1:], n)
    assert parts == pytest.approx(full.item())
    naive = (masked_token_mean(v[:1], mask[:1]) + masked_token_mean(v[1:], mask[1:])) / 2
    assert naive != pytest.approx(full.item())     # what per-micro-batch means would give instead


def test_gradient_of_forward_kl_is_q_minus_p():
    s = torch.zeros(1, 3, requires_grad=True)                 # student: uniform
    t = P.log().view(1, 3)
    token_divergence(s, t, "forward_kl").sum().backward()
    assert torch.allclose(s.grad, torch.full((1, 3), 1 / 3) - P)


def test_top_k_teacher_tail_policies():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = logits.softmax(-1)
    r = top_k_teacher(logits, 2).softmax(-1)
    assert torch.allclose(r, torch.tensor([[p[0, 0] / p[0, :2].sum(), p[0, 1] / p[0, :2].sum(), 0, 0]]))
    u = top_k_teacher(logits, 2, tail="uniform").softmax(-1)
    tail = (1 - p[0, :2].sum()) / 2
    assert torch.allclose(u, torch.tensor([[p[0, 0], p[0, 1], tail, tail]]), atol=1e-6)
    with pytest.raises(ValueError, match="tail"):
        top_k_teacher(logits, 2, tail="drop")
