"""MGSR (K3): DAC-KL clipping on hand cases, the mass guard, span pairs and loss, SCRG revision."""
import copy

import pytest
import torch

from conftest import TINY_LM, build_lm_method
from potstill.losses.divergences import token_divergence
from potstill.methods.lm.mgsr import Clipper, dac_kl, span_correlation_loss, span_pairs
from potstill.models import build_model

GPT = TINY_LM


def fixed_clipper(vocab, lo_logit, up_logit, tau=1e-4):
    c = Clipper(vocab, 4, tau)
    with torch.no_grad():
        c.net[2].bias.copy_(torch.tensor([lo_logit, up_logit]))
    return c


def test_dac_kl_without_clipping_is_forward_kl():
    p = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    q = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).log()
    d, kept = dac_kl(q, p, fixed_clipper(4, -30.0, 30.0))           # l -> 0, u -> 1: nothing clipped
    assert d.item() == pytest.approx(token_divergence(q, p, "forward_kl").item(), abs=1e-5)
    assert kept.item() == pytest.approx(1.0, abs=1e-5)


def test_dac_kl_with_upper_quantile_half_keeps_the_top_two_tokens():
    p = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    q = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    d, kept = dac_kl(q.log(), p.log(), fixed_clipper(4, -30.0, 0.0))  # u = sigmoid(0) = 0.5
    pt, qt = torch.tensor([4 / 7, 3 / 7]), torch.tensor([1 / 3, 2 / 3])  # renormalised over tokens 0 and 1
    assert d.item() == pytest.approx(float((pt * (pt / qt).log()).sum()), abs=1e-4)
    assert kept.item() == pytest.approx(0.7, abs=1e-4)


def test_mass_guard_pushes_the_upper_quantile_up():
    c = fixed_clipper(4, -30.0, 0.0, tau=0.05)
    p = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    _, kept = dac_kl(p, p, c)                                        # student = teacher: KL term is 0
    (torch.relu(0.9 - kept) ** 2).backward()
    assert c.net[2].bias.grad[1] < 0                                 # descent raises u's logit


def test_span_pairs_follow_words_and_loss_vanishes_at_the_teacher():
    itos = list("ab +")
    word = torch.tensor([ch.isalnum() for ch in itos])
    x = torch.tensor([[0, 1, 2, 0, 0, 3, 1]])                        # "ab aa+b"
    pairs = span_pairs(x, word)
    # position k predicts x[k+1]; k, k+1 in one span iff x[k+1] and x[k+2] are both letters
    assert pairs.tolist() == [[False, False, True, False, False, False]]
    t = torch.randn(1, 7, 4)
    assert span_correlation_loss(t, t, pairs).item() == 0.0
    assert span_correlation_loss(torch.randn(1, 7, 4), t, pairs).item() > 0


@pytest.fixture
def text(arith_text):
    return arith_text


def build(text, **cfg):
    return build_lm_method("mgsr", text, **cfg)


def test_scrg_replaces_the_worst_mismatch_by_the_teachers_token_and_keeps_the_prefix(text):
    m = build(text, prompt_len=4)
    x = text.train.x[:6].clone()
    with torch.no_grad():
        t, s = m.teacher(x).logits, m.student(x)
    kl = token_divergence(s, t, "forward_kl")[:, 3:-1]
    tt = t.argmax(-1)[:, 3:-1]
    wrong = tt != x[:, 4:]
    revised, pos = m.revise(x, step=0)
    for b in range(len(x)):
        if not wrong[b].any():
            assert pos[b] == -1 and torch.equal(revised[b], x[b])
            continue
        j = int(torch.where(wrong[b], kl[b], torch.tensor(-1.0)).argmax())
        assert pos[b] == 4 + j
        assert torch.equal(revised[b, :4 + j], x[b, :4 + j]) and revised[b, 4 + j] == tt[b, j]


def test_losses_and_switches(text):
    batch = {"x": text.train.x[:4], "y": text.train.y[:4]}
    full = build(text, on_policy=1.0, prompt_len=4)
    out = full.loss(batch, 0)
    assert {"log/kept_mass", "log/span", "log/kd"} <= set(out) and torch.isfinite(out["student"])
    out["student"].backward()
    assert full.clipper.net[0].weight.grad is not None              # f_φ trains through the loss
    bare = build(text, on_policy=0.0, scrg_rounds=0, dac_kl=False, span_weight=0.0)
    assert bare.clipper is None and "log/span" not in bare.loss(batch, 0)
    teacher = build_model(GPT, text.in_shape, text.num_classes)
    same = build(text, teacher=teacher, on_policy=0.0, sft_weight=0.0)
    same.student.load_state_dict(copy.deepcopy(teacher.state_dict()))
    assert same.loss(batch, 0)["log/kd"].item() == pytest.approx(0.0, abs=1e-5)
