"""KRR-ST (D9): the closed-form kernel ridge regression, the learnable images and targets, the model
pool, the Barlow Twins teacher's loss, regression-target synthetic sets and the transfer protocol."""
import pytest
import torch
import torch.nn.functional as F

import potstill
from potstill.core.method import BuildContext
from potstill.data import DataError
from potstill.data.synthetic_set import SyntheticSet
from potstill.eval import transfer
from potstill.losses import barlow_twins_loss
from potstill.methods.dataset.krr_st import PoolMember, kmeans, krr_predict, nearest_distinct, with_bias
from potstill.models import build_model

TINY_NET = {"name": "convnet", "width": 8, "depth": 2, "norm": "instance", "pooling": "avg", "first_padding": 1}


@pytest.fixture(scope="module")
def tiny():
    return potstill.load_dataset({"name": "digits", "train_size": 200})


def ssl_teacher(bundle, seed=0):
    torch.manual_seed(seed)
    net = build_model({**TINY_NET, "width": 12, "norm": "batch"}, bundle.in_shape, bundle.num_classes)
    with torch.no_grad():
        net.train()
        net(bundle.train.x[:64])
    return net.eval()


def krr_method(bundle, **cfg):
    cls = potstill.METHODS.get("krr_st")
    torch.manual_seed(0)
    cfg = {"ipc": 2, "net": TINY_NET, "batch_real": 32, "pool_size": 2, "pool_reset": 5, **cfg}
    return cls.build(cls.Config(**cfg), BuildContext(data=bundle, teacher_module=ssl_teacher(bundle)))


# --- the closed form -------------------------------------------------------------------------------
def conjugate_gradient(a: torch.Tensor, b: torch.Tensor, iters: int = 500) -> torch.Tensor:
    """Solve a x = b (a symmetric positive definite) column by column, iteratively."""
    x = torch.zeros_like(b)
    r = b - a @ x
    p = r.clone()
    rs = (r * r).sum(0)
    for _ in range(iters):
        ap = a @ p
        alpha = rs / (p * ap).sum(0)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum(0)
        if float(rs_new.max()) < 1e-26:
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x


def test_krr_closed_form_equals_iterative_ridge_regression():
    g = torch.Generator().manual_seed(0)
    f_s, f_r = torch.randn(12, 7, generator=g, dtype=torch.float64), torch.randn(9, 7, generator=g, dtype=torch.float64)
    y_s = torch.randn(12, 4, generator=g, dtype=torch.float64)
    pred, lam = krr_predict(f_s, f_r, y_s, ridge=1e-2)
    fs, fr = with_bias(f_s), with_bias(f_r)
    assert lam.item() == pytest.approx(1e-2 * float((fs * fs).sum()))        # tr(K_ss) = ||F_s||_F^2
    # dual, by conjugate gradient on (K_ss + lambda I) alpha = Y_s
    alpha = conjugate_gradient(fs @ fs.t() + lam * torch.eye(12, dtype=torch.float64), y_s)
    torch.testing.assert_close(pred, (fr @ fs.t()) @ alpha, atol=1e-8, rtol=1e-7)
    # primal ridge regression min ||F_s W - Y||^2 + lambda ||W||^2 by least squares on the stacked system
    a = torch.cat([fs, lam.sqrt() * torch.eye(fs.shape[1], dtype=torch.float64)])
    b = torch.cat([y_s, torch.zeros(fs.shape[1], 4, dtype=torch.float64)])
    w = torch.linalg.lstsq(a, b).solution
    torch.testing.assert_close(pred, fr @ w, atol=1e-8, rtol=1e-7)
    # and by plain gradient descent on the same objective
    w_gd = torch.zeros_like(w)
    step = 1.0 / (2 * torch.linalg.eigvalsh(fs.t() @ fs).max() + 2 * lam)
    for _ in range(20000):
        w_gd -= step * (2 * fs.t() @ (fs @ w_gd - y_s) + 2 * lam * w_gd)
    torch.testing.assert_close(pred, fr @ w_gd, atol=1e-6, rtol=1e-5)


def test_lambda_scales_with_the_trace_so_predictions_ignore_feature_scale():
    g = torch.Generator().manual_seed(1)
    f_s, f_r, y_s = torch.randn(10, 30, generator=g), torch.randn(6, 30, generator=g), torch.randn(10, 3, generator=g)
    # scaling every feature (bias column included) by c scales K and lambda by c^2: same predictions
    pred1, lam1 = krr_predict(f_s, f_r, y_s, ridge=1e-3)
    fs, fr = with_bias(f_s), with_bias(f_r)
    c = 5.0
    k_ss, k_rs = (c * fs) @ (c * fs).t(), (c * fr) @ (c * fs).t()
    lam_c = 1e-3 * torch.trace(k_ss)
    assert float(lam_c) == pytest.approx(c * c * float(lam1), rel=1e-5)
    pred_c = k_rs @ torch.linalg.solve(k_ss + lam_c * torch.eye(10), y_s)
    torch.testing.assert_close(pred_c, pred1, atol=1e-4, rtol=1e-4)
    # a larger ridge shrinks the fit towards zero; lambda carries no gradient
    pred_big, _ = krr_predict(f_s, f_r, y_s, ridge=10.0)
    assert pred_big.norm() < pred1.norm()
    fs_req = f_s.clone().requires_grad_(True)
    _, lam = krr_predict(fs_req, f_r, y_s)
    assert not lam.requires_grad


# --- the method ------------------------------------------------------------------------------------
def test_gradients_reach_images_and_targets_and_initial_targets_are_the_teachers(tiny):
    m = krr_method(tiny)
    n, d = 2 * tiny.num_classes, m.targets.shape[1]
    assert m.images.shape == (n, *tiny.in_shape) and m.targets.shape == (n, d)
    with torch.no_grad():     # init: real images, targets t(x) of the frozen teacher
        torch.testing.assert_close(m.targets, m.teacher.model.embed(m.images).flatten(1))
    out = m.loss({}, 0)
    assert torch.isfinite(out["images"]) and out["images"] is out["targets"]
    gx, gy = torch.autograd.grad(out["images"], [m.images, m.targets])
    assert gx.abs().sum() > 0 and gy.abs().sum() > 0
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    assert not any(p.grad is not None for p in m.teacher.model.parameters())


def test_a_few_outer_steps_lower_the_loss_on_a_fixed_real_batch(tiny):
    m = krr_method(tiny, dsa="none", pool_size=1, pool_stagger=False, pool_lr=0.0)   # one frozen model
    x_real = tiny.train.x[:64]
    with torch.no_grad():
        y_real = m.teacher.model.embed(x_real).flatten(1)
    net = m.pool[0].net.eval()

    def outer():
        pred, _ = krr_predict(net.embed(m.images), net.embed(x_real).detach(), m.targets, m.cfg.ridge)
        return F.mse_loss(pred, y_real)

    opt = torch.optim.Adam([m.images, m.targets], lr=1e-2)
    first = float(outer().detach())
    for _ in range(15):
        opt.zero_grad()
        outer().backward()
        opt.step()
    assert float(outer().detach()) < 0.8 * first


def test_pool_member_sgd_is_torch_sgd_and_resets_after_pool_reset_uses(tiny):
    torch.manual_seed(0)
    net = build_model(TINY_NET, tiny.in_shape, 5)
    ref = build_model(TINY_NET, tiny.in_shape, 5)
    ref.load_state_dict(net.state_dict())
    member = PoolMember(net)
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    x, y = tiny.train.x[:10], torch.randn(10, 5)
    for _ in range(3):
        member.sgd_step(x, y, 0.05, 0.9, 1e-3)
        opt.zero_grad()
        F.mse_loss(ref(x), y).backward()
        opt.step()
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert int(member.uses) == 3
    # the method re-initialises a member once it was used pool_reset times
    m = krr_method(tiny, pool_size=1, pool_reset=3, pool_stagger=False)
    uses = []
    for step in range(5):
        m.loss({}, step)
        uses.append(int(m.pool[0].uses))
    assert uses == [1, 2, 3, 1, 2]


def test_staggered_pool_and_state_round_trip(tiny):
    m = krr_method(tiny, pool_size=3, pool_reset=6)
    assert not bool(m.pool_ready)
    m.loss({}, 0)
    assert bool(m.pool_ready) and all(1 <= int(p.uses) <= 6 for p in m.pool)
    state = m.trainable_state()
    assert any(k.startswith("pool.") and "momentum" in k for k in state) and not any(k.startswith("teacher.") for k in state)
    fresh = krr_method(tiny, pool_size=3, pool_reset=6)
    fresh.load_state_dict(state, strict=False)
    for k, v in fresh.trainable_state().items():
        assert torch.equal(v, state[k]), k


def test_kmeans_init_picks_distinct_real_images_and_export_carries_targets(tiny):
    feats = torch.cat([torch.randn(30, 2) + 10, torch.randn(30, 2) - 10])
    torch.manual_seed(0)
    c = kmeans(feats, 2, iters=10)
    assert sorted(c[:, 0].sign().tolist()) == [-1.0, 1.0]
    rows = nearest_distinct(feats, torch.zeros(3, 2))
    assert len(set(rows.tolist())) == 3
    m = krr_method(tiny, init="kmeans")
    x = m.images.detach()
    hits = [(tiny.train.x == x[i]).flatten(1).all(1).nonzero().flatten() for i in range(len(x))]
    assert all(len(h) >= 1 for h in hits) and len({int(h[0]) for h in hits}) == len(x)
    syn = m.export()
    assert syn.label_kind == "regression" and syn.targets.shape == m.targets.shape
    assert syn.label_bytes() == len(x) * m.targets.shape[1] * 4


# --- the Barlow Twins teacher ----------------------------------------------------------------------
def test_barlow_twins_loss_by_hand():
    a = torch.tensor([1.0, -1.0, 1.0, -1.0])
    b = torch.tensor([1.0, 1.0, -1.0, -1.0])     # zero mean, unit (biased) variance, uncorrelated with a
    z = torch.stack([a, b], 1)
    assert barlow_twins_loss(z, z, 0.5).item() == pytest.approx(0.0, abs=1e-4)              # C = I
    assert barlow_twins_loss(3 * z + 2, z, 0.5).item() == pytest.approx(0.0, abs=1e-4)      # affine-invariant
    # view 2 repeats dimension a: C = [[1, 1], [0, 0]] -> (1-1)^2 + (1-0)^2 + 0.5 * (1^2 + 0^2)
    assert barlow_twins_loss(z, torch.stack([a, a], 1), 0.5).item() == pytest.approx(1.5, abs=1e-3)
    # anti-correlated views: C = -I -> 2 * (1 - (-1))^2
    assert barlow_twins_loss(z, -z, 0.5).item() == pytest.approx(8.0, abs=1e-3)
    with pytest.raises(ValueError):
        barlow_twins_loss(z, z[:, :1])


def test_barlow_twins_method_never_reads_labels(tiny):
    cls = potstill.METHODS.get("barlow_twins")
    torch.manual_seed(0)
    student = build_model(TINY_NET, tiny.in_shape, 10)
    m = cls.build(cls.Config(projector=[16, 16]), BuildContext(data=tiny, student_module=student))
    data = m.train_data(tiny)
    assert (data.y == -1).all() and len(data) == len(tiny.train) + len(tiny.unlabeled)
    out = m.loss({"x": tiny.train.x[:16]}, 0)
    assert torch.isfinite(out["encoder"]) and out["encoder"] > 0
    ev = m.evaluate(tiny.val)
    assert 0 <= ev["acc"] <= 1 and ev["repr_std"] > 0


# --- regression-target synthetic sets --------------------------------------------------------------
def test_synthetic_set_with_targets_round_trips(tmp_path):
    x, y, t = torch.randn(6, 1, 4, 4), torch.tensor([0, 0, 1, 1, 2, 2]), torch.randn(6, 5)
    s = SyntheticSet(x, y, 3, {"method": "krr_st"}, targets=t)
    assert s.label_kind == "regression" and s.label_bytes() == 6 * 5 * 4 and not s.soft and s.ipc == 2
    s.save(tmp_path / "set")
    back = SyntheticSet.load(tmp_path / "set")
    assert torch.equal(back.images, x) and torch.equal(back.labels, y) and torch.equal(back.targets, t)
    assert back.meta == {"method": "krr_st"}
    plain = SyntheticSet(x, y, 3)                 # sets without targets are unchanged
    plain.save(tmp_path / "plain")
    assert SyntheticSet.load(tmp_path / "plain").targets is None
    with pytest.raises(DataError, match="regression targets"):
        SyntheticSet(x, y, 3, targets=torch.randn(5, 5))


# --- the transfer protocol -------------------------------------------------------------------------
def test_transfer_chooses_on_validation_and_reads_test_once_at_the_end(tiny, monkeypatch):
    cfg = transfer.TransferConfig(model=TINY_NET, pretrain_epochs=2, finetune_epochs=[1, 2], finetune_lrs=[0.01],
                                  linear_wds=[1e-3, 1e-1], linear_steps=5, seeds=3, select_seeds=2, finetune_dsa="none")
    calls = []
    real_accuracy = transfer.accuracy

    def spy(model, data, batch_size=256):
        calls.append("test" if data is tiny.test else "val" if data is tiny.val else "other")
        return real_accuracy(model, data, batch_size)

    monkeypatch.setattr(transfer, "accuracy", spy)
    syn = (tiny.train.x[:20], torch.randn(20, 6))
    r = transfer.evaluate_transfer(syn, tiny, cfg)
    assert "other" not in calls and calls.count("test") == cfg.seeds * len(cfg.modes)
    assert max(i for i, c in enumerate(calls) if c == "val") < calls.index("test")
    assert r["finetune"]["test_acc"]["n"] == 3 and r["linear"]["chosen"]["wd"] in (1e-3, 1e-1)
    assert len(r["pretrain"]) == 3 and r["pretrain"][0]["mse_last"] is not None
    # the choice does not depend on the test labels
    shuffled = potstill.data.DataBundle(tiny.name, tiny.train, tiny.val,
                                        potstill.data.ArrayData(tiny.test.x, tiny.test.y.flip(0)), tiny.num_classes)
    r2 = transfer.evaluate_transfer(syn, shuffled, cfg)
    assert r2["finetune"]["chosen"] == r["finetune"]["chosen"] and r2["linear"]["chosen"] == r["linear"]["chosen"]
    assert r2["finetune"]["val_acc"] == r["finetune"]["val_acc"]


def test_transfer_without_pretraining_and_resized_target(tiny):
    big = transfer.resize_task(tiny, 28, 0.286, 0.353)
    assert big.train.x.shape[1:] == (1, 28, 28) and big.normalization == {"mean": [0.286], "std": [0.353]}
    background = (0 - 0.286) / 0.353                 # a digits pixel of 0 (value -1 in [-1, 1])
    assert float(big.train.x.min()) == pytest.approx(background, abs=1e-5)
    cfg = transfer.TransferConfig(model=TINY_NET, finetune_epochs=[1], finetune_lrs=[0.01], linear_wds=[1e-2],
                                  linear_steps=5, seeds=1, select_seeds=1, modes=["linear"])
    r = transfer.evaluate_transfer(None, tiny, cfg, test=False)
    assert r["pretrain"] is None and "test_acc" not in r["linear"] and 0 <= r["linear"]["val_acc"]["mean"] <= 100
    with pytest.raises(ValueError, match="regression targets"):
        transfer.evaluate_transfer(SyntheticSet(tiny.train.x[:4], torch.zeros(4, dtype=torch.long), 10), tiny, cfg)
