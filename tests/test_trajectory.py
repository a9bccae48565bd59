"""Trajectory matching: expert buffers, MTT's distance and unroll, and the FTD / DATM / AST parts."""
import json

import pytest
import torch

import potstill
from potstill.core.config import ConfigError
from potstill.core.method import BuildContext
from potstill.data import DataError
from potstill.data.trajectories import ZCA, ExpertBuffer
from potstill.losses.matching import trajectory_distance
from potstill.methods.dataset.experts import ExpertConfig, expert_buffer, expert_objective, train_experts
from potstill.methods.dataset.mtt import FlatNet, surrogate

NET = {"name": "convnet", "width": 4, "depth": 2, "norm": "instance", "pooling": "avg", "first_padding": 1}


@pytest.fixture(scope="module")
def small_digits():
    return potstill.load_dataset({"name": "digits", "train_size": 300})


@pytest.fixture(scope="module")
def buffer_dir(tmp_path_factory, small_digits):
    root = tmp_path_factory.mktemp("experts") / "buf"
    train_experts(ExpertConfig(num=2, epochs=4, batch_size=32, lr=0.05), NET, small_digits, root, progress=False)
    return root


def build(name, data, buffer_dir, **cfg):
    cls = potstill.METHODS.get(name)
    base = dict(ipc=2, net=NET, buffer=str(buffer_dir), syn_steps=3, expert_epochs=1, max_start_epoch=2, dsa="none")
    torch.manual_seed(0)
    return cls.build(cls.Config(**{**base, **cfg}), BuildContext(data=data))


# --- the distance and the buffer --------------------------------------------------------------
def test_trajectory_distance_hand_computed():
    end, start, target = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]), torch.tensor([2.0, 0.0])
    # ||(1,1) - (2,0)||^2 = 2 over ||(0,0) - (2,0)||^2 = 4
    assert trajectory_distance(end, start, target).item() == pytest.approx(0.5)
    assert trajectory_distance(target, start, target).item() == 0.0


def test_buffer_round_trip_and_layout(buffer_dir, small_digits):
    buf = ExpertBuffer.load(buffer_dir)
    assert len(buf) == 2 and buf.epochs == 4
    net = potstill.build_model(NET, small_digits.in_shape, 10)
    assert buf.num_params == sum(p.numel() for p in net.parameters())
    assert [n for n, _ in buf.meta["layout"]] == [n for n, _ in net.named_parameters()]
    # epoch 0 is the initialisation, every later epoch moved the weights
    steps = [(buf.snapshot(0, e + 1) - buf.snapshot(0, e)).norm().item() for e in range(4)]
    assert min(steps) > 0
    assert 0 <= buf.meta["experts"][0]["val_acc"] <= 1


def test_buffer_generation_resumes_expert_by_expert(tmp_path, small_digits):
    cfg = ExpertConfig(num=2, epochs=2, batch_size=64, dsa="none")
    whole = train_experts(cfg, NET, small_digits, tmp_path / "a", progress=False)
    train_experts(ExpertConfig(**{**cfg.__dict__, "num": 1}), NET, small_digits, tmp_path / "b", progress=False)
    resumed = train_experts(cfg, NET, small_digits, tmp_path / "b", progress=False)  # "killed" after expert 1
    for a, b in zip(whole.trajectories, resumed.trajectories):
        assert torch.equal(a, b)


def test_buffer_generation_resumes_inside_an_expert(tmp_path, small_digits, monkeypatch):
    """A run killed after an expert's 2nd epoch restarts from that epoch, bit for bit."""
    from potstill.methods.dataset import experts

    cfg = ExpertConfig(num=1, epochs=3, batch_size=64, lr=0.05)   # default DSA: its seeds come from the generator
    whole = train_experts(cfg, NET, small_digits, tmp_path / "a", progress=False)
    save = experts._save_partial

    def save_then_die(root, expert, done, *args):
        save(root, expert, done, *args)
        if done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(experts, "_save_partial", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_experts(cfg, NET, small_digits, tmp_path / "b", progress=False)
    assert (tmp_path / "b" / experts.PARTIAL).is_file() and len(ExpertBuffer.load(tmp_path / "b")) == 0
    monkeypatch.setattr(experts, "_save_partial", save)
    calls = []
    monkeypatch.setattr(experts, "expert_objective", lambda *a, **k: calls.append(1) or expert_objective(*a, **k))
    resumed = train_experts(cfg, NET, small_digits, tmp_path / "b", progress=False)
    assert len(calls) == 5                       # only the 3rd epoch ran again: 300 examples / 64 per batch
    assert torch.equal(whole.trajectories[0], resumed.trajectories[0])
    assert not (tmp_path / "b" / experts.PARTIAL).exists()
    assert resumed.meta["experts"][0]["train_s"] > 0          # seconds of both runs, for the buffer's cost


def test_buffer_rejects_corruption_and_other_settings(tmp_path, buffer_dir, small_digits):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(buffer_dir, bad)
    with open(bad / "expert_001.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    with pytest.raises(DataError, match="expert_001.safetensors: checksum"):
        ExpertBuffer.load(bad)
    (bad / "expert_001.safetensors").unlink()
    with pytest.raises(DataError, match="missing"):
        ExpertBuffer.load(bad)
    meta = json.loads((buffer_dir / "buffer.json").read_text())
    meta["num_params"] += 1
    shutil.rmtree(bad)
    shutil.copytree(buffer_dir, bad)
    (bad / "buffer.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="layout holds"):
        ExpertBuffer.load(bad)
    with pytest.raises(DataError, match="other settings"):   # never appended to with other settings
        train_experts(ExpertConfig(num=3, epochs=4, batch_size=32, lr=0.1), NET, small_digits, buffer_dir)
    with pytest.raises(ConfigError, match="network"):
        expert_buffer(ExpertConfig(), {**NET, "width": 8}, small_digits, str(buffer_dir))


def test_zca_inverts_and_whitens():
    torch.manual_seed(0)
    x = torch.randn(500, 1, 4, 4) @ torch.randn(4, 4)   # correlated columns
    zca = ZCA.fit(x, eps=1e-6)
    z = zca.apply(x)
    cov = torch.cov(z.reshape(500, -1).T)
    assert torch.allclose(cov, torch.eye(16), atol=0.05)
    assert torch.allclose(zca.invert(z), x, atol=1e-3)


# --- MTT --------------------------------------------------------------------------------------
def test_flat_net_matches_the_module():
    net = potstill.build_model(NET, (1, 8, 8), 10)
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(FlatNet(net)(flat, x), net(x), atol=1e-6)


def test_surrogate_has_the_value_and_the_given_gradients():
    a, b = torch.randn(3, requires_grad=True), torch.randn(2, requires_grad=True)
    ga, gb = torch.randn(3), torch.randn(2)
    s = surrogate(torch.tensor(1.25), [a, b], [ga, gb])
    s.backward()
    assert s.item() == pytest.approx(1.25)
    assert torch.allclose(a.grad, ga) and torch.allclose(b.grad, gb)


def test_learnable_lr_and_images_receive_gradient(small_digits, buffer_dir):
    m = build("mtt", small_digits, buffer_dir)
    losses = m.loss({}, 0)
    assert set(m.param_groups()) == {"images", "lr"}
    losses["images"].backward()
    assert m.images.grad.abs().sum() > 0 and m.syn_lr.grad.abs() > 0
    assert 0 < losses["images"].item() < 10


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_recompute_unroll_gives_the_full_unroll_gradient(small_digits, buffer_dir, momentum):
    grads = {}
    for mode in ("full", "recompute"):
        m = build("mtt", small_digits, buffer_dir, unroll=mode, inner_momentum=momentum, syn_steps=4, batch_syn=7,
                  dsa="color_crop_cutout_flip_scale_rotate")
        torch.manual_seed(1)
        value, g = m.unrolled_gradients(m.buffer.snapshot(1, 1), m.plan(), 1, 1)
        grads[mode] = (value, g)
    (v1, g1), (v2, g2) = grads["full"], grads["recompute"]
    assert v1.item() == pytest.approx(v2.item(), rel=1e-5)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6 * a.abs().max().item())


def test_max_start_epoch_beyond_the_buffer_is_a_config_error(small_digits, buffer_dir):
    with pytest.raises(ConfigError, match="max_start_epoch"):
        build("mtt", small_digits, buffer_dir, max_start_epoch=4, expert_epochs=2)


# --- expert training variants (FTD's SAM, AST's smooth experts) ------------------------------
class _Linear(torch.nn.Module):
    """f(x) = flat(x) @ W: d sum f / dx = row sums of W at every pixel."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w


def test_ast_expert_objective_scales_early_epochs_and_penalises_input_gradients():
    from potstill.methods.dataset.experts import expert_objective

    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 0, 1, 0, 1])
    net = _Linear(torch.full((4, 2), 0.5))              # input-gradient norm exactly 1 per pixel
    ce = torch.nn.functional.cross_entropy(net(x), y)
    cfg = ExpertConfig(clip_epochs=10, grad_penalty=2.0)
    assert expert_objective(net, x, y, cfg, epoch=3).item() == pytest.approx(0.65 * ce.item(), rel=1e-6)
    assert expert_objective(net, x, y, cfg, epoch=12).item() == pytest.approx(ce.item(), rel=1e-6)
    net2 = _Linear(torch.ones(4, 2))                     # norm 2 per pixel: penalty 2 * (2 - 1)^2
    ce2 = torch.nn.functional.cross_entropy(net2(x), y)
    assert expert_objective(net2, x, y, cfg, epoch=12).item() == pytest.approx(ce2.item() + 2.0, rel=1e-6)


def test_sam_step_approaches_sgd_as_rho_shrinks_and_differs_otherwise():
    from potstill.methods.dataset.experts import _sam_step, expert_objective

    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 2, 2), torch.randint(0, 2, (8,))
    w0 = torch.randn(4, 2)

    def step(rho):
        net = _Linear(w0.clone())
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        cfg = ExpertConfig(sam_rho=rho) if rho else ExpertConfig()
        if rho:
            _sam_step(net, opt, cfg, lambda: expert_objective(net, x, y, cfg, 0))
        else:
            opt.zero_grad()
            expert_objective(net, x, y, cfg, 0).backward()
            opt.step()
        return net.w.detach()

    assert torch.allclose(step(1e-7), step(0), atol=1e-5)
    assert not torch.allclose(step(0.5), step(0), atol=1e-3)


# --- FTD ---------------------------------------------------------------------------------------
def test_ftd_refuses_sharp_experts_and_exports_the_image_ema(tmp_path, small_digits, buffer_dir):
    with pytest.raises(ConfigError, match="without SAM"):
        build("ftd", small_digits, buffer_dir)
    sam_dir = tmp_path / "sam"
    train_experts(ExpertConfig(num=1, epochs=3, batch_size=64, sam_rho=0.05), NET, small_digits, sam_dir, progress=False)
    m = build("ftd", small_digits, sam_dir, image_ema=0.9)
    x0 = m.images.detach().clone()
    m.loss({}, 0)
    with torch.no_grad():
        m.images.add_(1.0)              # what an optimizer step would do
    m.loss({}, 1)                       # folds the updated images once
    m.loss({}, 1)                       # a retried step folds nothing new
    with torch.no_grad():
        m.images.add_(1.0)
    expected = 0.9 * (0.9 * x0 + 0.1 * (x0 + 1)) + 0.1 * (x0 + 2)
    assert torch.allclose(m.export().images, expected, atol=1e-5)


# --- DATM --------------------------------------------------------------------------------------
def test_datm_window_grows_as_configured(small_digits, buffer_dir):
    m = build("datm", small_digits, buffer_dir, max_start_epoch=3, current_max_start_epoch=1, expansion_end=10)
    assert [m.start_window(s) for s in (0, 4, 5, 10, 1000)] == [(0, 1), (0, 1), (0, 2), (0, 3), (0, 3)]
    fixed = build("datm", small_digits, buffer_dir, max_start_epoch=3)
    assert fixed.start_window(0) == fixed.start_window(500) == (0, 3)


def test_datm_soft_labels_come_from_correct_experts_and_are_learned(small_digits, buffer_dir):
    m = build("datm", small_digits, buffer_dir, ipc=3)
    logits = torch.stack([m.expert_logits(e, m.images.detach()) for e in range(len(m.buffer))])
    right = logits.argmax(2) == m.labels
    for i in range(len(m.images)):       # the mean over exactly the experts that are right
        if right[:, i].any():
            assert torch.allclose(m.label_logits[i], logits[right[:, i], i].mean(0), atol=1e-5)
    assert right[0].float().mean() > 0.5   # images were chosen where expert 0 is right
    out = m.loss({}, 0)
    out["labels"].backward()
    assert m.label_logits.grad.abs().sum() > 0
    syn = m.export()
    assert syn.soft and torch.allclose(syn.labels.sum(1), torch.ones(len(syn.labels)))
    assert syn.label_bytes() == len(syn.labels) * 10 * 4


# --- AST ---------------------------------------------------------------------------------------
def test_ast_balanced_weight_and_intermediate_points():
    from potstill.methods.dataset.smooth_experts import balanced_weight

    assert balanced_weight(5, 10) == pytest.approx(1.2920, abs=1e-4)         # log_5(8)
    assert balanced_weight(0, 10) == pytest.approx(1 / 1.5937, abs=1e-4)     # 1 / log_5(13)
    assert balanced_weight(9, 10) > balanced_weight(5, 10) > balanced_weight(0, 10)


def test_ast_parts(small_digits, buffer_dir):
    from potstill.methods.dataset.smooth_experts import perturb_conv_weights

    m = build("ast", small_digits, buffer_dir, smooth_experts=False, expert_epochs=2, syn_steps=4,
              intermediate_matching="adaptive")
    assert m.intermediate_points() == [(2, 1, 0.5)] and m.matched_steps() == [2, 4]
    # representative init: every synthetic image is a real image of its class
    real = small_digits.train
    for img, c in zip(m.images.detach(), m.labels):
        assert ((real.x[real.y == c] - img).flatten(1).abs().amax(1) < 1e-6).any()
    theta = m.buffer.snapshot(0, 1)
    moved = perturb_conv_weights(theta, m.buffer.meta["layout"], 1.0) - theta
    offset = 0
    for name, shape in m.buffer.meta["layout"]:
        n = int(torch.tensor(shape).prod())
        part = moved[offset:offset + n]
        assert (part.abs().sum() > 0) == (len(shape) == 4), name
        if len(shape) == 4:   # |alpha d/||d|| * W| <= |W|, and small relative to W as a whole
            assert part.norm() < theta[offset:offset + n].norm()
        offset += n
    out = m.loss({}, 0)
    out["images"].backward()
    assert m.images.grad.abs().sum() > 0
