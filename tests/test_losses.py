import math

import pytest
import torch

from potstill.losses import hint_loss, js_divergence, kl_divergence, soft_target_kd


def test_kd_loss_golden_value():
    # teacher logits [2, 0] and student logits [0, 0] at T = 2:
    # p = softmax([1, 0]) = [e/(e+1), 1/(e+1)], q = [1/2, 1/2]
    # KL(p||q) = sum p log(2p);  loss = T^2 * KL
    t = torch.tensor([[2.0, 0.0]])
    s = torch.tensor([[0.0, 0.0]])
    p1 = math.e / (math.e + 1)
    p2 = 1 / (math.e + 1)
    kl = p1 * math.log(2 * p1) + p2 * math.log(2 * p2)
    assert kl == pytest.approx(0.11094407, abs=1e-7)  # 0.7311·ln 1.4621 + 0.2689·ln 0.5379
    assert float(soft_target_kd(s, t, 2.0)) == pytest.approx(4 * kl, rel=1e-6)


def test_kd_gradient_is_T_times_q_minus_p():
    torch.manual_seed(0)
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5)
    T = 3.0
    soft_target_kd(s, t, T).backward()
    expected = T * (torch.softmax(s / T, -1) - torch.softmax(t / T, -1)) / 4
    assert torch.allclose(s.grad, expected.detach(), atol=1e-6)


def test_kl_zero_iff_equal_and_nonnegative():
    x = torch.randn(8, 10)
    assert float(kl_divergence(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_divergence(x, torch.randn(8, 10))) > 0


def test_js_closed_form_symmetric_and_bounded():
    # disjoint one-hot-like distributions: JS -> log 2
    big = 50.0
    p = torch.tensor([[big, 0.0]])
    q = torch.tensor([[0.0, big]])
    assert float(js_divergence(p, q)) == pytest.approx(math.log(2), rel=1e-4)
    # hand case: p = [0.5, 0.5] (logits 0, 0), q = softmax([ln 3, 0]) = [0.75, 0.25]
    p = torch.tensor([[0.0, 0.0]])
    q = torch.tensor([[math.log(3.0), 0.0]])
    m = [0.625, 0.375]
    expected = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) + \
        0.5 * (0.75 * math.log(0.75 / m[0]) + 0.25 * math.log(0.25 / m[1]))
    assert float(js_divergence(p, q)) == pytest.approx(expected, rel=1e-5)
    a, b = torch.randn(6, 7), torch.randn(6, 7)
    assert float(js_divergence(a, b)) == pytest.approx(float(js_divergence(b, a)), rel=1e-5)
    with pytest.raises(ValueError):
        js_divergence(a, b, beta=1.0)


def test_hint_loss_value_and_shape_check():
    s = torch.ones(2, 3, 2, 2)
    t = torch.zeros(2, 3, 2, 2)
    assert float(hint_loss(s, t)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="project first"):
        hint_loss(torch.ones(2, 4), torch.ones(2, 5))
