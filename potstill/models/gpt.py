"""A small decoder-only transformer (GPT) for the language-model pillar, with a KV cache.

Pre-norm blocks (LayerNorm -> causal self-attention -> residual; LayerNorm -> MLP 4x -> residual),
learned absolute positions, tied input/output embeddings (after Radford et al. 2019; the layout of
Karpathy's nanoGPT, written here from the description). Built by ``build_model("gpt", (T,), V)``:
``T`` = the context length of the data windows, ``V`` = the vocabulary size.

The cache is what speculative decoding needs: ``forward(idx, cache)`` appends the keys/values of
the new tokens to ``cache`` (one ``(k, v)`` pair per layer, shape (B, heads, t, head_dim)) and
``cache.crop(n)`` rolls it back to the first ``n`` positions after rejected draft tokens. Several
new tokens at once attend causally among themselves and to everything cached, so one forward
pass over γ drafted tokens scores all of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.registry import MODELS


@dataclass
class GPTConfig:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 0        # maximum context; 0 = the data's window length
    dropout: float = 0.0
    tie_embeddings: bool = True  # output layer = token embedding (GPT-2); false: a separate head

    def __post_init__(self):
        if self.n_layer < 1 or self.n_head < 1 or self.n_embd % self.n_head:
            raise ValueError("n_layer, n_head >= 1 and n_embd divisible by n_head")
        if self.block_size < 0 or not 0 <= self.dropout < 1:
            raise ValueError("block_size must be >= 0 and dropout in [0, 1)")


class KVCache:
    """Per-layer keys and values of the positions seen so far (batch-first).

    ``external`` holds another library's cache instead (a transformers ``DynamicCache`` for
    :class:`~potstill.models.hf.HFCausalLM`); length and ``crop`` then delegate to it.
    """

    def __init__(self):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        self.external = None

    def __len__(self) -> int:
        if self.external is not None:
            return int(self.external.get_seq_length())
        return 0 if not self.layers or self.layers[0] is None else self.layers[0][0].shape[2]

    def update(self, i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self.layers) <= i:
            self.layers.append(None)
        if self.layers[i] is not None:
            k = torch.cat([self.layers[i][0], k], 2)
            v = torch.cat([self.layers[i][1], v], 2)
        self.layers[i] = (k, v)
        return k, v

    def crop(self, n: int) -> None:
        """Keep the first ``n`` positions (drop rejected draft tokens)."""
        if self.external is not None:
            drop = len(self) - n
            if drop > 0:
                self.external.crop(-drop)      # a negative count removes that many (transformers 4.x and 5.x)
            return
        self.layers = [None if kv is None else (kv[0][:, :, :n], kv[1][:, :, :n]) for kv in self.layers]


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor, layer: int, cache: KVCache | None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in self.qkv(x).split(c, 2))
        past = 0
        if cache is not None:
            have = cache.layers[layer] if layer < len(cache.layers) else None
            past = 0 if have is None else have[0].shape[2]
            k, v = cache.update(layer, k, v)
        if past == 0:
            mask, causal = None, True
        else:  # new token i sees every cached position and the new tokens up to itself
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
            causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.n_embd), Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(), nn.Linear(4 * cfg.n_embd, cfg.n_embd),
                                 nn.Dropout(cfg.dropout))

    def forward(self, x, layer, cache):
        x = x + self.attn(self.ln1(x), layer, cache)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, vocab_size: int, block_size: int):
        super().__init__()
        self.cfg, self.vocab_size, self.block_size = cfg, vocab_size, block_size
        self.tok = nn.Embedding(vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.n_embd, vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, t, V) for tokens ``idx`` (B, t) placed after the ``len(cache)`` cached positions."""
        start = len(cache) if cache is not None else 0
        t = idx.shape[1]
        if start + t > self.block_size:
            raise ValueError(f"context of {start + t} tokens exceeds block_size {self.block_size}")
        pos = torch.arange(start, start + t, device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(pos))
        for i, blk in enumerate(self.blocks):
            x = blk(x, i, cache)
        return F.linear(self.ln_f(x), self.tok.weight if self.head is None else self.head.weight)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, n: int, temperature: float = 1.0, generator=None,
                 greedy: bool = False) -> torch.Tensor:
        return sample_tokens(self, prompt, n, temperature, generator, greedy)


@torch.no_grad()
def sample_tokens(model, prompt: torch.Tensor, n: int, temperature: float = 1.0, generator=None,
                  greedy: bool = False) -> torch.Tensor:
    """Append ``n`` tokens to ``prompt`` (B, t) by ancestral (or greedy) sampling, with a KV cache.

    ``model(idx, cache)`` must return the logits of the new positions (any potstill LM)."""
    cache = KVCache()
    logits = model(prompt, cache)[:, -1]
    out = [prompt]
    for i in range(n):
        if greedy:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            probs = F.softmax(logits.float() / temperature, -1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(prompt.device)
        out.append(nxt)
        if i < n - 1:
            logits = model(nxt, cache)[:, -1]
    return torch.cat(out, 1)


@MODELS.register("gpt", GPTConfig)
def gpt(cfg: GPTConfig, in_shape, num_classes: int):
    """``in_shape`` = (window length,), ``num_classes`` = vocabulary size."""
    return GPT(cfg, num_classes, cfg.block_size or int(in_shape[0]))
