"""SiD (G1), SIM (G16) and SFD (G19): the loss mechanisms, the guidance modes, the few-step
mixture, score forgetting, config validation, and a 3-step smoke run of every recipe."""
import math
from pathlib import Path

import pytest
import torch

import potstill
from potstill.core.config import ConfigError, from_dict
from potstill.core.method import BuildContext
from potstill.diffusion import EDMPrecond
from potstill.diffusion.denoiser import Denoiser
from potstill.losses.diffusion import sid_loss, sim_loss
from potstill.models import build_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy():
    return potstill.load_dataset({"name": "toy2d", "train_size": 256, "val_size": 64, "test_size": 64})


def tiny(name, toy, teacher=None, **cfg):
    torch.manual_seed(0)
    teacher = teacher or EDMPrecond(build_model({"name": "toy_denoiser", "hidden": 32, "depth": 2, "emb": 8}, (2,), 8))
    cls = potstill.METHODS.get(name)
    return cls.build(cls.Config(**cfg), BuildContext(data=toy, teacher_module=teacher))


def batch_of(toy, n=64):
    return {"x": toy.train.x[:n], "y": toy.train.y[:n]}


def generator_grads(m, batch, seed=1):
    torch.manual_seed(seed)
    loss = m.loss(batch, 0)["generator"]
    return loss, torch.autograd.grad(loss, list(m.generator.parameters()), allow_unused=True)


class Recorder(Denoiser):
    """Wraps a denoiser and records the ``cond`` of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.conds = inner, []
        self.sigma_data = inner.sigma_data

    def forward(self, x, sigma, cond=None):
        self.conds.append(None if cond is None else cond.clone())
        return self.inner(x, sigma, cond)


class LabelValued(Denoiser):
    """D(x, sigma, c) = c everywhere (the "no condition" label 8 for cond=None)."""

    def __init__(self, num_classes=8):
        super().__init__()
        self.w, self.k = torch.nn.Parameter(torch.zeros(())), num_classes

    def forward(self, x, sigma, cond=None):
        c = torch.full((len(x),), float(self.k)) if cond is None else cond.float()
        return c.reshape(-1, 1).expand_as(x) + self.w * x


class GaussianClasses(Denoiser):
    """The exact denoiser of class-conditional Gaussians N(mu_c, s^2 I): mu_c + s^2/(s^2+sigma^2)(x - mu_c)."""

    def __init__(self, means, s=0.05):
        super().__init__()
        self.means, self.s = torch.nn.Parameter(torch.as_tensor(means, dtype=torch.float32)), s

    def forward(self, x, sigma, cond=None):
        sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1)
        cond = torch.full((len(x),), len(self.means), dtype=torch.long) if cond is None else cond
        mu = torch.cat([self.means, self.means.mean(0, keepdim=True)])[cond]   # unconditional: the centroid
        return mu + self.s ** 2 / (self.s ** 2 + sig ** 2) * (x - mu)


# --- SiD loss ----------------------------------------------------------------------------------
def test_sid_loss_hand_value():
    x = torch.tensor([[0.0, 0.0]])
    real, fake = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 2.0]])
    # d = real - fake = (1, 0); (real - x) - 1.2 d = (-0.2, 2); mean(d * .) = -0.1; norm = mean|x - real| = 1.5
    assert sid_loss(x, real, fake, alpha=1.2).item() == pytest.approx(-0.1 / 1.5)
    # alpha = 1: (real - fake)^T (fake - x) = (1, 0) . (0, 2) = 0
    assert sid_loss(x, real, fake, alpha=1.0).item() == pytest.approx(0.0)


def test_sid_loss_and_gradient_vanish_when_fake_equals_real_and_flow_through_both_denoisers():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 3)
    other = torch.nn.Linear(3, 3)
    x = torch.randn(5, 3, requires_grad=True)
    x_t = x + 0.7 * torch.randn(5, 3)
    loss = sid_loss(x, net(x_t), net(x_t))
    (g,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0 and torch.equal(g, torch.zeros_like(g))
    # with different denoisers the gradient includes the paths through mu_real(x_t) and mu_fake(x_t)
    (g_full,) = torch.autograd.grad(sid_loss(x, net(x_t), other(x_t)), x)
    (g_sg,) = torch.autograd.grad(sid_loss(x, net(x_t).detach(), other(x_t).detach()), x)
    assert g_full.abs().sum() > 0 and not torch.allclose(g_full, g_sg, atol=1e-4)


def test_sid_generator_gradient_is_zero_at_initialisation(toy):
    """Fake score = teacher at the start, so the generator gets no gradient (up to float rounding:
    the two backward passes run with and without weight gradients)."""
    m = tiny("sid", toy)
    loss, grads = generator_grads(m, batch_of(toy))
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    assert all(g is None or g.abs().max() < 1e-8 for g in grads)
    with torch.no_grad():                      # any fake-score change -> nonzero gradient
        for p in m.fake_score.parameters():
            p.add_(0.01 * torch.randn_like(p))
    _, grads = generator_grads(m, batch_of(toy))
    assert max(g.abs().max() for g in grads if g is not None) > 1e-5


# --- SIM ---------------------------------------------------------------------------------------
def test_sim_squared_distance_equals_sid_alpha_one():
    """SIM with d = 1/2 mean delta^2 has SiD's alpha = 1 loss and gradient (factor 1 in x_0 units,
    same normaliser); pseudo-Huber with a large c is that divided by c."""
    torch.manual_seed(0)
    real_net, fake_net = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    x = torch.randn(6, 4, requires_grad=True)
    x_t = x + 0.5 * torch.randn(6, 4)
    l_sid = sid_loss(x, real_net(x_t), fake_net(x_t), alpha=1.0)
    l_sim = sim_loss(x, real_net(x_t), fake_net(x_t), "squared")
    (g_sid,) = torch.autograd.grad(l_sid, x)
    (g_sim,) = torch.autograd.grad(l_sim, x)
    assert l_sim.item() == pytest.approx(l_sid.item(), rel=1e-5)
    assert torch.allclose(g_sim, g_sid, rtol=1e-5, atol=1e-7) and g_sid.abs().sum() > 0
    c = 1e4
    (g_h,) = torch.autograd.grad(sim_loss(x, real_net(x_t), fake_net(x_t), "pseudo_huber", c=c), x)
    assert torch.allclose(g_h * c, g_sid, rtol=1e-3, atol=1e-6)
    # pseudo-Huber with a small c bounds the per-sample loss by |mu_fake - x| / norm, however large delta is
    big = sim_loss(x, real_net(x_t), fake_net(x_t) * 1e3, "pseudo_huber", c=1e-3)
    assert math.isfinite(big.item())


def test_sim_method_with_squared_distance_matches_sid_alpha_one(toy):
    sid, sim = tiny("sid", toy, alpha=1.0), tiny("sim", toy, distance="squared")
    for m in (sid, sim):
        torch.manual_seed(5)
        with torch.no_grad():
            for p in m.fake_score.parameters():
                p.add_(0.02 * torch.randn_like(p))
    _, g_sid = generator_grads(sid, batch_of(toy))
    _, g_sim = generator_grads(sim, batch_of(toy))
    for a, b in zip(g_sid, g_sim):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert any(a.abs().sum() > 0 for a in g_sid)


# --- guidance modes ----------------------------------------------------------------------------
def test_zero_cfg_never_conditions_the_fake_score(toy):
    m = tiny("sid", toy, guidance_mode="zero", guidance=3.0)
    m.fake_score, m.teacher = Recorder(m.fake_score), Recorder(m.teacher)
    b = batch_of(toy, 32)
    m.loss(b, 0)
    assert len(m.fake_score.conds) == 2 and all(c is None for c in m.fake_score.conds)  # L_G and its own loss
    # the teacher is asked once, conditionally, without CFG (no "no condition" label 8)
    assert len(m.teacher.conds) == 1 and torch.equal(m.teacher.conds[0], b["y"])


def test_plain_cfg_guides_the_teacher_and_conditions_the_fake(toy):
    m = tiny("sid", toy, guidance_mode="cfg", guidance=2.0)
    m.fake_score, m.teacher = Recorder(m.fake_score), Recorder(m.teacher)
    b = batch_of(toy, 32)
    m.loss(b, 0)
    assert torch.equal(m.teacher.conds[0], torch.cat([b["y"], torch.full_like(b["y"], 8)]))
    assert all(torch.equal(c, b["y"]) for c in m.fake_score.conds)


def test_anti_cfg_uses_negative_guidance_in_the_fake_score(toy):
    g = 1.5
    m = tiny("sid", toy, guidance_mode="anti", guidance=g, fake_label_dropout=0.25)
    m.fake_score = LabelValued()
    cond = torch.arange(8)
    x_t, sigma = torch.randn(8, 2), torch.full((8,), 0.5)
    out = m.fake_target(x_t, sigma, cond)
    u, c = 8.0, cond.float().reshape(-1, 1)
    assert torch.allclose(out, (u + (-g) * (c - u)).expand(8, 2))          # scale w_f = -g
    assert not torch.allclose(out, (u + g * (c - u)).expand(8, 2))
    # the teacher is not guided in Anti-CFG
    assert torch.equal(m.real_target(x_t, sigma, cond), m.teacher(x_t, sigma, cond))
    # the fake score learns its unconditional branch: labels dropped at the configured rate
    torch.manual_seed(0)
    labels = m.fake_train_cond(torch.zeros(20000, dtype=torch.long))
    assert (labels == 8).double().mean().item() == pytest.approx(0.25, abs=0.01)


# --- few-step mixture --------------------------------------------------------------------------
class SigmaEcho(Denoiser):
    """Returns its noise level everywhere and records the inputs it saw."""

    def __init__(self):
        super().__init__()
        self.w, self.inputs = torch.nn.Parameter(torch.zeros(())), []

    def forward(self, x, sigma, cond=None):
        self.inputs.append(x.detach().clone())
        return torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1).expand_as(x) + self.w * 0


def test_few_step_training_draws_from_the_uniform_mixture_of_all_steps(toy):
    m = tiny("sid", toy, steps=4)
    sig = m.generator_sigmas()
    assert len(sig) == 5 and sig[0] == pytest.approx(2.5) and sig[-1] == 0.0
    m.generator = SigmaEcho()
    torch.manual_seed(0)
    n = 8000
    x, pick = m.mixture_sample(n, torch.zeros(n, dtype=torch.long))
    levels = torch.tensor(sig[:4], dtype=x.dtype)
    assert torch.allclose(x[:, 0], levels[pick])                      # sample b is step pick[b]'s output
    share = torch.bincount(pick, minlength=4).double() / n
    assert torch.allclose(share, torch.full((4,), 0.25, dtype=torch.float64), atol=0.02)
    assert x.requires_grad                                            # each output keeps its own step's gradient
    # the chain: step i > 0 sees the previous output re-noised to sig[i]
    ins = m.generator.inputs
    assert len(ins) == 4
    for i in range(1, 4):
        assert (ins[i] - sig[i - 1]).std().item() == pytest.approx(sig[i], rel=0.05)


def test_exported_generator_samples_with_k_steps(toy):
    m = tiny("sid", toy, steps=2)
    assert m.export().sampling == {"sampler": "multistep", "steps": 2, "sigma_max": 2.5, "schedule": "strided"}


# --- SFD ---------------------------------------------------------------------------------------
def test_sfd_teacher_target_of_a_forget_class_is_the_safe_class_score(toy):
    centers = toy.info["centers"]
    teacher = GaussianClasses(centers)
    m = tiny("sfd", toy, teacher=teacher, forget=[0, 2], safe=4, forget_weight=0.5)
    plain = tiny("sid", toy, teacher=GaussianClasses(centers))
    cond = torch.arange(8)
    x_t, sigma = torch.randn(8, 2), torch.full((8,), 0.3)
    target = m.real_target(x_t, sigma, cond)
    safe = teacher(x_t, sigma, torch.full((8,), 4))
    own = teacher(x_t, sigma, cond)
    for c in range(8):
        want = safe[c] if c in (0, 2) else own[c]
        assert torch.allclose(target[c], want)
    assert torch.allclose(plain.real_target(x_t, sigma, cond), own)
    # at a large sigma the forget classes' target is the safe class's mean
    t0 = m.real_target(x_t, torch.full((8,), 1e3), cond)
    assert torch.allclose(t0[0], torch.tensor(centers[4]), atol=1e-3)
    assert torch.equal(m.sample_weight(cond), torch.tensor([0.5, 1, 0.5, 1, 1, 1, 1, 1]))
    # the fake score keeps the original label
    m.fake_score = Recorder(m.fake_score)
    m.loss({"x": toy.train.x[:16], "y": torch.arange(16) % 8}, 0)
    assert all(torch.equal(c, torch.arange(16) % 8) for c in m.fake_score.conds)


def test_sfd_rejects_classes_the_data_does_not_have(toy):
    with pytest.raises(ConfigError, match="method.forget"):
        tiny("sfd", toy, forget=[9], safe=1)


# --- config validation -------------------------------------------------------------------------
@pytest.mark.parametrize("name,bad,key", [
    ("sid", {"steps": 0}, "steps"),
    ("sid", {"alpha": float("nan")}, "alpha"),
    ("sid", {"guidance_mode": "double"}, "guidance_mode"),
    ("sid", {"guidance": -1.0}, "guidance"),
    ("sid", {"t_max": 0}, "t_max"),
    ("sid", {"sigma_max": 0}, "sigma_max"),
    ("sid", {"schedule": "linear"}, "schedule"),
    ("sid", {"fake_label_dropout": 1.0}, "fake_label_dropout"),
    ("sid", {"conditional": False, "guidance_mode": "zero"}, "conditional"),
    ("sim", {"distance": "l1"}, "distance"),
    ("sim", {"huber_c": 0.0}, "huber_c"),
    ("sfd", {"forget": []}, "forget"),
    ("sfd", {"forget": [1, 1]}, "forget"),
    ("sfd", {"forget": [3], "safe": 3}, "safe"),
    ("sfd", {"forget_weight": -1.0}, "forget_weight"),
    ("sfd", {"conditional": False}, "conditional"),
])
def test_config_validation_names_the_key(name, bad, key):
    cls = potstill.METHODS.get(name).Config
    with pytest.raises(ValueError, match=key):
        cls(**bad)
    with pytest.raises(ConfigError, match=f"method: .*{key}"):
        from_dict(cls, bad, "method")


# --- recipes -----------------------------------------------------------------------------------
RECIPES = ["sid_toy2d", "sid4_toy2d", "sid_zero_toy2d", "sid_anti_toy2d", "sim_toy2d", "sfd_toy2d"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_smoke_runs(recipe, tiny_teacher_run, tmp_path):
    s = potstill.run_recipe(ROOT / f"recipes/gen/{recipe}.yaml", tmp_path / recipe,
                            [f"teacher.checkpoint={tiny_teacher_run}", "trainer.steps=3", "trainer.progress=false",
                             "trainer.threads=1", "trainer.eval_every=3", "trainer.ckpt_every=0",
                             "trainer.batch_size=32", "data.train_size=256", "data.val_size=64", "data.test_size=64"])
    assert math.isfinite(s["val"]["swd"]) and s["method"]["name"] == recipe.split("_")[0].rstrip("4")
    if recipe == "sfd_toy2d":
        assert 0.0 <= s["val"]["forget_share"] <= 1.0
    d = potstill.load_denoiser(tmp_path / recipe)
    assert d.sampling["steps"] == (4 if recipe == "sid4_toy2d" else 1) and d.sampling["sigma_max"] == 2.5


def test_fmnist_recipe_resolves():
    cfg = potstill.resolve(ROOT / "recipes/gen/sid_fmnist.yaml")
    assert cfg.method.name == "sid" and cfg.method.config.alpha == 1.2 and cfg.teacher.checkpoint == "benchmarks/assets/edm_fmnist"


@pytest.mark.parametrize("recipe", RECIPES + ["sid_fmnist"])
def test_recipe_round_trips_strictly(recipe):
    cfg = potstill.resolve(ROOT / f"recipes/gen/{recipe}.yaml")
    assert cfg.description and potstill.resolve(cfg.to_dict()).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("name", ["sid", "sim", "sfd"])
def test_image_unet_trains_every_group_with_defaults(name, tiny_trainer, tmp_path):
    """The registry-wide smoke setting: default config, a tiny image UNet teacher, 3 steps."""
    digits = potstill.load_dataset({"name": "digits", "train_size": 64})
    unet = {"name": "unet", "channels": [8, 16], "groups": 4, "emb": 16}
    torch.manual_seed(0)
    cls = potstill.METHODS.get(name)
    m = cls.build(cls.Config(), BuildContext(data=digits, teacher_module=EDMPrecond(build_model(unet, digits.in_shape, 10))))
    before = {g: [p.detach().clone() for p in ps] for g, ps in m.param_groups().items()}
    result = potstill.Trainer(tiny_trainer(batch_size=8), tmp_path).fit(m, m.train_data(digits), digits.val)
    for g, ps in m.param_groups().items():
        assert any(not torch.equal(a, b) for a, b in zip(before[g], ps)), f"group {g} did not change"
    assert math.isfinite(result["val"]["swd"])
