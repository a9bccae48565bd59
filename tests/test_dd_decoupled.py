"""Decoupled dataset distillation (no unrolled training): SRe2L/CDA (D4), CV-DD (D3), INFER (D7), DQ (D5)."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import potstill
from potstill.core.config import ConfigError
from potstill.core.method import BuildContext
from potstill.data.augment import random_resized_crop
from potstill.losses.matching import bn_statistic_loss
from potstill.methods.dataset.cvdd import MemberConfig, committee_vote
from potstill.methods.dataset.dq import graphcut_bins, graphcut_gain, graphcut_value, similarity
from potstill.methods.dataset.infer import ipc_init
from potstill.methods.dataset.sre2l import BNStatistics, SRe2LConfig, crop_scale_min
from potstill.models import build_model

ROOT = Path(__file__).resolve().parents[1]
BN_NET = {"name": "convnet", "width": 8, "depth": 2, "norm": "batch", "first_padding": 1}


@pytest.fixture(scope="module")
def tiny():
    return potstill.load_dataset({"name": "digits", "train_size": 200})


def bn_teacher(bundle, seed=0):
    torch.manual_seed(seed)
    net = build_model(BN_NET, bundle.in_shape, bundle.num_classes)
    with torch.no_grad():       # give it non-trivial running statistics
        net.train()
        net(bundle.train.x[:64])
    return net.eval()


# --- the BN-statistic loss -------------------------------------------------------------------------
def test_bn_statistic_loss_is_zero_when_the_batch_reproduces_the_running_statistics():
    x = torch.randn(16, 3, 5, 5) * 2 + 1
    bn = nn.BatchNorm2d(3, momentum=1.0)        # momentum 1: running stats := this batch's stats
    bn.train()
    bn(x)
    # BN stores the unbiased variance; the loss (like BN's normalisation) uses the biased one
    n = x.numel() // 3
    bn.running_var.mul_((n - 1) / n)
    assert bn_statistic_loss(x, bn.running_mean, bn.running_var).item() == pytest.approx(0.0, abs=1e-5)
    # shifting one channel's mean by 0.5 costs exactly 0.5
    y = x.clone()
    y[:, 1] += 0.5
    assert bn_statistic_loss(y, bn.running_mean, bn.running_var).item() == pytest.approx(0.5, abs=1e-4)
    # two groups, each reproducing the statistics, sum to zero; a group that does not is counted
    both = torch.cat([x, x])
    assert bn_statistic_loss(both, bn.running_mean, bn.running_var, groups=2).item() == pytest.approx(0.0, abs=1e-5)
    assert bn_statistic_loss(torch.cat([x, y]), bn.running_mean, bn.running_var, groups=2).item() == \
        pytest.approx(0.5, abs=1e-4)
    with pytest.raises(ValueError, match="groups"):
        bn_statistic_loss(x, bn.running_mean, bn.running_var, groups=3)


def test_bn_hooks_cover_every_bn_layer_and_weight_the_first():
    net = build_model(BN_NET, (1, 8, 8), 10).eval()
    hooks = BNStatistics(net)
    assert len(hooks.layers) == 2
    x = torch.randn(20, 1, 8, 8, requires_grad=True)
    with hooks.recording(groups=2):
        net(x)
    assert len(hooks.losses) == 2
    assert hooks.total(10.0).item() == pytest.approx(10 * hooks.losses[0].item() + hooks.losses[1].item(), rel=1e-6)
    hooks.total(1.0).backward()
    assert x.grad.abs().sum() > 0, "the BN term reaches the images"
    net(x)                                  # outside recording nothing is kept
    assert len(hooks.losses) == 2


# --- crops and the CDA curriculum -----------------------------------------------------------------
def test_random_resized_crop_full_scale_is_identity_and_small_scale_zooms():
    x = torch.randn(4, 1, 8, 8)
    torch.manual_seed(0)
    out = random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(out, x, atol=1e-5)
    flipped = random_resized_crop(x.repeat(32, 1, 1, 1), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True)
    assert any(torch.allclose(f, x[i % 4].flip(-1), atol=1e-5) for i, f in enumerate(flipped))
    # a quarter-area crop of a constant-gradient ramp has a smaller range than the image
    ramp = torch.linspace(0, 1, 16).repeat(16, 1).view(1, 1, 16, 16).repeat(8, 1, 1, 1)
    small = random_resized_crop(ramp, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    assert ((small.amax((1, 2, 3)) - small.amin((1, 2, 3))) < 0.6).all()
    src = x.clone().requires_grad_(True)
    random_resized_crop(src, (0.3, 1.0), flip=True).sum().backward()
    assert src.grad is not None and src.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["step", "linear", "cosine"])
def test_cda_curriculum_moves_crop_scale_from_easy_to_hard(kind):
    cfg = SRe2LConfig(crop_scale=[0.08, 1.0], curriculum=kind, easy_scale_min=1.0, curriculum_steps=100,
                      milestone=0.3)
    lows = [crop_scale_min(cfg, s) for s in range(0, 121)]
    assert lows[0] == pytest.approx(1.0) and lows[100] == pytest.approx(0.08) and lows[120] == pytest.approx(0.08)
    assert all(a >= b - 1e-12 for a, b in zip(lows, lows[1:])), "never gets easier"
    if kind == "step":
        assert lows[29] == 1.0 and lows[30] == pytest.approx(0.08)
    if kind == "linear":
        assert lows[50] == pytest.approx(0.54)
    assert crop_scale_min(SRe2LConfig(crop_scale=[0.2, 1.0]), 0) == 0.2, "no curriculum: the hard scale throughout"


def test_cda_method_logs_the_scale_it_crops_with(tiny):
    cls = potstill.METHODS.get("cda")
    m = cls(cls.Config(ipc=1, crop_scale=[0.25, 1.0], curriculum_steps=10, easy_scale_min=1.0), tiny, bn_teacher(tiny))
    assert m.loss({}, 0)["log/crop_scale_min"].item() == pytest.approx(1.0)
    assert m.loss({}, 5)["log/crop_scale_min"].item() == pytest.approx(0.625)
    assert m.loss({}, 10)["log/crop_scale_min"].item() == pytest.approx(0.25)


# --- SRe2L ---------------------------------------------------------------------------------------
def test_sre2l_recovery_lowers_its_objective_and_exports_teacher_soft_labels(tiny):
    cls = potstill.METHODS.get("sre2l")
    teacher = bn_teacher(tiny)
    torch.manual_seed(0)
    m = cls(cls.Config(ipc=2, r_bn=0.1, crop_scale=[1.0, 1.0], flip=False, temperature=2.0), tiny, teacher)
    opt = torch.optim.Adam([m.images], lr=0.1)
    first = m.loss({}, 0)["images"].item()
    for step in range(30):
        opt.zero_grad()
        m.loss({}, step)["images"].backward()
        opt.step()
    assert m.loss({}, 30)["images"].item() < 0.75 * first
    s = m.export()
    want = torch.softmax(teacher(m.images.detach()) / 2.0, 1)
    assert s.soft and torch.allclose(s.labels, want, atol=1e-6)
    assert s.label_bytes() == 20 * 10 * 4, "one float32 soft label per image: N * K * 4 bytes"
    hard = cls(cls.Config(ipc=2, relabel=False), tiny, teacher).export()
    assert not hard.soft and hard.label_bytes() == 20 and hard.ipc == 2


def test_sre2l_refuses_a_teacher_without_batch_norm(tiny):
    cls = potstill.METHODS.get("sre2l")
    plain = build_model({"name": "convnet", "width": 8, "depth": 2}, tiny.in_shape, 10)
    with pytest.raises(ConfigError, match="teacher.model: .*no BatchNorm"):
        cls.build(cls.Config(ipc=1), BuildContext(data=tiny, teacher_module=plain))


@pytest.mark.parametrize("method,override,key", [
    ("sre2l", "method.r_bn=-1", "r_bn"),
    ("sre2l", "method.crop_scale=[0.5, 0.2]", "crop_scale"),
    ("cda", "method.curriculum=none", "curriculum"),
    ("cda", "method.easy_scale_min=0.01", "easy_scale_min"),
    ("cvdd", "method.members_per_step=9", "members_per_step"),
    ("cvdd", "method.committee=[]", "committee"),
    ("infer", "method.jitter=-1", "jitter"),
    ("dq", "method.ratio=1.5", "ratio"),
    ("dq", "method.bins=0", "bins"),
])
def test_config_errors_name_the_key(method, override, key):
    with pytest.raises(ConfigError, match=key):
        potstill.resolve(ROOT / f"recipes/dd/digits/{method}.yaml", [override])


# --- CV-DD ---------------------------------------------------------------------------------------
def test_committee_vote_is_order_invariant_and_weights_prior_performance():
    torch.manual_seed(0)
    logits = [torch.randn(7, 5) for _ in range(4)]
    acc = torch.tensor([0.9, 0.5, 0.7, 0.95])
    v = committee_vote(logits, acc, tau=0.1, temperature=2.0)
    assert torch.allclose(v.sum(1), torch.ones(7), atol=1e-6)
    for perm in ([3, 2, 1, 0], [1, 3, 0, 2]):
        assert torch.allclose(committee_vote([logits[i] for i in perm], acc[perm], 0.1, 2.0), v, atol=1e-6)
    # a very large tau is the plain average; a tiny one follows the best member
    avg = torch.stack([torch.softmax(z, 1) for z in logits]).mean(0)
    assert torch.allclose(committee_vote(logits, acc, 1e6), avg, atol=1e-5)
    assert torch.allclose(committee_vote(logits, acc, 1e-4), torch.softmax(logits[3], 1), atol=1e-5)


def test_cvdd_export_is_the_same_whatever_the_committee_order(tiny):
    cls = potstill.METHODS.get("cvdd")
    members = [bn_teacher(tiny, s) for s in range(3)]
    members[2] = build_model({"name": "resnet", "width": 4, "blocks": [1], "norm": "batch"}, tiny.in_shape, 10).eval()
    accs = [0.6, 0.8, 0.7]
    cfg = cls.Config(ipc=1, init="real", vote_temperature=0.05, committee=[MemberConfig()] * 3)
    torch.manual_seed(1)
    a = cls(cfg, tiny, members, accs)
    torch.manual_seed(1)
    b = cls(cfg, tiny, members[::-1], accs[::-1])
    assert torch.equal(a.images, b.images)
    la, lb = a.export().labels, b.export().labels
    assert torch.allclose(la, lb, atol=1e-6) and a.export().label_bytes() == 10 * 10 * 4
    # the weights favour the best member; recovery uses the drawn members' renormalised weights
    w = a.weights()
    assert w.argmax() == 1 and w.sum().item() == pytest.approx(1.0)
    out = a.loss({}, 0)
    assert out["images"].requires_grad and torch.isfinite(out["images"])


def test_cvdd_trains_its_committee_and_rejects_members_without_bn(tiny):
    cls = potstill.METHODS.get("cvdd")
    cfg = cls.Config(ipc=1, committee=[MemberConfig(model=BN_NET, epochs=2, batch_size=64),
                                       MemberConfig(model={**BN_NET, "width": 6}, epochs=2, batch_size=64)],
                     members_per_step=1)
    m = cls.build(cfg, BuildContext(data=tiny))
    assert len(m.teacher) == 2 and all(0.0 <= a <= 1.0 for a in m.prior.tolist())
    assert not any(k.startswith("teacher.") for k in m.trainable_state())
    bad = cls.Config(ipc=1, committee=[MemberConfig(model={"name": "convnet", "width": 4, "depth": 1}, epochs=1)],
                     members_per_step=1)
    with pytest.raises(ConfigError, match=r"method.committee\[0\].model"):
        cls.build(bad, BuildContext(data=tiny))


def test_cvdd_patch_init_keeps_real_images_ranked_by_the_committee_loss(tiny):
    from potstill.methods.dataset.base import ClassIndex
    from potstill.methods.dataset.cvdd import select_patches

    real = ClassIndex(tiny.train, 10)

    class Fixed(nn.Module):
        """Logits that make the loss of class c on image x equal to x's mean pixel (known ranking)."""

        def forward(self, x):
            s = x.flatten(1).mean(1, keepdim=True)
            return torch.cat([-s, torch.zeros(len(x), 9)], 1)   # class 0 probability falls with s

    def picked(difficulty):
        torch.manual_seed(0)
        return select_patches(real, [Fixed()], torch.ones(1), 10, 2, 5, difficulty)

    easy, medium, hard = picked("easy"), picked("medium"), picked("hard")
    assert easy.shape == (20, *tiny.in_shape)
    torch.manual_seed(0)
    cand = real.sample(0, 10)
    score = cand.flatten(1).mean(1).sort().values      # class-0 loss is increasing in the mean pixel
    for got, want in ((easy, score[:2]), (medium, score[4:6]), (hard, score[8:])):
        assert torch.allclose(got[:2].flatten(1).mean(1).sort().values, want)
    # every kept image is a real training image of its class
    for c in range(10):
        rows = tiny.train.x[tiny.train.y == c].flatten(1)
        for img in medium[2 * c:2 * c + 2]:
            assert (rows == img.flatten()).all(1).any()
    # the method starts from them (init: patches is CV-DD's default)
    cls = potstill.METHODS.get("cvdd")
    members, accs = [bn_teacher(tiny, s) for s in range(2)], [0.5, 0.5]
    torch.manual_seed(3)
    m = cls(cls.Config(ipc=1, committee=[MemberConfig()] * 2), tiny, members, accs)
    for c in range(10):
        assert (tiny.train.x[tiny.train.y == c].flatten(1) == m.images[c].detach().flatten()).all(1).any()


def test_committee_members_trained_once_are_reloaded_from_the_member_cache(tiny, tmp_path, monkeypatch):
    from potstill.methods.dataset import cvdd

    mc = MemberConfig(model=BN_NET, epochs=1, batch_size=64)
    first, acc = cvdd.squeeze_member(mc, tiny, 3, "m", tmp_path)
    assert len(list(tmp_path.glob("member_*.safetensors"))) == 1
    monkeypatch.setattr(cvdd.F, "cross_entropy", lambda *a, **k: pytest.fail("a cached member was retrained"))
    again, acc2 = cvdd.squeeze_member(mc, tiny, 3, "m", tmp_path)
    assert acc2 == acc and all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    # another seed or spec is another member
    assert cvdd.member_cache_file(mc, tiny, 4, tmp_path) != cvdd.member_cache_file(mc, tiny, 3, tmp_path)
    assert cvdd.member_cache_file(MemberConfig(model=BN_NET, epochs=2, batch_size=64), tiny, 3, tmp_path) \
        != cvdd.member_cache_file(mc, tiny, 3, tmp_path)


# --- INFER ---------------------------------------------------------------------------------------
def test_infer_budget_split():
    assert ipc_init(10, 4, 100) == 9 and ipc_init(10, 1, 10) == 9 and ipc_init(10, 3, 10) == 7
    for ipc, m, k in [(10, 4, 100), (10, 3, 10), (50, 3, 10), (1, 1, 10)]:
        r = ipc_init(ipc, m, k)
        assert r * (k + m) <= ipc * k, "real images plus compensators fit the budget"


def test_infer_compensator_is_shared_across_classes(tiny):
    cls = potstill.METHODS.get("infer")
    torch.manual_seed(0)
    m = cls(cls.Config(ipc=10, jitter=0, flip=False), tiny, [bn_teacher(tiny)])
    r = m.n_real
    assert r == 9 and m.compensators.shape[0] == 9
    with torch.no_grad():
        m.compensators[4] = torch.randn(*tiny.in_shape)
    x, y = m.expanded()
    per_class = r * 2
    assert len(x) == 10 * per_class and torch.equal(y, torch.arange(10).repeat_interleave(per_class))
    # slot 4 is real image 4 of *every* class plus the same u
    for c in range(10):
        assert torch.allclose(x[c * per_class + r + 4] - m.real[c, 4], m.compensators[4], atol=1e-6)
    # the gradient of one compensator collects the loss of every class
    m.loss({}, 0)["compensators"].backward()
    assert (m.compensators.grad.flatten(1).abs().sum(1) > 0).all()
    s = m.export()
    assert s.soft and s.label_bytes() == len(x) * 10 * 4 and s.meta["stored_images"] == 10 * r + r <= 100
    base = cls(cls.Config(ipc=10, compensate=False), tiny, [bn_teacher(tiny)])
    assert base.param_groups() == {} and len(base.export().images) == 100


def test_infer_static_labels_average_the_teachers_logits(tiny):
    cls = potstill.METHODS.get("infer")
    t1, t2 = bn_teacher(tiny, 0), bn_teacher(tiny, 1)
    m = cls(cls.Config(ipc=2, temperature=3.0), tiny, [t1, t2])
    x, _ = m.expanded()
    want = torch.softmax((t1(x) + t2(x)) / 2 / 3.0, 1)
    assert torch.allclose(m.export().labels, want, atol=1e-5)


# --- DQ ------------------------------------------------------------------------------------------
def test_graphcut_gain_is_the_marginal_value_and_has_diminishing_returns():
    g = torch.Generator().manual_seed(0)
    sim = similarity(torch.randn(12, 4, generator=g))
    assert (sim >= 0).all() and torch.allclose(sim, sim.t())
    ground = torch.arange(12)
    small, large = torch.tensor([0, 3]), torch.tensor([0, 3, 5, 7, 9])
    for lam in (1.0, 4.0):
        for S in (small, large):
            gains = graphcut_gain(sim, ground, S, lam)
            for x in range(12):
                if x in S.tolist():
                    continue
                delta = graphcut_value(sim, ground, torch.cat([S, torch.tensor([x])]), lam) - \
                    graphcut_value(sim, ground, S, lam)
                assert gains[x].item() == pytest.approx(delta, abs=1e-4)
        # diminishing returns: small is a subset of large, so every outside x gains less from large
        g_small, g_large = graphcut_gain(sim, ground, small, lam), graphcut_gain(sim, ground, large, lam)
        outside = [x for x in range(12) if x not in large.tolist()]
        assert (g_small[outside] >= g_large[outside] - 1e-6).all()
    # with a large enough lambda the function is also monotone (every gain positive)
    assert (graphcut_gain(sim, ground, large, 20.0) > 0).all()


def test_graphcut_bins_partition_each_class_and_dq_samples_every_bin(tiny):
    sim = similarity(torch.randn(23, 5))
    bins = graphcut_bins(sim, 4)
    assert sorted(len(b) for b in bins) == [5, 6, 6, 6]
    assert sorted(torch.cat(bins).tolist()) == list(range(23)), "non-overlapping and covering"
    cls = potstill.METHODS.get("dq")
    m = cls.build(cls.Config(ratio=0.2, bins=4), BuildContext(data=tiny))
    s = m.export()
    counts = torch.bincount(s.labels, minlength=10)
    want = torch.tensor([max(1, round(0.2 * int((tiny.train.y == c).sum()))) for c in range(10)])
    assert torch.equal(counts, want) and s.label_bytes() == len(s.labels)
    # the picks come from the class's own training images
    train = {tuple(r.flatten().tolist()) for r in tiny.train.x}
    assert all(tuple(r.flatten().tolist()) in train for r in s.images)


# --- recipes through the API ---------------------------------------------------------------------
def test_each_recipe_runs_three_steps_through_the_api(tmp_path):
    teacher = potstill.run_recipe(ROOT / "recipes/dd/teacher_bn_digits.yaml", tmp_path / "teacher",
                               overrides=["trainer.steps=3", "trainer.progress=false", "trainer.eval_every=0"])
    ckpt = teacher["export"]
    fast_member = "{model: {name: convnet, width: 8, depth: 2, norm: batch, first_padding: 1}, epochs: 1}"
    extra = {"cvdd": [f"method.committee=[{fast_member}, {fast_member}]"],
             "infer": [f"method.extra_teachers=[{fast_member}]"]}
    for name in ("sre2l", "cda", "cvdd", "infer", "dq"):
        ov = ["trainer.progress=false", "eval.epochs=1", "eval.seeds=1", f"teacher.checkpoint={ckpt}",
              *extra.get(name, [])]
        if name != "dq":
            ov.append("trainer.steps=3")
        if name == "cvdd":
            ov = [o for o in ov if not o.startswith("teacher.")]
        s = potstill.run_recipe(ROOT / f"recipes/dd/digits/{name}.yaml", tmp_path / name, overrides=ov)
        assert s["steps"] == (0 if name == "dq" else 3), name
        assert "test_acc" in s["eval"] and s["label_bytes"] > 0
        assert s["soft_labels"] == (name != "dq")
