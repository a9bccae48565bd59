import pytest
import torch

from potstill import ConfigError, FeatureTaps, Teacher
from potstill.models import build_model


def net():
    torch.manual_seed(0)
    return build_model({"name": "convnet", "width": 8, "depth": 2}, (1, 8, 8), 10)


def test_teacher_is_frozen_and_stays_in_eval_mode():
    t = Teacher(net(), taps=["features.4"])
    outer = torch.nn.Module()
    outer.teacher = t
    outer.train()
    assert not t.training and not t.model.training
    assert all(not p.requires_grad for p in t.parameters())
    out = t(torch.randn(3, 1, 8, 8))
    assert not out.logits.requires_grad
    assert out.features["features.4"].shape == (3, 8, 4, 4)


def test_taps_record_named_module_outputs_with_grad():
    model = net()
    taps = FeatureTaps(model, ["features"])
    x = torch.randn(2, 1, 8, 8)
    model(x)
    assert taps.outputs == {}, "outside recording() nothing is kept"
    with taps.recording():
        logits = model(x)
    feat = taps.outputs["features"]
    assert torch.allclose(model.classifier(feat.flatten(1)), logits)
    assert feat.requires_grad
    taps.remove()
    with pytest.raises(ConfigError, match="taps: no module named 'feature' to tap; modules: features, features.0"):
        FeatureTaps(model, ["feature"])


def test_cache_matches_live_outputs_and_is_reused_from_disk(tmp_path):
    x = torch.randn(50, 1, 8, 8)
    t = Teacher(net(), taps=["features"])
    live = t(x)
    path = t.attach_cache(x, tmp_path, batch_size=16)
    assert path.is_file()
    idx = torch.tensor([3, 0, 49, 3])
    cached = t(torch.zeros(4, 1, 8, 8), index=idx)  # inputs ignored: rows come from the cache
    assert torch.allclose(cached.logits, live.logits[idx], atol=1e-6)
    assert torch.allclose(cached.features["features"], live.features["features"][idx], atol=1e-6)
    # a second teacher with the same weights/taps/data finds the file; other weights do not
    t2 = Teacher(net(), taps=["features"])
    assert t2.attach_cache(x, tmp_path) == path
    other = net()
    with torch.no_grad():
        other.classifier.bias.add_(1.0)
    assert Teacher(other, taps=["features"]).fingerprint(x) != t.fingerprint(x)
