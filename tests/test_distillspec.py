"""DistillSpec (K17): the acceptance diagnostic matches the decoder, data-mix sources, config errors."""
import pytest
import torch

import potstill
from conftest import TINY_LM, build_lm_method
from potstill.core.config import ConfigError
from potstill.decoding import verify
from potstill.methods.lm.distillspec import acceptance
from potstill.models import build_model

GPT = TINY_LM


@pytest.fixture
def text(arith_text):
    return arith_text


def build(text, **cfg):
    return build_lm_method("distillspec", text, **cfg)


def test_acceptance_is_one_minus_tv_on_a_hand_case():
    p = torch.tensor([0.5, 0.5, 0.0]).clamp_min(1e-30).log()
    q = torch.tensor([0.25, 0.25, 0.5]).log()
    sampled, greedy = acceptance(q, p)
    assert sampled.item() == pytest.approx(0.5, abs=1e-6)       # Σ min(p, q) = 0.25 + 0.25 + 0
    assert greedy.item() == 0.0                                   # argmax q = 2, argmax p = 0
    tv = potstill.losses.divergences.token_divergence(q, p, "tv")
    assert sampled.item() == pytest.approx(1 - tv.item(), abs=1e-6)


def test_acceptance_equals_the_decoders_empirical_accept_rate():
    g = torch.Generator().manual_seed(0)
    p_logits, q_logits = torch.randn(6, generator=g) * 2, torch.randn(6, generator=g) * 2
    want, _ = acceptance(q_logits, p_logits)
    p, q = p_logits.softmax(-1), q_logits.softmax(-1)
    n, acc = 20000, 0
    for _ in range(n):
        d = torch.multinomial(q, 1, generator=g)
        n_acc, _ = verify(torch.stack([p, p]), q[None], d, generator=g)
        acc += n_acc
    assert acc / n == pytest.approx(want.item(), abs=0.015)      # 3.5 standard errors at n = 20000


def test_data_mix_picks_sources_in_proportion_and_reproducibly(text):
    m = build(text, data_mix={"data": 0.2, "student": 0.5, "teacher": 0.3})
    picks = [m.source(s) for s in range(3000)]
    assert picks == [m.source(s) for s in range(3000)]
    for src, w in (("data", 0.2), ("student", 0.5), ("teacher", 0.3)):
        assert abs(picks.count(src) / 3000 - w) < 0.04
    assert {build(text).source(s) for s in range(50)} == {"student"}   # default: on-policy only


def test_loss_logs_acceptance_and_is_tv_by_default(text):
    m = build(text, prompt_len=4)
    out = m.loss({"x": text.train.x[:4], "y": text.train.y[:4]}, 0)
    assert m.cfg.divergence == "tv"
    assert 0 < out["log/accept_sampled"].item() < 1
    # on the loss positions the mean TVD and the mean sampled acceptance add up to one
    assert out["student"].item() + out["log/accept_sampled"].item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("bad, match", [({"data_mix": {"draft": 1.0}}, "unknown source"),
                                        ({"data_mix": {"data": 0.0}}, "not all zero"),
                                        ({"on_policy": 0.5}, "data_mix")])
def test_config_errors(bad, match):
    from potstill.core.config import from_dict

    with pytest.raises((ValueError, ConfigError), match=match):
        from_dict(potstill.METHODS.get("distillspec").Config, bad)


def test_student_init_loads_the_pretrained_draft(text, tmp_path):
    from potstill.core.checkpoint import atomic_save_safetensors

    torch.manual_seed(1)
    pre = build_model(GPT, text.in_shape, text.num_classes)
    atomic_save_safetensors(pre.state_dict(), tmp_path / "draft.safetensors")
    m = build(text, student_init=str(tmp_path / "draft.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(m.student.state_dict().values(), pre.state_dict().values()))
    with pytest.raises(Exception, match="student_init|draft.safetensors"):
        build(text, student_init=str(tmp_path / "missing.safetensors"))
