"""``transformers`` causal language models behind potstill's LM interface (optional extra ``hf``).

Any ``AutoModelForCausalLM`` can be a teacher, a student or a speculative draft/target:
``model(idx, cache)`` returns logits (B, t, V) for the new tokens ``idx`` placed after the
``len(cache)`` cached positions, exactly like :class:`~potstill.models.gpt.GPT`, and
``generate`` samples the same way. Two ways to build one (``build_model({"name": "hf_causal_lm", ...})``):

* ``path``: a local folder written by ``save_pretrained`` (config + weights), loaded with
  ``local_files_only=True`` — nothing is downloaded;
* ``config``: a transformers config as a mapping with its ``model_type`` (e.g. ``{model_type:
  gpt2, n_layer: 2, n_embd: 64, n_head: 2}``), randomly initialised; ``vocab_size`` and the
  context length default to the data's.

A run's exported student is also written with ``save_pretrained`` to ``export/hf/`` so that
``AutoModelForCausalLM.from_pretrained("runs/x/export/hf")`` loads it without potstill.
``transformers`` is imported only when one of these models is built.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..core.registry import MODELS
from .gpt import KVCache, sample_tokens


@dataclass
class HFCausalLMConfig:
    path: str = ""                                      # local save_pretrained folder
    config: dict[str, object] = field(default_factory=dict)   # or a config mapping with model_type

    def __post_init__(self):
        if bool(self.path) == bool(self.config):
            raise ValueError("hf_causal_lm needs exactly one of path (a local folder) or config (with model_type)")
        if self.config and "model_type" not in self.config:
            raise ValueError("hf_causal_lm config needs a model_type (e.g. gpt2, llama)")


class HFCausalLM(nn.Module):
    """Wraps a transformers causal LM; its KV cache lives in :class:`KVCache` (``cache.external``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        import inspect

        # transformers 5 names the cache argument ``cache``; 4.x called it ``past_key_values``
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        if cache is None:
            return self.model(input_ids=idx, use_cache=False).logits
        if cache.external is None:
            from transformers import DynamicCache

            cache.external = DynamicCache()
        return self.model(input_ids=idx, use_cache=True, **{self._cache_kw: cache.external}).logits

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, n: int, temperature: float = 1.0, generator=None,
                 greedy: bool = False) -> torch.Tensor:
        return sample_tokens(self, prompt, n, temperature, generator, greedy)

    def save_pretrained(self, folder: str | Path) -> None:
        self.model.save_pretrained(str(folder), safe_serialization=True)


def _context_key(cfg) -> str | None:
    for k in ("n_positions", "max_position_embeddings"):
        if hasattr(cfg, k):
            return k
    return None


@MODELS.register("hf_causal_lm", HFCausalLMConfig)
def hf_causal_lm(cfg: HFCausalLMConfig, in_shape, num_classes: int) -> HFCausalLM:
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("hf_causal_lm needs transformers: pip install 'potstill[hf]'") from e
    if cfg.path:
        folder = Path(cfg.path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"hf_causal_lm path {folder}: no config.json (expected a save_pretrained folder)")
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    else:
        kw = {k: v for k, v in cfg.config.items() if k != "model_type"}
        kw.setdefault("vocab_size", int(num_classes))
        hf_cfg = AutoConfig.for_model(cfg.config["model_type"], **kw)
        ctx = _context_key(hf_cfg)
        if ctx and ctx not in kw:
            setattr(hf_cfg, ctx, int(in_shape[0]))
        model = AutoModelForCausalLM.from_config(hf_cfg)
    vocab = model.get_input_embeddings().num_embeddings
    if vocab < num_classes:
        raise ValueError(f"hf_causal_lm has a vocabulary of {vocab} tokens, the data needs {num_classes}")
    return HFCausalLM(model)


__all__ = ["HFCausalLM", "HFCausalLMConfig"]
