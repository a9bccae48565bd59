"""transformers causal LMs behind the potstill LM interface: cache, speculative decoding, KD, save/load."""
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import potstill  # noqa: E402
from potstill.decoding import speculative_generate  # noqa: E402
from potstill.models import build_model  # noqa: E402
from potstill.models.gpt import KVCache  # noqa: E402

TINY = {"name": "hf_causal_lm", "config": {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16}}


def test_cached_logits_equal_full_forward_and_crop_rolls_back():
    torch.manual_seed(0)
    m = build_model(TINY, (32,), 13).eval()
    x = torch.randint(13, (1, 10))
    full = m(x)
    cache = KVCache()
    a = m(x[:, :6], cache)
    b = m(x[:, 6:], cache)
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-5) and len(cache) == 10
    cache.crop(6)                                           # drop four positions, feed them again
    assert len(cache) == 6 and torch.allclose(m(x[:, 6:], cache), b, atol=1e-5)


def test_greedy_speculative_decoding_with_a_gpt_draft_equals_the_hf_target():
    torch.manual_seed(0)
    target = build_model(TINY, (64,), 13)
    draft = build_model({"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16}, (64,), 13)
    prompt = torch.randint(13, (1, 5))
    out, st = speculative_generate(target, draft, prompt, 30, gamma=3, greedy=True)
    assert torch.equal(out, target.generate(prompt, 30, greedy=True)) and st.target_calls < 30


def test_token_kd_with_hf_teacher_and_student_trains_and_exports_save_pretrained(tmp_path):
    torch.manual_seed(0)
    teacher_dir = tmp_path / "teacher"
    build_model(TINY, (16,), 13).save_pretrained(teacher_dir)          # a "local pretrained" teacher
    recipe = {"method": {"name": "token_kd"},
              "data": {"name": "arithmetic", "train_size": 200, "val_size": 20, "test_size": 20, "block_size": 16},
              "student": TINY, "teacher": {"model": {"name": "hf_causal_lm", "path": str(teacher_dir)}},
              "trainer": {"steps": 3, "batch_size": 8, "progress": False, "eval_every": 0}}
    summary = potstill.run_recipe(recipe, tmp_path / "run")
    assert summary["steps"] == 3
    again = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "run/export/hf"), local_files_only=True)
    x = torch.randint(13, (2, 8))
    mine = potstill.load_model(tmp_path / "run").eval()       # (GPT-2 configs default to dropout 0.1)
    assert torch.allclose(again(input_ids=x).logits, mine(x), atol=1e-5)


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="exactly one of path"):
        build_model({"name": "hf_causal_lm"}, (8,), 13)
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_model({"name": "hf_causal_lm", "path": "/nonexistent"}, (8,), 13)
