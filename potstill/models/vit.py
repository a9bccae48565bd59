"""A small Vision Transformer (Dosovitskiy et al., arXiv 2010.11929) and an MAE decoder (He et al., arXiv 2111.06377).

The encoder is the plain pre-norm ViT: the image is cut into non-overlapping p×p patches, each
patch is flattened and mapped by one linear layer (the patch embedding), a position embedding
is added (fixed 2-D sine-cosine, as in MAE, or learned), a CLS token is prepended, and ``depth``
blocks of

    x ← x + MHSA(LN(x)),    MHSA: A = softmax(Q Kᵀ / √d_head) per head, out = A V
    x ← x + MLP(LN(x))

follow; a final LayerNorm and a linear ``classifier`` on the CLS token (``pool: cls``) or on the
mean of the patch tokens (``pool: mean``) give the logits. On 28×28 Fashion-MNIST, ``patch: 7``
gives 16 tokens (+ CLS), ``patch: 4`` 49. Image size and channels come from the data.

What the distillation methods need (``methods/kd/mae.py``, ``dmae.py``, ``hybrid.py``):

* ``forward_features(x, keep_idx=None, upto=None, attn=False)`` — run on a subset of the patch
  tokens (``keep_idx``: (B, K) patch indices; the position embedding is added before the
  subset is taken, so a kept token knows where it came from), only through the first ``upto``
  blocks (a teacher tapped at block k runs k + 1 blocks, nothing more), and return every
  block's output and, when asked, every block's attention map (B, heads, T, T).
* ``patchify`` / ``unpatchify`` and :func:`random_keep` (MAE's per-sample random masking).
* :func:`vit_flops`: multiply-adds × 2 of a forward pass for a given number of tokens and
  blocks, so methods can count what their student and teacher cost.

:class:`MAEDecoder` is MAE's light decoder: the encoder's visible tokens are mapped to the
decoder width, a shared learned mask token fills every masked position, position embeddings
are added again, a few blocks run on all tokens, and a linear layer predicts each patch's pixels.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.registry import MODELS


def sincos_2d(dim: int, grid_h: int, grid_w: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (1 + H·W, dim): half the channels encode the row,
    half the column, each as sin/cos of the position at geometrically spaced frequencies."""
    if dim % 4:
        raise ValueError(f"sine-cosine position embedding needs a width divisible by 4, got {dim}")
    q = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float64) / q)
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
                                indexing="ij")

    def enc(pos):
        a = pos.reshape(-1, 1) * omega[None]
        return torch.cat([a.sin(), a.cos()], dim=1)

    emb = torch.cat([enc(rows), enc(cols)], dim=1).float()
    return torch.cat([torch.zeros(1, dim), emb]) if cls_token else emb


class Attention(nn.Module):
    """Multi-head self-attention that can hand back its attention map softmax(QKᵀ/√d)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if return_attn:
            attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
            out = attn @ v
        else:
            attn, out = None, F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t, d)), attn


class Block(nn.Module):
    """Pre-norm transformer block; ``forward(x, return_attn)`` -> (x, attention map or None)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1, self.attn = nn.LayerNorm(width), Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        a, attn = self.attn(self.norm1(x), return_attn)
        x = x + a
        return x + self.mlp(self.norm2(x)), attn


@dataclass
class ViTConfig:
    patch: int = 7                 # 28×28 images: 7 -> 16 tokens, 4 -> 49 tokens
    width: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    pos_emb: Literal["sincos", "learned"] = "sincos"
    pool: Literal["cls", "mean"] = "cls"

    def __post_init__(self):
        if self.patch < 1 or self.width < 1 or self.depth < 1 or self.heads < 1 or self.mlp_ratio <= 0:
            raise ValueError("patch, width, depth, heads must be >= 1 and mlp_ratio > 0")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.pos_emb == "sincos" and self.width % 4:
            raise ValueError("pos_emb: sincos needs a width divisible by 4")


@dataclass
class ViTFeatures:
    """What :meth:`ViT.forward_features` returns.

    ``tokens``: (B, 1 + K, width), the final LayerNorm applied when every block ran, else the raw
    output of the last block run; ``hidden[i]``: raw output of block i; ``attn[i]``: its attention
    map (B, heads, 1 + K, 1 + K) when asked for (None for blocks not asked for; empty when none were). Token 0 is CLS; token j ≥ 1 is
    patch ``keep_idx[:, j - 1]`` (all patches in order when ``keep_idx`` is None).
    """

    tokens: torch.Tensor
    hidden: list[torch.Tensor] = field(default_factory=list)
    attn: list[torch.Tensor] = field(default_factory=list)


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig, in_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"vit takes images (C, H, W), got input shape {tuple(in_shape)}")
        c, h, w = in_shape
        if h % cfg.patch or w % cfg.patch:
            raise ValueError(f"patch {cfg.patch} does not divide the {h}x{w} image")
        self.cfg, self.channels = cfg, c
        self.grid = (h // cfg.patch, w // cfg.patch)
        self.num_patches = self.grid[0] * self.grid[1]
        self.patch_dim = c * cfg.patch * cfg.patch
        self.patch_embed = nn.Linear(self.patch_dim, cfg.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        if cfg.pos_emb == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.num_patches, cfg.width) * 0.02)
        else:
            self.register_buffer("pos_embed", sincos_2d(cfg.width, *self.grid)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.classifier = nn.Linear(cfg.width, num_classes)
        self.apply(_init)
        nn.init.normal_(self.cls_token, std=0.02)
        with torch.no_grad():   # the patch embedding starts like a linear layer of its fan-in (as MAE)
            nn.init.xavier_uniform_(self.patch_embed.weight)

    # --- patches -------------------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, C·p·p), patches in row-major order, each flattened as (C, p, p)."""
        p, (gh, gw) = self.cfg.patch, self.grid
        b = x.shape[0]
        return x.reshape(b, self.channels, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, self.patch_dim)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        p, (gh, gw) = self.cfg.patch, self.grid
        b = patches.shape[0]
        return patches.reshape(b, gh, gw, self.channels, p, p).permute(0, 3, 1, 4, 2, 5).reshape(
            b, self.channels, gh * p, gw * p)

    def embed_tokens(self, x: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """CLS + the (kept) patch tokens with their position embedding: (B, 1 + K, width)."""
        tok = self.patch_embed(self.patchify(x)) + self.pos_embed[:, 1:]
        if keep_idx is not None:
            tok = torch.gather(tok, 1, keep_idx[..., None].expand(-1, -1, tok.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tok.shape[0], -1, -1)
        return torch.cat([cls, tok], dim=1)

    # --- forward -------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor, keep_idx: torch.Tensor | None = None, upto: int | None = None,
                         attn: bool | Iterable[int] = False) -> ViTFeatures:
        """Run blocks 0 .. upto−1 (all when ``upto`` is None) on CLS + the kept patches.

        ``attn``: True for every block's attention map, or the indices of the blocks whose maps are
        wanted (the others are None in ``attn`` and use the fused attention kernel).
        """
        n = self.cfg.depth if upto is None else upto
        if not 0 <= n <= self.cfg.depth:
            raise ValueError(f"upto={upto}: this ViT has {self.cfg.depth} blocks")
        want = set(range(n)) if attn is True else set(attn or ())
        h = self.embed_tokens(x, keep_idx)
        out = ViTFeatures(h)
        for i, blk in enumerate(self.blocks[:n]):
            h, a = blk(h, i in want)
            out.hidden.append(h)
            if want:
                out.attn.append(a)
        out.tokens = self.norm(h) if n == self.cfg.depth else h
        return out

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0] if self.cfg.pool == "cls" else tokens[:, 1:].mean(1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled final representation (what the classifier reads, what a linear probe reads)."""
        return self.pool(self.forward_features(x).tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


@MODELS.register("vit", ViTConfig)
def vit(cfg: ViTConfig, in_shape, num_classes) -> ViT:
    return ViT(cfg, in_shape, num_classes)


# --- masking ---------------------------------------------------------------------------------------
def num_kept(n: int, mask_ratio: float) -> int:
    """Patches left visible at a mask ratio: round(n·(1 − ratio)), at least 1 and at most n."""
    return min(n, max(1, round(n * (1.0 - mask_ratio))))


def random_keep(batch: int, n: int, mask_ratio: float, device=None, generator: torch.Generator | None = None):
    """MAE's per-sample random masking. Returns (keep_idx (B, K) sorted, mask (B, n) bool, True = masked)."""
    k = num_kept(n, mask_ratio)
    noise = torch.rand(batch, n, device=device, generator=generator)
    keep = noise.argsort(dim=1)[:, :k].sort(dim=1).values
    return keep, mask_from_keep(keep, n)


def mask_from_keep(keep_idx: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.ones(keep_idx.shape[0], n, dtype=torch.bool, device=keep_idx.device)
    return mask.scatter(1, keep_idx, False)


# --- cost ------------------------------------------------------------------------------------------
def vit_flops(width: int, blocks: int, tokens: int, mlp_ratio: float = 4.0, patch_dim: int = 0,
              head: int = 0) -> int:
    """FLOPs (2 × multiply-adds) of one forward pass of ``blocks`` pre-norm blocks on ``tokens`` tokens
    (+ the patch embedding of ``tokens − 1`` patches when ``patch_dim`` > 0, + a linear head of ``head``
    outputs). Norms, softmax and biases are left out."""
    d, t, hidden = width, tokens, int(width * mlp_ratio)
    per_block = t * (3 * d * d + d * d + 2 * d * hidden) + 2 * t * t * d     # qkv, proj, mlp; QKᵀ and AV
    return 2 * (blocks * per_block + (t - 1) * patch_dim * d + d * head)


def model_flops(model: ViT, tokens: int, blocks: int | None = None) -> int:
    """:func:`vit_flops` of a :class:`ViT` on CLS + ``tokens − 1`` patches through ``blocks`` blocks."""
    c = model.cfg
    return vit_flops(c.width, c.depth if blocks is None else blocks, tokens, c.mlp_ratio, model.patch_dim)


# --- MAE decoder -----------------------------------------------------------------------------------
class MAEDecoder(nn.Module):
    """MAE's decoder: visible tokens + mask tokens at the masked positions -> per-patch pixels (B, N, C·p·p)."""

    def __init__(self, encoder: ViT, width: int = 64, depth: int = 1, heads: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        if width % heads or width % 4:
            raise ValueError(f"decoder width {width} must be divisible by heads {heads} and by 4")
        self.num_patches = encoder.num_patches
        self.embed = nn.Linear(encoder.cfg.width, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("pos_embed", sincos_2d(width, *encoder.grid)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.pred = nn.Linear(width, encoder.patch_dim)
        self.apply(_init)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
        """``tokens``: the encoder's output (B, 1 + K, D) for patches ``keep_idx`` (B, K)."""
        h = self.embed(tokens)
        b, _, w = h.shape
        full = self.mask_token.expand(b, self.num_patches, w).clone()
        full = full.scatter(1, keep_idx[..., None].expand(-1, -1, w), h[:, 1:])
        h = torch.cat([h[:, :1], full], dim=1) + self.pos_embed
        for blk in self.blocks:
            h, _ = blk(h)
        return self.pred(self.norm(h))[:, 1:]


def decoder_flops(decoder: MAEDecoder, visible: int) -> int:
    """FLOPs of :class:`MAEDecoder` given CLS + ``visible`` encoder tokens (it always runs on CLS + all patches)."""
    w, d_in, t = decoder.embed.out_features, decoder.embed.in_features, 1 + decoder.num_patches
    mlp = decoder.blocks[0].mlp[0].out_features / w if len(decoder.blocks) else 4.0
    return vit_flops(w, len(decoder.blocks), t, mlp) + 2 * ((1 + visible) * d_in * w + t * w * decoder.pred.out_features)
