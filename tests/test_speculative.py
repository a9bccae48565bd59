"""Speculative decoding preserves the target distribution, and greedy mode equals target greedy."""
import pytest
import torch
from scipy.stats import chisquare

from potstill.decoding import speculative_generate, verify
from potstill.models import build_model


def test_verify_emits_the_target_distribution():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]])
    q = torch.tensor([[0.1, 0.2, 0.3, 0.4]])                 # a poor draft
    counts = torch.zeros(4)
    n = 20000
    for _ in range(n):
        d = torch.multinomial(q[0], 1, generator=g)
        n_acc, tok = verify(p, q, d, g)
        counts[d.item() if n_acc == 1 else tok] += 1       # the first emitted token
    assert chisquare(counts.numpy(), (p[0] * n).numpy()).pvalue > 1e-3


def test_verify_accepts_everything_when_draft_equals_target():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(4, 5, generator=g), -1)
    drafts = torch.tensor([torch.multinomial(p[i], 1, generator=g).item() for i in range(3)])
    assert verify(p, p[:3], drafts, g)[0] == 3
    greedy = p[:3].argmax(-1)
    n, tok = verify(p, p[:3], greedy, greedy=True)
    assert n == 3 and tok == int(p[3].argmax())


def tiny(seed, width):
    torch.manual_seed(seed)
    return build_model({"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": width}, (32,), 4).eval()


def test_greedy_speculative_output_equals_target_greedy():
    target, draft = tiny(0, 16), tiny(1, 8)
    prompt = torch.tensor([[1, 2, 3]])
    want = target.generate(prompt, 12, greedy=True)
    for gamma in (1, 3, 5):
        out, stats = speculative_generate(target, draft, prompt, 12, gamma=gamma, greedy=True)
        assert torch.equal(out, want)
        assert stats.target_calls <= 12 and 0 <= stats.acceptance_rate <= 1
    same, stats = speculative_generate(target, target, prompt, 12, gamma=4, greedy=True)
    assert torch.equal(same, want) and stats.acceptance_rate == 1.0   # a perfect draft is always accepted


def test_sampled_speculative_decoding_matches_the_target_joint_distribution():
    target, draft = tiny(0, 16), tiny(1, 8)
    for m in (target, draft):   # sharpen the tiny random models a little so the check has power
        m.tok.weight.data *= 8
    prompt = torch.tensor([[1, 2]])

    def nxt(ctx):
        with torch.no_grad():
            return torch.softmax(target(torch.tensor([ctx]))[0, -1], -1)

    # the target's exact joint distribution of the next three tokens (4^3 outcomes)
    joint = torch.tensor([float(nxt([1, 2])[a] * nxt([1, 2, a])[b] * nxt([1, 2, a, b])[c])
                          for a in range(4) for b in range(4) for c in range(4)])
    g = torch.Generator().manual_seed(3)
    counts = torch.zeros(64)
    n = 4000
    accepted, partial = 0, 0
    for _ in range(n):   # gamma 2 over 3 new tokens: drafts of 2, partial acceptance and cache roll-back
        out, stats = speculative_generate(target, draft, prompt, 3, gamma=2, generator=g)
        counts[out[0, 2] * 16 + out[0, 3] * 4 + out[0, 4]] += 1
        accepted += stats.accepted
        partial += any(0 < a < 2 for a in stats.accept_lengths)
    keep = joint * n >= 5          # chi-square needs expected counts >= 5
    exp = joint[keep] * n
    obs = counts[keep]
    exp = exp * obs.sum() / exp.sum()
    assert chisquare(obs.numpy(), exp.numpy()).pvalue > 1e-3
    assert accepted > 0 and partial > 0   # drafts were used, and rejections after an accepted draft happened
