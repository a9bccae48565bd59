"""HeLlO (D1): a low-rank image-to-label projector shipped instead of soft labels, labels generated online."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import potstill
from potstill.core.config import ConfigError
from potstill.data import DataError
from potstill.data.synthetic_set import SyntheticSet
from potstill.eval.synthetic_set import SynEvalConfig, evaluate_synthetic
from potstill.methods.dataset.hello import (EncoderConfig, HeLlO, HeLlOConfig, LowRankProjector, TeacherLabels,
                                            build_encoder, class_prototypes)
from potstill.models import build_model

ROOT = Path(__file__).resolve().parents[1]
BN_NET = {"name": "convnet", "width": 8, "depth": 2, "norm": "batch", "first_padding": 1}
ENC_NET = {"name": "convnet", "width": 8, "depth": 2, "norm": "none", "first_padding": 1}
SMALL_EVAL = {"name": "convnet", "width": 8, "depth": 2, "norm": "instance", "first_padding": 1}


@pytest.fixture(scope="module")
def tiny():
    return potstill.load_dataset({"name": "digits", "train_size": 200})


@pytest.fixture(scope="module")
def teacher(tiny):
    """A small BN net trained a little, so its soft labels carry class information."""
    torch.manual_seed(0)
    net = build_model(BN_NET, tiny.in_shape, tiny.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(60):
        loss = F.cross_entropy(net(tiny.train.x), tiny.train.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def encoder(tiny):
    return build_encoder(EncoderConfig(model=ENC_NET, objective="random", pool=0, seed=3), tiny)


def make(tiny, teacher, encoder, **kw):
    torch.manual_seed(0)
    return HeLlO(HeLlOConfig(**{"ipc": 2, "batch_real": 32, **kw}), tiny, teacher, encoder, BN_NET)


def nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


# --- what is stored ------------------------------------------------------------------------------------
def test_projector_set_stores_no_per_image_labels_and_its_bytes_do_not_grow_with_n(tiny, teacher, encoder, tmp_path):
    d, k = encoder.dim, tiny.num_classes
    sizes = {}
    for ipc in (1, 3):
        s = make(tiny, teacher, encoder, ipc=ipc, rank=3).export()
        assert isinstance(s.online, LowRankProjector) and s.soft and s.label_kind == "online"
        assert s.labels.shape == (ipc * k,) and s.labels.dtype == torch.int64, "only class membership per image"
        g = s.online
        assert s.label_bytes() == nbytes([g.A, g.B, g.bias, g.log_scale]) == 4 * (3 * d + k * 3 + k + 1)
        sizes[ipc] = s.label_bytes()
        s.save(tmp_path / f"ipc{ipc}")
        from safetensors.torch import load_file
        shapes = [tuple(t.shape) for t in load_file(str(tmp_path / f"ipc{ipc}.safetensors")).values()]
        assert (ipc * k, k) not in shapes, "no N x C label tensor in the file"
        assert json.loads((tmp_path / f"ipc{ipc}.json").read_text())["label_bytes"] == sizes[ipc]
    assert sizes[1] == sizes[3], "label storage is independent of the number of images"
    # W0 from real prototypes has to be shipped, and is counted
    real = make(tiny, teacher, encoder, rank=3, prototypes="real", prototype_images=5).export()
    assert real.label_bytes() == sizes[1] + 4 * k * d
    # the frozen encoder is not label storage
    assert "w0" not in make(tiny, teacher, encoder).export().online.shipped()


def test_low_rank_update_starts_at_zero_so_the_projector_is_the_prototype_classifier(tiny, teacher, encoder):
    m = make(tiny, teacher, encoder, rank=4, init_scale=7.0)
    g = m.projector
    assert torch.count_nonzero(g.B) == 0 and g.A.abs().sum() > 0
    assert torch.equal(g.weight(), g.w0)
    w0 = class_prototypes(encoder, m.images.detach(), m.labels, tiny.num_classes)
    assert torch.allclose(g.w0, w0) and torch.allclose(w0.norm(dim=1), torch.ones(tiny.num_classes))
    x = tiny.val.x[:20]
    e = F.normalize(encoder(x), dim=1)
    assert torch.allclose(g.logits(x), 7.0 * e @ w0.t(), atol=1e-5)
    assert torch.equal(g(x).argmax(1), (e @ w0.t()).argmax(1)), "labels follow the nearest class prototype"


def test_fitting_the_low_rank_factors_reduces_the_kl_to_the_teacher(tiny, teacher, encoder):
    m = make(tiny, teacher, encoder, rank=2, augment="none", batch_real=64)
    x = tiny.val.x
    with torch.no_grad():
        t = teacher(x)

    def kl():
        with torch.no_grad():
            return F.kl_div(m.projector(x).log(), F.softmax(t, 1), reduction="batchmean").item()

    before = kl()
    groups = m.param_groups()
    assert set(groups) == {"projector"}, "images are fixed unless refine is on"
    opt = torch.optim.Adam(groups["projector"], lr=0.05)
    for step in range(60):
        out = m.loss({}, step)
        opt.zero_grad()
        out["projector"].backward()
        opt.step()
    assert kl() < 0.7 * before
    assert torch.count_nonzero(m.projector.B) > 0 and m.images.grad is None


def test_refinement_moves_the_images_against_the_teacher_projector_gap(tiny, teacher, encoder):
    m = make(tiny, teacher, encoder, refine=True, augment="none")
    groups = m.param_groups()
    assert set(groups) == {"projector", "images"}
    out = m.loss({}, 0)
    out["images"].backward(inputs=groups["images"])
    assert m.images.grad is not None and m.images.grad.abs().sum() > 0
    assert torch.allclose(out["images"], out["log/kl_syn"])


# --- labels generated online by the protocol ----------------------------------------------------------
def test_online_labels_are_computed_on_the_augmented_batch_the_network_sees(tiny, monkeypatch):
    from potstill import models

    x = tiny.train.x[:12]
    y = torch.arange(12) % 4
    seen_by_net, seen_by_labels = [], []
    real_build = models.build_model

    def recording_build(*a, **kw):
        net = real_build(*a, **kw)
        net.register_forward_pre_hook(lambda mod, inp: seen_by_net.append(inp[0].detach().clone())
                                      if mod.training else None)
        return net

    def label_fn(xb):
        seen_by_labels.append(xb.detach().clone())
        return F.one_hot(torch.zeros(len(xb), dtype=torch.long), 4).float()

    monkeypatch.setattr(models, "build_model", recording_build)
    from potstill.data import DataBundle
    bundle = DataBundle("toy", tiny.train, tiny.val, None, 4)
    cfg = SynEvalConfig(model=SMALL_EVAL, epochs=3, seeds=1, batch_size=5, dsa="color_crop", device="cpu")
    out = evaluate_synthetic((x, y), bundle, cfg, test=False, label_fn=label_fn)
    assert len(seen_by_labels) == len(seen_by_net) == 3 * 3                  # 3 epochs x ceil(12 / 5) batches
    assert all(torch.equal(a, b) for a, b in zip(seen_by_labels, seen_by_net)), "labels of the very augmented batch"
    raw = {tuple(r.flatten().tolist()) for r in x}
    assert not any(tuple(r.flatten().tolist()) in raw for b in seen_by_labels for r in b), "never the raw images"
    assert out["label_kind"] == "online"
    assert out["online_labels"]["labels_generated_per_run"] == 3 * 12
    assert out["online_labels"]["bytes_if_stored"] == 3 * 12 * 4 * 4
    # an ordinary set is untouched: hard labels, no online section
    plain = evaluate_synthetic((x, y), bundle, cfg, test=False)
    assert plain["label_kind"] == "hard" and "online_labels" not in plain


def test_the_set_carries_its_generator_and_the_protocol_uses_it(tiny, teacher, encoder):
    s = make(tiny, teacher, encoder).export()
    out = evaluate_synthetic(s, tiny, SynEvalConfig(model=SMALL_EVAL, epochs=2, seeds=1, device="cpu"), test=False)
    assert out["label_kind"] == "online" and out["online_labels"]["kind"] == "hello_projector"
    assert out["online_labels"]["shipped_bytes"] == s.label_bytes()
    assert next(s.online.parameters()).device.type == "cpu", "the generator is handed back on the CPU"


def test_teacher_and_static_exports_share_the_images(tiny, teacher, encoder):
    proj = make(tiny, teacher, encoder).export()
    heavy = make(tiny, teacher, encoder, labels="teacher").export()
    static = make(tiny, teacher, encoder, labels="static", temperature=2.0).export()
    assert torch.equal(proj.images, heavy.images) and torch.equal(proj.images, static.images)
    assert isinstance(heavy.online, TeacherLabels)
    assert heavy.label_bytes() == nbytes(teacher.state_dict().values()), "shipping the generator = the teacher"
    x = tiny.val.x[:8]
    assert torch.allclose(heavy.online(x), F.softmax(teacher(x), 1), atol=1e-6)
    assert static.online is None and static.labels.shape == (20, 10)
    assert torch.allclose(static.labels, F.softmax(teacher(static.images) / 2.0, 1), atol=1e-6)
    assert static.label_bytes() == 20 * 10 * 4


# --- files ---------------------------------------------------------------------------------------------
def test_save_load_round_trips_the_projector_and_rejects_corruption(tiny, teacher, encoder, tmp_path):
    m = make(tiny, teacher, encoder, rank=2)
    with torch.no_grad():
        m.projector.B.normal_()
        m.projector.bias.normal_()
    s = m.export()
    s.save(tmp_path / "s")
    assert (tmp_path / "s.frozen.safetensors").is_file()
    back = SyntheticSet.load(tmp_path / "s")
    assert isinstance(back.online, LowRankProjector) and back.label_bytes() == s.label_bytes()
    for n in ("A", "B", "bias", "log_scale", "w0"):
        assert torch.equal(getattr(back.online, n), getattr(s.online, n)), n
    x = tiny.val.x[:16]
    assert torch.allclose(back.online(x), s.online(x), atol=1e-6)
    assert torch.equal(back.labels, s.labels) and back.meta["export_labels"] == "projector"
    # the teacher reference round-trips too
    heavy = make(tiny, teacher, encoder, labels="teacher").export()
    heavy.save(tmp_path / "h")
    hb = SyntheticSet.load(tmp_path / "h")
    assert isinstance(hb.online, TeacherLabels) and torch.allclose(hb.online(x), heavy.online(x), atol=1e-6)

    def corrupt(name):
        raw = bytearray((tmp_path / name).read_bytes())
        raw[-5] ^= 0xFF
        (tmp_path / name).write_bytes(bytes(raw))

    corrupt("s.frozen.safetensors")
    with pytest.raises(DataError, match=r"frozen.safetensors: checksum"):
        SyntheticSet.load(tmp_path / "s")
    s.save(tmp_path / "s")
    corrupt("s.safetensors")
    with pytest.raises(DataError, match="checksum"):
        SyntheticSet.load(tmp_path / "s")
    s.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s.json").read_text())
    bad = dict(meta, online_labels={**meta["online_labels"], "spec": {**meta["online_labels"]["spec"], "rank": 5}})
    (tmp_path / "s.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="cannot rebuild the 'hello_projector'.*do not match"):
        SyntheticSet.load(tmp_path / "s")
    (tmp_path / "s.json").write_text(json.dumps(dict(meta, online_labels={**meta["online_labels"], "kind": "nope"})))
    with pytest.raises(DataError, match="unknown online label kind 'nope'"):
        SyntheticSet.load(tmp_path / "s")
    (tmp_path / "s.json").write_text(json.dumps(dict(meta, online_labels={**meta["online_labels"], "shipped": ["A"]})))
    with pytest.raises(DataError, match="expected tensors"):
        SyntheticSet.load(tmp_path / "s")
    (tmp_path / "s.frozen.safetensors").unlink()
    (tmp_path / "s.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="no such file"):
        SyntheticSet.load(tmp_path / "s")
    with pytest.raises(DataError, match="only hard labels"):
        SyntheticSet(s.images, F.one_hot(s.labels, 10).float(), 10, {}, s.online)


# --- recipes ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override,key", [("method.rank=-1", "rank"), ("method.labels=perclass", "labels"),
                                          ("method.encoder.pool=-1", "pool"), ("method.augment=blur", "augment")])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        potstill.resolve(ROOT / "recipes/dd/digits/hello.yaml", [override])


def test_hello_recipes_resolve_and_read_the_teacher_trained_on_the_protocols_views():
    for r in ("digits/hello.yaml", "fmnist_ipc10/hello.yaml", "fmnist_ipc50/hello.yaml"):
        cfg = potstill.resolve(ROOT / "recipes/dd" / r)
        dataset = cfg.data.name
        assert cfg.method.name == "hello"
        assert cfg.teacher.checkpoint == f"runs/teacher_bn_dsa_{dataset}/export/model.safetensors"
        teacher = potstill.resolve(ROOT / f"recipes/dd/teacher_bn_dsa_{dataset}.yaml")
        assert teacher.method.name == "supervised" and teacher.student.to_dict() == cfg.teacher.model
        # the teacher saw the very augmentation the projector is fitted on and the protocol labels
        assert teacher.method.config.augment.dsa == cfg.method.config.augment == cfg.eval.dsa


def test_supervised_augment_dsa_is_the_protocols_dsa_seeded_from_the_global_rng():
    from potstill.data.augment import AugmentConfig, augment
    from potstill.data.dsa import DEFAULT_STRATEGY, DSA

    assert AugmentConfig().dsa == "none" and not AugmentConfig().active      # default: unchanged behaviour
    cfg = AugmentConfig(dsa=DEFAULT_STRATEGY)
    assert cfg.active
    x = torch.rand(32, 1, 8, 8)
    torch.manual_seed(5)
    a = augment(x, cfg)
    assert a.shape == x.shape and not torch.equal(a, x)
    torch.manual_seed(5)
    assert torch.equal(a, augment(x, cfg)), "deterministic under torch's seed (checkpoints restore it)"
    torch.manual_seed(5)
    assert torch.equal(a, DSA(DEFAULT_STRATEGY)(x, int(torch.randint(2**31 - 1, (1,))))), "the protocol's DSA"
    torch.manual_seed(6)
    assert not torch.equal(a, augment(x, cfg)), "a fresh draw per batch"
    with pytest.raises(ValueError, match="augment.dsa"):
        AugmentConfig(dsa="blur")
    with pytest.raises(ConfigError, match="dsa"):
        potstill.resolve(ROOT / "recipes/dd/teacher_bn_dsa_digits.yaml", ["method.augment.dsa=blur"])


def test_recipe_runs_three_steps_through_the_api(tmp_path):
    teacher = potstill.run_recipe(ROOT / "recipes/dd/teacher_bn_dsa_digits.yaml", tmp_path / "teacher",
                                  overrides=["trainer.steps=3", "trainer.progress=false", "trainer.eval_every=0"])
    s = potstill.run_recipe(ROOT / "recipes/dd/digits/hello.yaml", tmp_path / "hello", overrides=[
        "trainer.progress=false", "trainer.steps=3", "eval.epochs=1", "eval.seeds=1", "method.encoder.epochs=1",
        f"teacher.checkpoint={teacher['export']}", f"method.encoder.cache_dir={tmp_path / 'cache'}"])
    assert s["steps"] == 3 and s["soft_labels"] and s["eval"]["label_kind"] == "online"
    assert 0 < s["label_bytes"] < 100 * 10 * 4, "lighter than one static soft label per image"
    assert s["eval"]["online_labels"]["bytes_if_stored"] == 1 * 100 * 10 * 4
    assert list((tmp_path / "cache").glob("hello_encoder_*.safetensors")), "the rotation encoder is cached"
    back = SyntheticSet.load(tmp_path / "hello" / "export")
    assert isinstance(back.online, LowRankProjector)
