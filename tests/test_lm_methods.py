"""Token-level LM distillation (B10): on-policy schedule, generated batches, zero loss at the teacher."""
import copy

import pytest
import torch

from conftest import TINY_LM, build_lm_method
from potstill.models import build_model

GPT = TINY_LM


@pytest.fixture
def text(arith_text):
    return arith_text


def method(text, **cfg):
    return build_lm_method("token_kd", text, **cfg)


def test_on_policy_steps_are_a_seeded_fraction(text):
    m = method(text, on_policy=0.3)
    picks = [m.generated(s) for s in range(2000)]
    assert picks == [m.generated(s) for s in range(2000)]          # a pure function of (seed, step)
    assert 0.26 < sum(picks) / 2000 < 0.34
    assert not any(method(text).generated(s) for s in range(100))  # λ = 0: always the data


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "tv", "skew_kl", "skew_rkl"])
def test_student_equal_to_teacher_has_zero_loss_on_and_off_policy(text, kind):
    teacher = build_model(GPT, text.in_shape, text.num_classes)
    m = method(text, student=copy.deepcopy(teacher), teacher=teacher, divergence=kind, on_policy=1.0, prompt_len=4)
    batch = {"x": text.train.x[:4], "y": text.train.y[:4]}
    assert m.loss(batch, 0)["student"].item() == pytest.approx(0.0, abs=1e-6)
    m.cfg.on_policy = 0.0
    assert m.loss(batch, 0)["student"].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("sequence_kd", [False, True])
def test_generated_batches_keep_the_prompt_and_come_from_the_right_model(text, sequence_kd):
    m = method(text, on_policy=1.0, prompt_len=5, sequence_kd=sequence_kd)
    x = text.train.x[:3]
    seq = m.generate(x, step=7)
    assert seq.shape == x.shape and torch.equal(seq[:, :5], x[:, :5])
    lm = m.teacher.model if sequence_kd else m.student
    want = lm.generate(x[:, :5], x.shape[1] - 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(seq, want)


def test_on_policy_gradient_only_from_generated_positions(text):
    m = method(text, on_policy=1.0, prompt_len=6)
    x = text.train.x[:2]
    seen = {}

    def spy(module, args, out):
        if out.requires_grad:          # the training forward, not the sampling ones
            out.retain_grad()
            seen["logits"] = out

    h = m.student.register_forward_hook(spy)
    m.loss({"x": x, "y": text.train.y[:2]}, 0)["student"].backward()
    h.remove()
    g = seen["logits"].grad.abs().sum(-1)
    assert (g[:, :5] == 0).all() and (g[:, 5:] > 0).all()   # prompt contexts carry no loss


@pytest.mark.parametrize("tail", ["renormalize", "uniform"])
@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "tv", "skew_kl", "skew_rkl"])
def test_sparse_teacher_gives_finite_losses_or_a_config_error(text, kind, tail):
    if kind == "reverse_kl" and tail == "renormalize":
        with pytest.raises(ValueError, match="tail: uniform"):
            method(text, divergence=kind, top_k=3, tail=tail)
        return
    m = method(text, divergence=kind, top_k=3, tail=tail)
    loss = m.loss({"x": text.train.x[:4], "y": text.train.y[:4]}, 0)["student"]
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in m.student.parameters() if p.grad is not None)


def test_degenerate_divergence_settings_are_rejected(text):
    with pytest.raises(ValueError, match="jsd needs"):
        method(text, divergence="jsd", beta=1.0)
    with pytest.raises(ValueError, match="tail must be"):
        method(text, top_k=2, tail="drop")


def test_offline_teacher_cache_gives_the_same_loss_without_calling_the_teacher(text):
    m = method(text, divergence="jsd")
    idx = torch.arange(4)
    batch = {"x": text.train.x[idx], "y": text.train.y[idx], "index": idx}
    want = m.loss(batch, 0)["student"]
    m.teacher.attach_cache(text.train.x)

    def boom(*a, **k):
        raise AssertionError("the teacher ran although its logits are cached")

    m.teacher.model.forward = boom
    assert torch.allclose(m.loss(batch, 0)["student"], want, atol=1e-6)
