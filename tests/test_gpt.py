"""The small GPT: causality, and the KV cache gives the same logits as a full forward pass."""
import pytest
import torch

from potstill.models import build_model
from potstill.models.gpt import KVCache


@pytest.fixture
def net():
    torch.manual_seed(0)
    return build_model({"name": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32}, (16,), 11).eval()


def test_future_tokens_do_not_change_past_logits(net):
    x = torch.randint(11, (2, 10))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 11
    assert torch.allclose(net(x)[:, :6], net(y)[:, :6], atol=1e-6)
    assert not torch.allclose(net(x)[:, 6:], net(y)[:, 6:])


def test_cached_chunks_equal_one_full_pass_and_crop_rolls_back(net):
    x = torch.randint(11, (3, 12))
    full = net(x)
    cache = KVCache()
    parts = [net(x[:, :5], cache), net(x[:, 5:6], cache), net(x[:, 6:12], cache)]   # prompt, 1 token, a draft of 6
    assert len(cache) == 12
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    cache.crop(8)                                  # reject the last 4 drafted tokens, feed others
    z = torch.randint(11, (3, 2))
    again = net(z, cache)
    assert torch.allclose(again, net(torch.cat([x[:, :8], z], 1))[:, 8:], atol=1e-5)


def test_greedy_generation_is_argmax_of_full_passes(net):
    prompt = torch.randint(11, (2, 3))
    out = net.generate(prompt, 5, greedy=True)
    seq = prompt
    for _ in range(5):
        seq = torch.cat([seq, net(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)
    with pytest.raises(ValueError, match="block_size"):
        net(torch.randint(11, (1, 17)))


def test_output_layer_is_the_token_embedding(net):
    x = torch.randint(11, (1, 4))
    h = net.ln_f(net.blocks[1](net.blocks[0](net.tok(x) + net.pos(torch.arange(4)), 0, None), 1, None))
    assert torch.allclose(net(x), h @ net.tok.weight.T, atol=1e-6)
    assert not any("head" in k for k in net.state_dict())   # one tensor: safetensors can store it
