"""Speculative decoding: a small draft LM proposes γ tokens, the target LM checks them in one pass.

After Leviathan, Kalman & Matias (arXiv 2211.17192) and Chen et al. (arXiv 2302.01318), the
engine DistillSpec (arXiv 2310.08461) distils drafts for. With target distribution p and draft
distribution q at each drafted position i (both at the same temperature):

* accept draft token d_i with probability min(1, p_i(d_i) / q_i(d_i)), in order;
* at the first rejection, emit a token from the residual norm(max(0, p_i − q_i)) and stop;
* if all γ are accepted, emit a bonus token from p_{γ+1}.

Every emitted token is then distributed exactly as the target's own sample (the cited papers'
theorem; tested here with a chi-square test). In greedy mode the draft proposes its argmax and a
token is accepted iff it equals the target's argmax, so the output equals the target's greedy
output exactly. Models follow :class:`~potstill.models.gpt.GPT`'s interface: ``model(idx,
cache)`` returns logits of the new positions and appends them to a :class:`KVCache`, whose
``crop(n)`` drops rejected positions. Batch size 1 (acceptance lengths differ per sequence).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.softmax(logits.float() / temperature, dim=-1)


def verify(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, generator: torch.Generator | None = None,
           greedy: bool = False) -> tuple[int, int]:
    """Accept a prefix of ``drafts`` (γ,) and pick the next token.

    ``p`` (γ+1, V): the target's distributions at the γ drafted positions and the one after;
    ``q`` (γ, V): the draft's distributions the drafts were sampled from. Returns (number
    accepted, the token emitted after them).
    """
    gamma = len(drafts)
    for i in range(gamma):
        d = int(drafts[i])
        if greedy:
            if int(p[i].argmax()) != d:
                return i, int(p[i].argmax())
            continue
        u = torch.rand((), generator=generator)
        if u * q[i, d] > p[i, d]:   # reject with probability 1 - min(1, p/q)
            residual = torch.clamp(p[i] - q[i], min=0)
            total = residual.sum()
            residual = residual / total if total > 0 else p[i]
            return i, int(torch.multinomial(residual, 1, generator=generator))
    last = p[gamma]
    return gamma, int(last.argmax()) if greedy else int(torch.multinomial(last, 1, generator=generator))


@dataclass
class SpecStats:
    proposed: int = 0
    accepted: int = 0
    target_calls: int = 0
    draft_calls: int = 0
    seconds: float = 0.0
    accept_lengths: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / max(self.proposed, 1)

    @property
    def tokens_per_target_call(self) -> float:
        return (self.accepted + len(self.accept_lengths)) / max(self.target_calls, 1)


@torch.no_grad()
def speculative_generate(target, draft, prompt: torch.Tensor, n_new: int, gamma: int = 4,
                         temperature: float = 1.0, greedy: bool = False,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, SpecStats]:
    """Generate ``n_new`` tokens after ``prompt`` (1, t) with target ``target`` and draft ``draft``."""
    from .models.gpt import KVCache

    if prompt.shape[0] != 1:
        raise ValueError("speculative_generate decodes one sequence at a time (batch size 1)")
    if gamma < 1:
        raise ValueError("gamma must be >= 1")
    modes = (target.training, draft.training)
    target.eval(), draft.eval()
    dev = prompt.device
    seq = prompt[0].tolist()
    tc, dc = KVCache(), KVCache()
    stats = SpecStats()
    t0 = time.perf_counter()
    # both caches hold every token of seq except the last one
    if len(seq) > 1:
        target(prompt[:, :-1], tc)
        draft(prompt[:, :-1], dc)
    end = len(seq) + n_new
    while len(seq) < end:
        g = min(gamma, end - len(seq) - 1) if end - len(seq) > 1 else 0
        # 1. the draft proposes g tokens, feeding whatever of seq it has not seen yet
        drafts, qs = [], []
        feed = torch.tensor([seq[len(dc):]], device=dev)
        for _ in range(g):
            logits = draft(feed, dc)[0, -1]
            stats.draft_calls += 1
            q = probs(logits, temperature)
            tok = int(q.argmax()) if greedy else int(torch.multinomial(q.cpu(), 1, generator=generator))
            drafts.append(tok)
            qs.append(q.cpu())
            feed = torch.tensor([[tok]], device=dev)
        # 2. the target scores the last token of seq and all drafts in one pass
        base = len(seq)
        logits = target(torch.tensor([[seq[-1], *drafts]], device=dev), tc)[0]
        stats.target_calls += 1
        p = probs(logits, temperature).cpu()
        q = torch.stack(qs) if qs else torch.zeros(0, p.shape[-1])
        n_acc, nxt = verify(p, q, torch.tensor(drafts, dtype=torch.long), generator, greedy)
        stats.proposed += g
        stats.accepted += n_acc
        stats.accept_lengths.append(n_acc)
        seq += drafts[:n_acc] + [nxt]
        # 3. roll the caches back to seq minus its (new) last token
        tc.crop(base + n_acc)
        dc.crop(min(len(dc), base + n_acc))
    stats.seconds = time.perf_counter() - t0
    target.train(modes[0]), draft.train(modes[1])
    return torch.tensor([seq[:end]], device=dev), stats


@torch.no_grad()
def autoregressive_generate(model, prompt: torch.Tensor, n_new: int, temperature: float = 1.0, greedy: bool = False,
                            generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """The target alone (with its KV cache), timed the same way: (tokens, seconds)."""
    t0 = time.perf_counter()
    out = model.generate(prompt, n_new, temperature=temperature, generator=generator, greedy=greedy)
    return out, time.perf_counter() - t0


__all__ = ["verify", "speculative_generate", "autoregressive_generate", "SpecStats"]
