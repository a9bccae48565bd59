"""Generative pillar: EDM loss golden value, the EDM teacher method, export / load round trip."""
import pytest
import torch

import potstill
from potstill.core.method import BuildContext
from potstill.diffusion import karras_sigmas, sample
from potstill.diffusion.denoiser import Denoiser
from potstill.eval.generative import mode_stats
from potstill.losses.diffusion import edm_loss, edm_weight
from potstill.models import build_model


class OptimalGaussian(Denoiser):
    def __init__(self, mu, s):
        super().__init__()
        self.mu, self.s = mu, s

    def forward(self, x, sigma, cond=None):
        sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return self.mu + self.s ** 2 / (self.s ** 2 + sig ** 2) * (x - self.mu)


def test_edm_loss_of_the_optimal_denoiser_is_one_when_sigma_data_matches():
    """For x0 ~ N(mu, sd^2) the optimal error per dim is sd^2 s^2/(sd^2+s^2) = 1/lambda(s): loss = 1."""
    g = torch.Generator().manual_seed(0)
    x0 = 0.3 + 0.5 * torch.randn(20000, 4, generator=g, dtype=torch.float64)
    loss = edm_loss(OptimalGaussian(0.3, 0.5), x0, sigma_data=0.5)
    assert loss.item() == pytest.approx(1.0, abs=0.03)
    assert edm_weight(torch.tensor(0.5), 0.5).item() == pytest.approx(8.0)  # (0.25+0.25)/(0.25^2)


def test_cfg_label_dropout_rate():
    cls = potstill.METHODS.get("edm")
    bundle = potstill.load_dataset({"name": "toy2d", "train_size": 100, "val_size": 10, "test_size": 10})
    ctx = BuildContext(data=bundle, student_module=build_model("toy_denoiser", (2,), 8))
    m = cls.build(cls.Config(label_dropout=0.25), ctx)
    torch.manual_seed(0)
    labels = m.labels(torch.zeros(20000, dtype=torch.long))
    assert (labels == 8).double().mean().item() == pytest.approx(0.25, abs=0.01)
    assert set(labels.unique().tolist()) == {0, 8}


def test_edm_teacher_learns_toy2d_and_round_trips(tmp_path):
    s = potstill.run_recipe("recipes/gen/edm_toy2d.yaml", tmp_path / "edm",
                            ["trainer.steps=600", "trainer.progress=false", "trainer.threads=1", "trainer.eval_every=300",
                             "data.train_size=5000"])
    hist = [h["edm_loss"] for h in s["val_history"]]
    assert hist[-1] < hist[0]
    d = potstill.load_denoiser(tmp_path / "edm")
    x, sig, y = torch.randn(5, 2), torch.full((5,), 0.7), torch.arange(5)
    assert d(x, sig, y).shape == (5, 2) and d.num_classes == 8
    with pytest.raises(potstill.ConfigError, match="not an exported EDM denoiser"):
        import json
        meta = json.loads((tmp_path / "edm" / "export" / "model.json").read_text())
        meta.pop("denoiser")
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "model.json").write_text(json.dumps(meta))
        potstill.load_denoiser(tmp_path / "bad")
    bundle = potstill.load_dataset({"name": "toy2d"})
    g = torch.Generator().manual_seed(0)
    out = sample(d, torch.randn(1000, 2, generator=g), karras_sigmas(12), "euler", cond=torch.arange(1000) % 8)
    stats = mode_stats(out.x, torch.tensor(bundle.info["centers"]), 0.05)
    assert stats["mode_coverage"] == 1.0 and stats["high_quality"] > 0.5


def test_teacher_cache_and_sample_cli(tmp_path, monkeypatch, capsys):
    from potstill.cli import main

    monkeypatch.setenv("POTSTILL_CACHE", str(tmp_path / "cache"))
    args = ["teacher", "train", "recipes/gen/edm_toy2d.yaml", "trainer.steps=20", "trainer.progress=false",
            "data.train_size=500", "trainer.eval_every=0"]
    assert main(args) == 0
    folder = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(args) == 0
    assert "reusing" in capsys.readouterr().out
    assert main(args[:-1] + ["trainer.eval_every=10"]) == 0        # another recipe -> another teacher
    assert capsys.readouterr().out.strip().splitlines()[-1] != folder
    assert main(["sample", folder, "--steps", "3", "--sampler", "euler", "--n", "16", "--out", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert "NFE 3" in out and (tmp_path / "s.png").is_file()


def test_dmd_gradient_is_zero_when_fake_equals_real_and_points_along_their_difference():
    from potstill.losses.diffusion import dmd_loss

    x = torch.randn(4, 3, requires_grad=True)
    mu = torch.randn(4, 3)
    loss = dmd_loss(x, mu, mu.clone())
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))
    x.grad = None
    mu_fake = mu + torch.tensor([1.0, 0.0, 0.0])
    dmd_loss(x, mu, mu_fake).backward()
    norm = (x.detach() - mu).abs().mean(1, keepdim=True)
    assert torch.allclose(x.grad, (mu_fake - mu) / norm / x.numel(), atol=1e-6)
    # descending moves x away from the fake denoiser's estimate, toward the real one
    assert (x.grad[:, 0] > 0).all() and (x.grad[:, 1:] == 0).all()


def tiny_generative(name, **cfg):
    from potstill.diffusion import EDMPrecond

    bundle = potstill.load_dataset({"name": "toy2d", "train_size": 256, "val_size": 64, "test_size": 64})
    torch.manual_seed(0)
    teacher = EDMPrecond(build_model({"name": "toy_denoiser", "hidden": 32, "depth": 2, "emb": 8}, (2,), 8))
    cls = potstill.METHODS.get(name)
    return cls.build(cls.Config(**cfg), BuildContext(data=bundle, teacher_module=teacher)), bundle


def test_two_timescale_ratio_is_honoured(tiny_trainer):
    m, bundle = tiny_generative("dmd2", steps=2)
    optim = {"generator": {"name": "adam", "lr": 1e-3, "update_every": 3}, "fake_score": {"name": "adam", "lr": 1e-3}}
    trainer = potstill.Trainer(tiny_trainer(steps=7, batch_size=32, optim=optim))
    trainer.fit(m, m.train_data(bundle))
    steps = {g: {int(st["step"]) for st in trainer.optimizers[g].state.values()} for g in ("generator", "fake_score")}
    assert steps == {"generator": {3}, "fake_score": {7}}  # steps 0, 3, 6 vs all 7
    # the teacher never moves
    assert all(not p.requires_grad for p in m.teacher.parameters())


def test_dmd_regression_pairs_are_the_teachers_ode_solutions():
    from potstill.diffusion import karras_sigmas
    from potstill.diffusion.samplers import heun

    m, _ = tiny_generative("dmd", regression_pairs=8, regression_steps=3)
    assert m._pair_targets is None  # solved on first use, on the device training runs on
    z, c = m.pairs.x, m.pairs.y
    want = heun(m.teacher, z, karras_sigmas(3), cond=c).x
    assert torch.allclose(m.pair_targets, want, atol=1e-6)
    assert m.export().sampling == {"sampler": "multistep", "steps": 1, "sigma_max": 80.0, "schedule": "karras"}


class ConstantDenoiser(Denoiser):
    def __init__(self, value):
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, x, sigma, cond=None):
        return self.value.expand_as(x)


def test_progressive_target_for_a_constant_denoiser_is_the_constant():
    """Two DDIM steps of D = mu equal one step, so the student (= teacher) has zero loss."""
    from potstill.diffusion import nested_sigmas

    assert torch.allclose(nested_sigmas(8)[::2], nested_sigmas(4)) and nested_sigmas(4)[-1] == 0
    bundle = potstill.load_dataset({"name": "toy2d", "train_size": 64, "val_size": 16, "test_size": 16})
    cls = potstill.METHODS.get("progressive")
    m = cls.build(cls.Config(start_steps=8, final_steps=2, steps_per_round=2),
                  BuildContext(data=bundle, teacher_module=ConstantDenoiser(0.3)))
    batch = {"x": bundle.train.x[:32], "y": bundle.train.y[:32]}
    assert m.loss(batch, 0)["student"].item() == pytest.approx(0.0, abs=1e-10)
    assert int(m.round_idx) == 0 and m.student_steps(0) == 4
    with torch.no_grad():
        m.student.value.fill_(1.0)
    m.loss(batch, 2)                                   # round 1: the (changed) student becomes the teacher
    assert int(m.round_idx) == 1 and m.round_teacher.value.item() == 1.0
    assert m.loss(batch, 3)["student"].item() == pytest.approx(0.0, abs=1e-10)


def test_consistency_function_boundary_and_ema_target():
    from potstill.methods.generative.consistency import ConsistencyFunction

    net = build_model({"name": "toy_denoiser", "hidden": 16, "depth": 2, "emb": 8}, (2,), 8)
    f = ConsistencyFunction(net, 0.5, 0.002)
    x = torch.randn(6, 2)
    assert torch.allclose(f(x, torch.full((6,), 0.002)), x, atol=1e-6)       # f(x, sigma_min) = x
    m, bundle = tiny_generative("consistency", ema=0.5)
    with torch.no_grad():
        for p in m.student.parameters():
            p.add_(1.0)
    before = [t.clone() for t in m.target.parameters()]
    m.update_target()
    for b, t, s in zip(before, m.target.parameters(), m.student.parameters()):
        assert torch.allclose(t, 0.5 * b + 0.5 * s)
    batch = {"x": bundle.train.x[:16], "y": bundle.train.y[:16]}
    assert m.loss(batch, 0)["student"].item() > 0
