"""Swing distillation (K11): privacy likelihood, temperature swing, noise only on private positions."""
import pytest
import torch

from conftest import TINY_LM, build_lm_method
from potstill.methods.lm.swing import (context_keys, hashed_uniform, laplace_from_uniform, privacy_likelihood,
                                      shield_private_vocab, swing_targets)

GPT = TINY_LM


def test_privacy_likelihood_marks_private_targets_and_ignores_padding():
    private = torch.tensor([False, True, False])
    y = torch.tensor([[0, 1, 2, -1, 1]])
    assert privacy_likelihood(y, private).tolist() == [[0.0, 1.0, 0.0, 0.0, 1.0]]


def test_temperature_swings_and_noise_touches_only_private_positions():
    z = torch.randn(1, 3, 5)
    pi = torch.tensor([[0.0, 1.0, 0.5]])
    log_clean = swing_targets(z, pi, 2.0, 20.0, 0.0)
    assert torch.allclose(log_clean[0, 1], torch.log_softmax(z[0, 1] / 20.0, -1))      # T = T_max
    assert torch.allclose(log_clean[0, 2], torch.log_softmax(z[0, 2] / 11.0, -1))      # T = T_0 + ½(T_max − T_0)
    log_noisy = swing_targets(z, pi, 2.0, 20.0, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(log_noisy[0, 0], torch.log_softmax(z[0, 0] / 2.0, -1))       # public: untouched
    assert not torch.allclose(log_noisy[0, 1], log_clean[0, 1])
    assert torch.allclose(log_noisy.exp().sum(-1), torch.ones(1, 3))                    # still distributions


def test_temperature_alone_keeps_the_teachers_ranking_of_secrets():
    # why the noise is needed: a rank-based audit sees the same order at any temperature
    z = torch.randn(4, 10, dtype=torch.float64)               # 4 digit positions, 10 digits
    seqs = torch.randint(10, (500, 4)).unique(dim=0)

    def score(log_p):
        return log_p.gather(1, seqs.T).sum(0)

    order = score(torch.log_softmax(z, -1)).argsort()
    for T in (2.0, 20.0, 100.0):
        assert torch.equal(score(torch.log_softmax(z / T, -1)).argsort(), order)


def test_laplace_noise_has_the_calibrated_scale():
    u = torch.rand(400_000).clamp(1e-7, 1 - 1e-7)
    assert laplace_from_uniform(u).abs().mean().item() == pytest.approx(1.0, rel=0.02)    # E|Laplace(0, 1)| = 1
    # on a flat target the clipped noise is the only thing left: before clipping, p + Laplace(2/ε)
    eps = 4.0
    p = torch.full((200_000, 1), 0.0)
    lap = (2.0 / eps) * laplace_from_uniform(hashed_uniform(torch.arange(200_000), 1))
    assert lap.abs().mean().item() == pytest.approx(2.0 / eps, rel=0.02)
    assert p.shape == lap.shape


def test_hashed_noise_is_fixed_per_key_and_looks_uniform():
    keys = torch.arange(50_000)
    u = hashed_uniform(keys, 7, seed=3)
    assert torch.equal(u, hashed_uniform(keys, 7, seed=3))                 # same key, same draw
    assert not torch.equal(u, hashed_uniform(keys, 7, seed=4))
    assert torch.equal(hashed_uniform(keys[[5, 9]], 7, seed=3), u[[5, 9]])  # independent of the batch it is in
    assert u.min() > 0 and u.max() < 1
    assert u.mean().item() == pytest.approx(0.5, abs=0.005)
    hist = torch.histc(u.flatten(), bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.005                                 # flat
    assert abs(torch.corrcoef(torch.stack([u[:-1, 0], u[1:, 0]]))[0, 1].item()) < 0.02   # neighbours uncorrelated


def test_keyed_noise_repeats_across_steps_and_hides_the_margin():
    z = torch.zeros(1, 2, 10)
    z[0, :, 3] = 8.0                                           # a memorised digit: a large logit margin
    pi = torch.ones(1, 2)
    keys = torch.tensor([[11, 12]])
    a = swing_targets(z, pi, 2.0, 20.0, 1.0, keys, seed=0)
    assert torch.equal(a, swing_targets(z, pi, 2.0, 20.0, 1.0, keys, seed=0))
    # averaged over many positions, the secret digit is not the target's favourite any more often than
    # chance: the tempered margin (e^{8/20} − 1 ≈ 0.5 × 1/10 in probability) is far below the noise (2/ε = 2)
    n = 20_000
    zz = z[:, :1].expand(n, 1, 10)
    out = swing_targets(zz, torch.ones(n, 1), 2.0, 20.0, 1.0, torch.arange(n)[:, None], seed=1)
    share = (out.argmax(-1) == 3).float().mean().item()
    assert share < 0.13                                       # 0.1 = chance; without noise it is 1.0


def test_context_keys_name_the_query_not_the_place():
    x = torch.tensor([[5, 1, 2, 3, 9, 1, 2, 3],
                      [7, 7, 7, 7, 7, 1, 2, 3]])
    k = context_keys(x, 3)
    assert k.shape == x.shape
    assert k[0, 3] == k[0, 7] == k[1, 7]              # "1 2 3" ends there: same query, wherever it is
    assert k[0, 3] != k[1, 6] and k[0, 2] != k[0, 3]
    assert k[1, 1] != k[1, 2]                          # a window's first tokens: shorter contexts are other queries
    assert torch.equal(context_keys(x[1:], 3), k[1:])  # independent of the batch it is in
    assert len(set(context_keys(torch.arange(1000)[None], 4)[0].tolist())) == 1000


def test_a_repeated_query_gets_the_same_noisy_target_every_time():
    vocab, n = 10, 200
    z = torch.zeros(n, 1, vocab)
    z[..., 3] = 8.0                                            # the memorised digit after this context
    x = torch.tensor([[4, 2, 6]]).expand(n, 3)                 # the same query, released n times
    keys = context_keys(x, 3)[:, -1:]
    keyed = swing_targets(z, torch.ones(n, 1), 2.0, 20.0, 1.0, keys).exp()
    assert torch.allclose(keyed, keyed[:1].expand_as(keyed))   # one noisy answer, repeated
    fresh = swing_targets(z, torch.ones(n, 1), 2.0, 20.0, 1.0, generator=torch.Generator().manual_seed(0)).exp()
    assert not torch.allclose(fresh[0], fresh[1])              # unkeyed: every release is a new draw


def test_noise_is_finite_even_where_the_uniform_draw_is_extreme(monkeypatch):
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros(a[0]))     # the value that gave -inf
    out = swing_targets(torch.zeros(2, 3), torch.tensor([0.0, 1.0]), 2.0, 20.0, 1.0)
    assert torch.isfinite(out.exp()).all() and torch.allclose(out.exp().sum(-1), torch.ones(2))


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


def test_a_student_copying_the_teacher_is_pushed_flatter_only_on_private_tokens(text):
    import copy

    batch = {"x": text.train.x[:4], "y": text.train.y[:4]}
    for swing, want_zero in ((False, True), (True, False)):
        m = build(text, alpha=1.0, swing=swing, epsilon=0.0, shield=False)
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


def test_shield_hides_which_private_token_a_public_position_expects_but_keeps_their_total():
    # vocabulary: 0..3 public, 4..6 private (digits); the teacher at a public position expects "5" after "4"
    private = torch.tensor([False] * 4 + [True] * 3)
    z = torch.tensor([[[2.0, 0.0, 0.0, 0.0, 0.0, 6.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 6.0, 0.0]]])
    pi = torch.tensor([[0.0, 1.0]])                          # position 0 public, position 1 private
    base = swing_targets(z, pi, 2.0, 20.0, 0.0)
    out = shield_private_vocab(base, z, private, pi, 1e6, 0.0).exp()
    p0 = base.exp()[0, 0]
    assert torch.allclose(out[0, 0, private].sum(), p0[private].sum())      # the private share is kept ...
    assert torch.allclose(out[0, 0, private], out[0, 0, private].mean().expand(3), atol=1e-5)   # ... but flat
    assert torch.allclose(out[0, 0, ~private], p0[~private])               # public entries untouched
    assert torch.allclose(out[0, 1], base.exp()[0, 1])                      # private positions: swing_targets' own
    # with noise, which private entry gets the mass is random, not the teacher's favourite
    n = 4000
    zz = z[:, :1].expand(n, 1, 7)
    base = swing_targets(zz, torch.zeros(n, 1), 2.0, 20.0, 1.0)
    out = shield_private_vocab(base, zz, private, torch.zeros(n, 1), 20.0, 1.0, torch.arange(n)[:, None]).exp()
    share = (out[:, 0, 4:].argmax(-1) == 1).float().mean().item()
    assert share < 0.4                                                       # 1/3 = chance; unshielded: 1.0
