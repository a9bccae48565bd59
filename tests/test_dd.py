"""Dataset distillation: DSA, matching losses, coresets, SyntheticSet files, the protocol, DM vs random."""
import json
import math

import pytest
import torch

import potstill
from potstill.core.method import BuildContext
from potstill.data import ArrayData, DataBundle, DataError
from potstill.data.dsa import DSA, parse_strategy
from potstill.data.synthetic_set import SyntheticSet
from potstill.eval.synthetic_set import SynEvalConfig, evaluate_synthetic, select_protocol
from potstill.losses.matching import attention_map, gradient_match_distance, mean_embedding_distance
from potstill.methods.dataset.coresets import herding, k_center
from potstill.methods.dataset.dc import default_loops

SMALL_NET = {"name": "convnet", "width": 8, "depth": 2, "first_padding": 1}


# --- DSA ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["color", "crop", "cutout", "flip", "scale", "rotate"])
def test_dsa_same_seed_same_transform_on_both_batches_and_differentiable(family):
    dsa = DSA(family)
    real = torch.randn(6, 1, 12, 12)
    syn = real[:3].clone().requires_grad_(True)    # the first rows are the same images
    p = dsa.sample(max(len(real), len(syn)), seed=7)
    out_r, out_s = dsa.apply(real, p), dsa.apply(syn, p)
    assert torch.allclose(out_r[:3], out_s, atol=1e-6), "one seed -> the same transform on both batches"
    assert torch.equal(dsa(real, 7), dsa(real, 7))
    out_s.pow(2).sum().backward()
    assert syn.grad is not None and torch.isfinite(syn.grad).all() and syn.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["color", "crop", "cutout", "flip", "scale", "rotate"])
def test_dsa_one_draw_is_shared_by_the_whole_batch(family):
    """sample(1, seed) is the DSA code's siamese matching: every image of both batches, one transform."""
    dsa = DSA(family)
    img = torch.randn(1, 1, 12, 12)
    real, syn = img.repeat(8, 1, 1, 1), img.repeat(3, 1, 1, 1)
    shared = dsa.sample(1, seed=3)
    out_r, out_s = dsa.apply(real, shared), dsa.apply(syn, shared)
    assert torch.allclose(out_r, out_r[:1].expand_as(out_r)) and torch.allclose(out_s, out_r[:3])
    own = None
    for seed in range(20):                 # per-image draws: some seed gives two images different transforms
        out = dsa.apply(real, dsa.sample(8, seed=seed))
        own = own or not torch.allclose(out, out[:1].expand_as(out))
    assert own
    with pytest.raises(ValueError, match="fewer than 8"):
        dsa.apply(real, dsa.sample(4, seed=0))


def test_dd_methods_match_under_one_batch_transform_by_default():
    bundle = constant_class_bundle(n_per_class=8, k=2, side=12)
    cls = potstill.METHODS.get("dm")
    torch.manual_seed(0)
    method = cls.build(cls.Config(ipc=3, net=SMALL_NET, batch_real=8, dsa="crop"), BuildContext(data=bundle))
    assert method.cfg.siamese == "batch"
    real, syn = method.siamese(bundle.train.x[:8], bundle.train.x[:3])   # 8 copies of one picture
    assert torch.allclose(real, real[:1].expand_as(real)) and torch.allclose(syn, real[:3])
    with pytest.raises(ValueError, match="siamese"):
        cls.Config(siamese="pairs")


def test_dsa_transforms_do_what_they_say():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    flipped = DSA("flip").apply(x, DSA("flip").sample(64, 0))
    for i in range(64):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    assert any(torch.equal(flipped[i], x[i].flip(-1)) for i in range(64)) and any(torch.equal(flipped[i], x[i]) for i in range(64))
    cut = DSA("cutout").apply(torch.ones(8, 1, 8, 8), DSA("cutout").sample(8, 1))
    assert ((cut == 0).flatten(1).sum(1) > 0).all(), "cutout zeroes a square in every image"
    # an affine with identity parameters is the identity (align_corners grid)
    rot = DSA("rotate")
    p = rot.sample(2, 0)
    p.values["angle"] = torch.zeros(2)
    assert torch.allclose(rot.apply(x[:2], p), x[:2], atol=1e-5)
    # "single" mode applies exactly one family; different seeds differ
    assert len(DSA().sample(4, 3).families) == 1
    assert not torch.equal(DSA("color")(x, 1), DSA("color")(x, 2))
    with pytest.raises(ValueError, match="unknown DSA transform 'blur'"):
        parse_strategy("color_blur")
    assert not DSA("none")


# --- matching losses ----------------------------------------------------------------------------
def test_gradient_match_distance_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, -3.0]])       # row cosines 1 and -1
    bias_a, bias_b = torch.tensor([1.0, 2.0]), torch.tensor([-5.0, 0.5])
    d = gradient_match_distance([a, bias_a], [b, bias_b])
    assert d.item() == pytest.approx(2.0, abs=1e-5)   # (1-1) + (1-(-1)); biases are not matched
    conv = torch.randn(4, 3, 3, 3)
    assert gradient_match_distance([conv], [conv * 5]).item() == pytest.approx(0.0, abs=1e-5)
    assert gradient_match_distance([conv], [-conv]).item() == pytest.approx(8.0, abs=1e-4)  # 4 output channels x 2
    assert gradient_match_distance([a], [b], "mse").item() == pytest.approx(1 + 16)
    with pytest.raises(ValueError):
        gradient_match_distance([a], [b, b])


def test_mean_embedding_distance_zero_at_the_class_mean():
    real = torch.randn(50, 7)
    syn = real.mean(0, keepdim=True).repeat(3, 1)
    assert mean_embedding_distance(real, syn).item() == pytest.approx(0.0, abs=1e-10)
    shift = torch.zeros(7)
    shift[2] = 0.5
    assert mean_embedding_distance(real, syn + shift).item() == pytest.approx(0.25, rel=1e-5)


def test_attention_map_hand_computed():
    f = torch.tensor([[[[1.0, -2.0]], [[0.0, 1.0]]]])   # (1, C=2, 1, 2)
    a = attention_map(f, power=2)                       # sum_c f^2 = [1, 5] -> normalised
    assert torch.allclose(a, torch.tensor([[1.0, 5.0]]) / math.sqrt(26))


# --- methods on hand-made data ------------------------------------------------------------------
def constant_class_bundle(n_per_class=8, k=3, side=8):
    """Every image of class c is the same picture: real class means are known exactly."""
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(k, 1, side, side, generator=g)
    x = protos.repeat_interleave(n_per_class, 0)
    y = torch.arange(k).repeat_interleave(n_per_class)
    data = ArrayData(x, y)
    return DataBundle("const", data, data, data, k)


@pytest.mark.parametrize("name", ["dm", "datadam", "dc"])
def test_matching_loss_is_zero_when_synthetic_equals_real(name):
    bundle = constant_class_bundle()
    cls = potstill.METHODS.get(name)
    extra = {"outer_loop": 2, "inner_loop": 1} if name == "dc" else {}
    torch.manual_seed(0)
    method = cls.build(cls.Config(ipc=2, dsa="none", net=SMALL_NET, batch_real=4, **extra), BuildContext(data=bundle))
    # DC's cosine has eps=1e-6 in its denominator, so equal gradients give ~1e-6/|g|^2 per row, not 0
    tol = 2e-3 if name == "dc" else 1e-5
    assert method.loss({}, 0)["images"].item() == pytest.approx(0.0, abs=tol)
    with torch.no_grad():
        method.images.add_(0.3 * torch.randn_like(method.images))
    assert method.loss({}, 0)["images"].item() > 10 * tol


@pytest.mark.parametrize("name", ["dm", "datadam"])
def test_channels_last_matching_forward_is_the_same_math(name, monkeypatch):
    """The channels-last path of forward_by_class changes the memory layout, not the loss or its gradient."""
    from potstill.methods.dataset import base

    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 1, 12, 12, generator=g)
    bundle = DataBundle("t", ArrayData(x, torch.arange(3).repeat_interleave(8)), None, None, 3)
    cls = potstill.METHODS.get(name)
    method = cls.build(cls.Config(ipc=2, net=SMALL_NET, batch_real=4), BuildContext(data=bundle))
    out = {}
    for cl in (False, True):
        monkeypatch.setattr(base, "CHANNELS_LAST", cl)
        torch.manual_seed(5)              # the same random net, real batches and DSA draw
        method.images.grad = None
        loss = method.loss({}, 0)["images"]
        loss.backward()
        out[cl] = (loss.item(), method.images.grad.clone())
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-5)
    g = out[False][1]
    torch.testing.assert_close(out[True][1], g, rtol=1e-3, atol=1e-5 * g.abs().max().item())  # float order only


def test_dm_gradient_moves_synthetic_mean_toward_real_mean():
    """With a linear 'network' the DM gradient points from the synthetic to the real class mean."""
    bundle = constant_class_bundle(k=2)
    cls = potstill.METHODS.get("dm")
    torch.manual_seed(0)
    method = cls.build(cls.Config(ipc=3, init="noise", dsa="none", net={"name": "mlp", "hidden": []},
                                  batch_real=8), BuildContext(data=bundle))
    before = [(method.syn(c).mean(0) - bundle.train.x[bundle.train.y == c].mean(0)).norm() for c in range(2)]
    opt = torch.optim.SGD([method.images], lr=0.5)
    for step in range(20):
        opt.zero_grad()
        method.loss({}, step)["images"].backward()
        opt.step()
    after = [(method.syn(c).mean(0) - bundle.train.x[bundle.train.y == c].mean(0)).norm() for c in range(2)]
    assert all(a < 0.5 * b for a, b in zip(after, before))


def test_dc_loops_follow_the_paper_table():
    assert default_loops(1) == (1, 1) and default_loops(10) == (10, 50) and default_loops(50) == (50, 10)
    assert default_loops(15) == (10, 50)


def test_herding_and_k_center_on_hand_made_points():
    pts = torch.tensor([[0.0, 0.0], [10.0, 0.0], [-10.0, 0.0], [1.0, 0.0], [0.0, 9.0]])
    # mean = (0.2, 1.8). Herding: (0,0) is nearest the mean; then (1,0) keeps the running mean
    # (0.5, 0) closest; then (0,9) brings it to (1/3, 3) - by hand, distances 3.28, 3.33, 1.46
    assert herding(pts, 3).tolist() == [0, 3, 4]
    # k-center: start nearest the mean, then the farthest point (+10, first of a tie), then -10
    assert k_center(pts, 3).tolist() == [0, 1, 2]


# --- SyntheticSet files -------------------------------------------------------------------------
def test_synthetic_set_round_trip_hard_and_soft(tmp_path):
    x = torch.randn(6, 1, 5, 5)
    hard = SyntheticSet(x, torch.tensor([0, 0, 1, 1, 2, 2]), 3, {"method": "dm", "normalization": {"mean": [0.5], "std": [0.5]}})
    hard.save(tmp_path / "a")
    back = SyntheticSet.load(tmp_path / "a")
    assert torch.equal(back.images, x) and torch.equal(back.labels, hard.labels)
    assert back.ipc == 2 and back.meta["method"] == "dm" and back.label_bytes() == 6
    soft = SyntheticSet(x, torch.softmax(torch.randn(6, 3), 1), 3)
    soft.save(tmp_path / "b.safetensors")
    sb = SyntheticSet.load(tmp_path / "b.json")
    assert sb.soft and torch.equal(sb.labels, soft.labels) and sb.label_bytes() == 6 * 3 * 4
    meta = json.loads((tmp_path / "b.json").read_text())
    assert meta["label_kind"] == "soft" and meta["images_shape"] == [6, 1, 5, 5]
    png = hard.save_grid(tmp_path / "grid.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corrupted_or_mismatched_synthetic_set_is_rejected(tmp_path):
    s = SyntheticSet(torch.randn(4, 1, 3, 3), torch.tensor([0, 0, 1, 1]), 2)
    s.save(tmp_path / "s")
    raw = bytearray((tmp_path / "s.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "s.safetensors").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum"):
        SyntheticSet.load(tmp_path / "s")
    s.save(tmp_path / "t")
    meta = json.loads((tmp_path / "t.json").read_text())
    meta["num_classes"] = 1                                 # labels 1 are then out of range
    (tmp_path / "t.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 0\]"):
        SyntheticSet.load(tmp_path / "t")
    (tmp_path / "t.json").unlink()
    with pytest.raises(DataError, match="t.json: no such file"):
        SyntheticSet.load(tmp_path / "t")
    with pytest.raises(DataError, match="NaN"):
        SyntheticSet(torch.full((2, 1, 2, 2), float("nan")), torch.tensor([0, 1]), 2)
    with pytest.raises(DataError, match="hard labels"):
        SyntheticSet(torch.randn(2, 1, 2, 2), torch.tensor([0.0, 1.0]), 2)


# --- the protocol -------------------------------------------------------------------------------
def test_protocol_reports_mean_std_and_never_needs_test_to_choose(digits):
    syn = potstill.METHODS.get("random").build(potstill.METHODS.get("random").Config(ipc=2), BuildContext(data=digits)).export()
    cfg = SynEvalConfig(model=SMALL_NET, epochs=5, seeds=2)
    out = evaluate_synthetic(syn, digits, cfg)
    assert out["protocol"] == "dd-v1" and out["test_acc"]["n"] == 2 and len(out["val_acc"]["values"]) == 2
    assert out["eval_images_per_s"] > 0
    blind = DataBundle(digits.name, digits.train, digits.val, None, digits.num_classes)
    chosen, table = select_protocol(syn, blind, cfg, epochs=[2, 6], lrs=[0.01], seeds=1)
    assert chosen.epochs in (2, 6) and len(table) == 2 and all("val_acc" in t for t in table)
    # soft labels train with soft cross-entropy
    soft = SyntheticSet(syn.images, torch.nn.functional.one_hot(syn.labels, 10).float(), 10)
    assert evaluate_synthetic(soft, digits, SynEvalConfig(model=SMALL_NET, epochs=2, seeds=1))["label_kind"] == "soft"


def test_dm_ipc10_beats_random_subset_on_digits(tmp_path):
    """The issue's 30-second check: DM (300 steps) vs a random real subset, same protocol and seeds."""
    net = {"name": "convnet", "width": 32, "depth": 2, "first_padding": 1}
    ev = {"epochs": 100, "seeds": 3, "model": net}
    common = {"data": {"name": "digits"}, "eval": ev}
    rnd = potstill.core.run.run(potstill.resolve({**common, "method": {"name": "random", "ipc": 10},
                                                  "trainer": {"steps": 0, "progress": False, "threads": 1}}), tmp_path / "r")
    dm = potstill.core.run.run(potstill.resolve({
        **common, "method": {"name": "dm", "ipc": 10, "net": net, "batch_real": 64},
        "trainer": {"steps": 300, "batch_size": 1, "progress": False, "threads": 1, "ema_decay": 0,
                    "optim": {"images": {"name": "sgd", "lr": 3.0, "momentum": 0.5}}}}), tmp_path / "d")
    assert dm["eval"]["test_acc"]["mean"] > rnd["eval"]["test_acc"]["mean"] + 1.0
    assert (tmp_path / "d" / "export" / "synthetic.png").is_file()
    assert SyntheticSet.load(tmp_path / "d" / "export").ipc == 10
    assert dm["peak_rss_mib"] > 0


def test_dd_run_resumes_to_the_same_images(tmp_path, digits):
    recipe = {"method": {"name": "dm", "ipc": 2, "net": SMALL_NET, "batch_real": 16}, "data": {"name": "digits"},
              "eval": {"epochs": 1, "seeds": 1, "model": SMALL_NET},
              "trainer": {"steps": 6, "batch_size": 1, "progress": False, "threads": 1, "ema_decay": 0, "ckpt_every": 3,
                          "optim": {"images": {"name": "sgd", "lr": 1.0, "momentum": 0.5}}}}
    potstill.core.run.run(potstill.resolve(recipe), tmp_path / "straight", bundle=digits)
    potstill.core.run.run(potstill.resolve(recipe, ["trainer.steps=3"]), tmp_path / "split", bundle=digits)
    potstill.core.run.run(potstill.resolve(recipe), tmp_path / "split", resume=True, bundle=digits)
    a = SyntheticSet.load(tmp_path / "straight" / "export")
    b = SyntheticSet.load(tmp_path / "split" / "export")
    assert torch.equal(a.images, b.images)


def test_python_api_distills_and_evaluates_user_tensors(digits, tmp_path):
    x, y = digits.train.x, digits.train.y
    syn = potstill.distill_dataset((x, y), "dm", ipc=3, steps=5, progress=False, batch_real=16, net=SMALL_NET)
    assert isinstance(syn, potstill.SyntheticSet) and syn.images.shape == (30, 1, 8, 8) and syn.ipc == 3
    assert not torch.equal(syn.images, potstill.distill_dataset((x, y), "dm", ipc=3, steps=0, progress=False,
                                                                 batch_real=16, net=SMALL_NET).images)
    kc = potstill.distill_dataset((x, y), "kcenter", ipc=2, progress=False)
    assert kc.images.shape[0] == 20
    r = potstill.evaluate_synthetic_set(syn, val_data=(digits.val.x, digits.val.y), epochs=3, seeds=2, model=SMALL_NET)
    assert r["val_acc"]["n"] == 2 and "test_acc" not in r
    with pytest.raises(potstill.ConfigError, match="not a dataset-distillation method"):
        potstill.distill_dataset((x, y), "kd")
