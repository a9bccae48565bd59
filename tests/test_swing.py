"""Swing distillation (K11): privacy likelihood, temperature swing, noise only on private positions."""
import pytest
import torch

from conftest import TINY_LM, build_lm_method
from potstill.methods.lm.swing import privacy_likelihood, swing_targets

GPT = TINY_LM


def test_privacy_likelihood_marks_private_targets_and_ignores_padding():
    private = torch.tensor([False, True, False])
    y = torch.tensor([[0, 1, 2, -1, 1]])
    assert privacy_likelihood(y, private).tolist() == [[0.0, 1.0, 0.0, 0.0, 1.0]]


def test_temperature_swings_and_noise_touches_only_private_positions():
    z = torch.randn(1, 3, 5)
    pi = torch.tensor([[0.0, 1.0, 0.5]])
    noisy, temp = swing_targets(z, pi, 2.0, 20.0, 1.0, torch.Generator().manual_seed(0))
    assert temp.tolist() == [[2.0, 20.0, 11.0]]
    assert torch.equal(noisy[0, 0], z[0, 0]) and not torch.allclose(noisy[0, 1], z[0, 1])
    # the private soft target is close to uniform: high temperature flattens it
    p_priv = torch.softmax(noisy[0, 1] / 20.0, -1)
    assert (p_priv.max() - p_priv.min()) < (torch.softmax(z[0, 1] / 2.0, -1).max() - torch.softmax(z[0, 1] / 2.0, -1).min())


def test_laplace_noise_has_the_right_scale():
    z = torch.zeros(200_000, 1)
    noisy, _ = swing_targets(z, torch.ones(200_000), 1.0, 1.0, 2.0, torch.Generator().manual_seed(0))
    assert noisy.abs().mean().item() == pytest.approx(2.0, rel=0.02)     # E|Laplace(0, b)| = b


@pytest.fixture
def text(arith_text):
    return arith_text


def build(text, **cfg):
    return build_lm_method("swing", text, **cfg)


def test_private_tokens_get_no_hard_label_gradient_unless_asked(text):
    batch = {"x": text.train.x[:4], "y": text.train.y[:4]}
    seen = {}

    def grads(m):
        def spy(module, args, out):
            out.retain_grad()
            seen["s"] = out
        h = m.student.register_forward_hook(spy)
        m.loss(batch, 0)["student"].backward()
        h.remove()
        return seen["s"].grad

    digits = torch.tensor([c.isdigit() for c in text.info["itos"]])
    private = digits[batch["y"].clamp_min(0)] & (batch["y"] >= 0)
    # alpha 0: only CE. Swing drops the private positions' hard labels; plain KD keeps them
    g = grads(build(text, alpha=0.0))
    assert (g[private].abs().sum(-1) == 0).all() and (g[~private & (batch["y"] >= 0)].abs().sum(-1) > 0).all()
    g = grads(build(text, alpha=0.0, swing=False, private_ce=True))
    assert (g[private].abs().sum(-1) > 0).all()


def test_noise_is_finite_even_where_the_uniform_draw_is_zero(monkeypatch):
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros(a[0]))     # the one value that gave -inf
    noisy, _ = swing_targets(torch.zeros(2, 3), torch.tensor([0.0, 1.0]), 2.0, 20.0, 1.0)
    assert torch.isfinite(noisy).all() and torch.equal(noisy[0], torch.zeros(3))


def test_a_student_copying_the_teacher_is_pushed_flatter_only_on_private_tokens(text):
    import copy

    batch = {"x": text.train.x[:4], "y": text.train.y[:4]}
    for swing, want_zero in ((False, True), (True, False)):
        m = build(text, alpha=1.0, swing=swing, noise_scale=0.0)
        m.student.load_state_dict(copy.deepcopy(m.teacher.model.state_dict()))
        seen = {}

        def spy(module, args, out):
            out.retain_grad()
            seen["s"] = out

        h = m.student.register_forward_hook(spy)
        loss = m.loss(batch, 0)["student"]
        h.remove()
        assert (loss.item() < 1e-6) == want_zero        # plain KD: the teacher's copy is optimal
        if swing:
            loss.backward()
            s, g = seen["s"], seen["s"].grad
            private = torch.tensor([c.isdigit() for c in text.info["itos"]])[batch["y"]]
            top = s.argmax(-1, keepdim=True)
            # descent lowers each private position's top logit (a flatter distribution) ...
            assert (g.gather(-1, top).squeeze(-1)[private] > 0).all()
            # ... and leaves the public positions where they are
            assert g[~private].abs().max() < 1e-7
