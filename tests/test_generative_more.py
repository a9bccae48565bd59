"""SwiftBrush (G14), MSD (G3) and DisBack (G11): the LoRA teacher, image-free training, the VSD
gradient, class routing, per-student losses, the exported router, the recorded degradation path
and its backward replay, config validation, and a 3-step smoke run of every recipe."""
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import potstill
from potstill.core.config import ConfigError, from_dict
from potstill.core.method import BuildContext
from potstill.core.run import save_export
from potstill.diffusion import EDMPrecond
from potstill.diffusion.denoiser import Denoiser
from potstill.diffusion.samplers import multistep
from potstill.losses.diffusion import vsd_loss
from potstill.models import build_model
from potstill.models.lora import (
    LoRAConv2d,
    LoRALinear,
    add_lora,
    lora_parameters,
    merge_lora,
    unmerge_lora,
)

ROOT = Path(__file__).resolve().parents[1]
TOY_SPEC = {"name": "toy_denoiser", "hidden": 32, "depth": 2, "emb": 8}


@pytest.fixture(scope="module")
def toy():
    return potstill.load_dataset({"name": "toy2d", "train_size": 256, "val_size": 64, "test_size": 64})


def toy_teacher(seed=0):
    torch.manual_seed(seed)
    t = EDMPrecond(build_model(TOY_SPEC, (2,), 8))
    t.model_spec = dict(TOY_SPEC)            # as load_denoiser sets it
    return t


def tiny(name, data, teacher=None, **cfg):
    teacher = teacher or toy_teacher()
    torch.manual_seed(0)
    cls = potstill.METHODS.get(name)
    return cls.build(cls.Config(**cfg), BuildContext(data=data, teacher_module=teacher))


def batch_of(toy, n=64, y=None):
    return {"x": toy.train.x[:n], "y": toy.train.y[:n] if y is None else y, "index": torch.arange(n)}


class Recorder(Denoiser):
    """Wraps a denoiser; records the labels of every call (forward and features)."""

    def __init__(self, inner, log=None, tag=None):
        super().__init__()
        self.inner, self.conds, self.log, self.tag = inner, [], log, tag
        self.sigma_data = inner.sigma_data

    def forward(self, x, sigma, cond=None):
        self.conds.append(None if cond is None else cond.clone())
        if self.log is not None:
            self.log.append(self.tag)
        return self.inner(x, sigma, cond)

    def features(self, x, sigma, cond=None):
        self.conds.append(None if cond is None else cond.clone())
        return self.inner.features(x, sigma, cond)


# --- LoRA -----------------------------------------------------------------------------------------
def test_lora_layers_start_as_the_base_layer_and_merge_exactly():
    torch.manual_seed(0)
    lin, conv = torch.nn.Linear(5, 7), torch.nn.Conv2d(3, 4, 3, padding=1, stride=2)
    x, img = torch.randn(6, 5), torch.randn(2, 3, 9, 9)
    ref_lin, ref_conv = lin(x), conv(img)
    a, b = LoRALinear(lin, rank=2), LoRAConv2d(conv, rank=3, alpha=6.0)
    assert torch.equal(a(x), ref_lin) and torch.equal(b(img), ref_conv)          # B = 0 at the start
    assert {n for n, p in a.named_parameters() if p.requires_grad} == {"lora_A", "lora_B"}
    with torch.no_grad():
        a.lora_B.normal_()
        b.lora_B.normal_()
    out_a, out_b = a(x), b(img)
    assert not torch.allclose(out_a, ref_lin) and not torch.allclose(out_b, ref_conv)
    assert torch.allclose(out_a, ref_lin + (a.lora_B @ a.lora_A @ x.T).T, atol=1e-5)
    for layer, inp, out in ((a, x, out_a), (b, img, out_b)):
        layer.merge()
        assert torch.allclose(layer(inp), out, atol=1e-5)                       # one plain layer
        layer.unmerge()
        assert torch.allclose(layer(inp), out, atol=1e-5)
    # a whole network: only the adapters stay trainable; merged and unmerged forwards agree
    net = add_lora(build_model({"name": "unet", "channels": [4, 8], "groups": 2, "emb": 8}, (1, 8, 8), 10), rank=2)
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in lora_parameters(net)} and trainable
    with torch.no_grad():
        for p in lora_parameters(net):
            p.normal_(0, 0.1)
    z, c = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    before = net(z, torch.zeros(2), c)
    assert torch.allclose(merge_lora(net)(z, torch.zeros(2), c), before, atol=1e-4)
    assert torch.allclose(unmerge_lora(net)(z, torch.zeros(2), c), before, atol=1e-5)


# --- SwiftBrush -----------------------------------------------------------------------------------
def test_swiftbrush_lora_teacher_equals_the_teacher_and_only_adapters_train(toy):
    m = tiny("swiftbrush", toy, lora_rank=4)
    x, sigma, c = torch.randn(16, 2), torch.rand(16) * 5 + 0.01, torch.randint(8, (16,))
    assert torch.equal(m.fake_score(x, sigma, c), m.teacher(x, sigma, c))
    group = m.param_groups()["fake_score"]
    trainable = [p for p in m.fake_score.parameters() if p.requires_grad]
    assert {id(p) for p in group} == {id(p) for p in trainable}
    n_lora = sum(p.numel() for p in group)
    assert 0 < n_lora < sum(p.numel() for p in m.teacher.parameters())
    n_layers = sum(isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)) for mod in m.teacher.modules())
    assert sum(isinstance(mod, (LoRALinear, LoRAConv2d)) for mod in m.fake_score.modules()) == n_layers
    # checkpoints hold generator + adapters, not the frozen base copy
    state = m.trainable_state()
    assert all(k.startswith("generator.") or "lora_" in k for k in state)


def test_vsd_loss_hand_value_and_zero_when_fake_equals_real():
    x = torch.zeros(1, 2, requires_grad=True)
    real, fake = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 2.0]])
    (g,) = torch.autograd.grad(vsd_loss(x, real, fake, torch.tensor([1.0])), x)
    # grad = sigma/(1+sigma^2) (fake - real) = 0.5 * (-1, 0); d/dx of 0.5 mean(...)^2 = grad / 2
    assert torch.allclose(g, torch.tensor([[-0.25, 0.0]]))
    (g0,) = torch.autograd.grad(vsd_loss(x, real, real, torch.tensor([1.0])), x)
    assert torch.equal(g0, torch.zeros_like(g0))


def test_swiftbrush_generator_gradient_is_zero_while_the_lora_teacher_equals_the_teacher(toy):
    m = tiny("swiftbrush", toy)
    b = {"x": torch.zeros(32, 0), "y": torch.randint(8, (32,))}
    torch.manual_seed(1)
    loss = m.loss(b, 0)["generator"]
    grads = torch.autograd.grad(loss, list(m.generator.parameters()), allow_unused=True)
    assert loss.item() == 0.0 and all(g is None or torch.equal(g, torch.zeros_like(g)) for g in grads)
    with torch.no_grad():                              # the adapters move -> a nonzero gradient
        for p in lora_parameters(m.fake_score):
            p.normal_(0, 0.05)
    torch.manual_seed(1)
    grads = torch.autograd.grad(m.loss(b, 0)["generator"], list(m.generator.parameters()), allow_unused=True)
    assert max(g.abs().max() for g in grads if g is not None) > 0


class Untouchable:
    """A split whose contents raise on any access (the real images and labels)."""

    def __getattr__(self, name):
        raise AssertionError(f"the real training split was read ({name})")

    def __len__(self):
        raise AssertionError("the real training split was read (len)")

    def __iter__(self):
        raise AssertionError("the real training split was read (iter)")


def test_swiftbrush_is_image_free(toy, tiny_trainer, tmp_path):
    bundle = SimpleNamespace(name="toy2d", train=Untouchable(), val=toy.val, test=None, num_classes=8,
                             in_shape=(2,), info=toy.info, unlabeled=None)
    m = tiny("swiftbrush", bundle)
    stream = m.train_data(bundle)
    assert stream.x.shape == (m.cfg.label_pool, 0)                # no image of any kind, only labels
    assert stream.y.min() >= 0 and stream.y.max() < 8
    result = potstill.Trainer(tiny_trainer(batch_size=16), tmp_path).fit(m, stream, toy.val)
    assert math.isfinite(result["val"]["swd"])
    # the control: a data-reading method does touch the split
    with pytest.raises(AssertionError, match="real training split"):
        d = tiny("dmd2", bundle)
        potstill.Trainer(tiny_trainer(batch_size=16), tmp_path / "dmd2").fit(d, d.train_data(bundle))


# --- MSD ------------------------------------------------------------------------------------------
def test_msd_routes_each_label_to_its_student(toy):
    m = tiny("msd", toy, students=4, gan=False)
    assert m.partition == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert m.student_of(torch.arange(8)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    m = tiny("msd", toy, students=3, gan=False)                       # 8 classes -> 3, 3, 2
    assert m.partition == [[0, 1, 2], [3, 4, 5], [6, 7]]
    m = tiny("msd", toy, students=4, partition=[[7, 0], [1, 2, 3], [4], [5, 6]], gan=False)
    assert m.student_of(torch.arange(8)).tolist() == [0, 1, 1, 1, 2, 3, 3, 0]
    with pytest.raises(ConfigError, match="method.partition"):
        tiny("msd", toy, students=2, partition=[[0, 1, 2], [3, 4, 5]], gan=False)   # 6, 7 unowned
    with pytest.raises(ConfigError, match="method.students"):
        tiny("msd", toy, students=9)


def test_each_msd_student_only_sees_its_classes(toy):
    m = tiny("msd", toy, students=4, gan=True)
    for sub in m.subs:
        sub.generator, sub.fake_score = Recorder(sub.generator), Recorder(sub.fake_score)
    y = torch.arange(64) % 8
    out = m.loss(batch_of(toy, 64, y), 0)
    for k, sub in enumerate(m.subs):
        seen = torch.cat([c for c in sub.generator.conds + sub.fake_score.conds])
        assert set(seen.tolist()) == set(m.partition[k]), k
        assert f"log/dm_{k}" in out
    # gradients: student k's generator loss reaches only student k
    m2 = tiny("msd", toy, students=4, gan=False)
    y = torch.tensor([0, 1, 0, 1] * 8)                                 # only student 0's classes
    torch.manual_seed(0)
    with torch.no_grad():
        for s in m2.subs:
            for p in s.fake_score.parameters():
                p.add_(0.01 * torch.randn_like(p))
    loss = m2.loss(batch_of(toy, 32, y), 0)["generator"]
    params = [list(s.generator.parameters()) for s in m2.subs]
    grads = torch.autograd.grad(loss, [p for ps in params for p in ps], allow_unused=True)
    per = [grads[sum(map(len, params[:k])):sum(map(len, params[:k + 1]))] for k in range(4)]
    assert any(g is not None and g.abs().sum() > 0 for g in per[0])
    assert all(g is None for k in (1, 2, 3) for g in per[k])


def test_msd_with_one_student_is_dmd2(toy):
    msd, dmd2 = tiny("msd", toy, students=1), tiny("dmd2", toy)
    b = batch_of(toy, 32)
    torch.manual_seed(3)
    a = msd.loss(b, 0)
    torch.manual_seed(3)
    d = dmd2.loss(b, 0)
    assert torch.allclose(a["generator"], d["generator"]) and torch.allclose(a["fake_score"], d["fake_score"])


def test_msd_export_is_one_router_that_samples_from_the_right_student(toy, tmp_path):
    m = tiny("msd", toy, students=4, gan=False)
    torch.manual_seed(0)
    with torch.no_grad():                                  # make the students different
        for s in m.subs:
            for p in s.generator.parameters():
                p.add_(0.2 * torch.randn_like(p))
    d = m.export()
    assert isinstance(d, EDMPrecond) and d.sampling["steps"] == 1
    noise, y = torch.randn(40, 2), torch.arange(40) % 8
    x = multistep(d, noise, m.generator_sigmas(), cond=y).x
    for k, s in enumerate(m.subs):
        own = multistep(s.generator, noise, m.generator_sigmas(), cond=y).x
        mask = m.student_of(y) == k
        assert torch.allclose(x[mask], own[mask], atol=1e-6)
        assert not torch.allclose(x[~mask], own[~mask], atol=1e-3)
    # the exported module round-trips through model.json / load_denoiser as one denoiser
    save_export(d, tmp_path / "export", None, toy)
    loaded = potstill.load_denoiser(tmp_path)
    assert loaded.model_spec["name"] == "msd_router" and loaded.model_spec["partition"] == m.partition
    assert torch.allclose(multistep(loaded, noise, m.generator_sigmas(), cond=y).x, x, atol=1e-6)
    assert sum(p.numel() for p in d.parameters()) == 4 * sum(p.numel() for p in m.teacher.parameters())


def test_msd_smaller_students_are_pretrained_by_teacher_score_matching(toy):
    m = tiny("msd", toy, students=2, gan=False, student_override={"hidden": 16}, pretrain_steps=2)
    size = sum(p.numel() for p in m.subs[0].generator.parameters())
    assert size < sum(p.numel() for p in m.teacher.parameters())
    assert m.export().model_spec["students"][0]["hidden"] == 16
    b = batch_of(toy, 32)
    out = m.loss(b, 0)
    assert {"log/tsm_0", "log/tsm_1"} <= set(out) and "log/dm_0" in out
    # the TSM loss is the EDM-weighted regression of the student's denoiser on the teacher's
    torch.manual_seed(5)
    t = m.tsm_loss(m.subs[0], {"x": b["x"][:8], "y": torch.zeros(8, dtype=torch.long)})
    assert t.item() > 0
    out = m.loss(b, 2)                                     # after pretraining: distillation
    assert "log/generator_0" in out and "log/tsm_0" not in out
    with pytest.raises(ConfigError, match="student_override"):
        tiny("msd", toy, teacher=EDMPrecond(build_model(TOY_SPEC, (2,), 8)), students=2,
             student_override={"hidden": 16})            # a teacher without a model spec


# --- DisBack --------------------------------------------------------------------------------------
def test_disback_records_the_path_and_replays_it_in_reverse(toy):
    m = tiny("disback", toy, path_checkpoints=3, record_steps=6, record_batch=16, switch_every=2, gan=False)
    teacher_state = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    assert not bool(m.recorded)
    b = batch_of(toy, 16)
    m.loss(b, 0)                                           # stage 1 runs before the first step
    assert bool(m.recorded)
    assert [s for s, _ in m.record_log] == [2, 4, 6]       # N snapshots, evenly spaced
    nodes = [torch.cat([p.flatten() for p in net.parameters()]) for net in m.path]
    t = torch.cat([p.flatten() for p in m.teacher.parameters()])
    dist = [float((n - t).norm()) for n in nodes]
    assert 0 < dist[0] < dist[1] < dist[2]                 # moving away from the teacher
    assert all(torch.equal(v, m.teacher.state_dict()[k]) for k, v in teacher_state.items())   # teacher untouched
    # fake_init degraded: the fake score starts at the most degraded node
    m2 = tiny("disback", toy, path_checkpoints=3, record_steps=6, record_batch=16, gan=False)
    m2.record()
    assert all(torch.equal(a, b_) for a, b_ in zip(m2.fake_score.parameters(), m2.path[-1].parameters()))
    # stage 2: tag every node and the teacher, then walk the schedule
    used = []
    m.teacher = Recorder(m.teacher, used, 0)
    for j in range(3):
        m.path[j] = Recorder(m.path[j], used, j + 1)
    m.replay_log.clear()
    m._node = None
    per_step = []
    for step in range(10):
        used.clear()
        m.loss(b, step)
        per_step.append(sorted(set(used)))
    assert per_step == [[2], [2], [1], [1], [0], [0], [0], [0], [0], [0]]   # nodes N-1 .. 0, 2 steps each
    assert m.replay_log == [(0, 2), (2, 1), (4, 0)]
    assert m.replay_order() == [2, 1, 0]


def test_disback_schedule_with_teacher_initialised_fake_score(toy):
    m = tiny("disback", toy, path_checkpoints=4, record_steps=4, switch_every=5, fake_init="teacher", gan=False)
    assert m.replay_order() == [4, 3, 2, 1, 0]
    assert [m.node_at(s) for s in (0, 4, 5, 9, 10, 19, 20, 1000)] == [4, 4, 3, 3, 2, 1, 0, 0]


def test_disback_path_is_checkpointed_and_not_recorded_again(toy, tiny_trainer, tmp_path):
    m = tiny("disback", toy, path_checkpoints=2, record_steps=4, record_batch=8, switch_every=1)
    potstill.Trainer(tiny_trainer(batch_size=16), tmp_path).fit(m, m.train_data(toy))
    fresh = tiny("disback", toy, path_checkpoints=2, record_steps=4, record_batch=8, switch_every=1)
    fresh.record = lambda: pytest.fail("a resumed run must not record the path again")
    potstill.Trainer(tiny_trainer(batch_size=16, steps=4), tmp_path).fit(fresh, fresh.train_data(toy), resume=True)
    assert bool(fresh.recorded)
    for a, b in zip(m.path.parameters(), fresh.path.parameters()):
        assert torch.equal(a, b)


# --- config validation ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,bad,key", [
    ("swiftbrush", {"lora_rank": 0}, "lora_rank"),
    ("swiftbrush", {"lora_alpha": 0.0}, "lora_alpha"),
    ("swiftbrush", {"sigma_max": -1.0}, "sigma_max"),
    ("swiftbrush", {"guidance": float("nan")}, "guidance"),
    ("swiftbrush", {"t_lo": 0.5, "t_hi": 0.4}, "t_lo"),
    ("swiftbrush", {"label_pool": 0}, "label_pool"),
    ("msd", {"students": 0}, "students"),
    ("msd", {"students": 2, "partition": [[0, 1]]}, "partition"),
    ("msd", {"students": 2, "partition": [[0, 1], [1, 2]]}, "partition"),
    ("msd", {"students": 2, "partition": [[0], []]}, "partition"),
    ("msd", {"pretrain_steps": -1}, "pretrain_steps"),
    ("msd", {"conditional": False}, "conditional"),
    ("msd", {"student_override": {"name": "mlp"}}, "student_override"),
    ("msd", {"tsm_p_std": 0.0}, "tsm_p_std"),
    ("disback", {"path_checkpoints": 0}, "path_checkpoints"),
    ("disback", {"path_checkpoints": 4, "record_steps": 3}, "record_steps"),
    ("disback", {"record_batch": 0}, "record_batch"),
    ("disback", {"record_lr": 0.0}, "record_lr"),
    ("disback", {"switch_every": 0}, "switch_every"),
    ("disback", {"fake_init": "random"}, "fake_init"),
])
def test_config_validation_names_the_key(name, bad, key):
    cls = potstill.METHODS.get(name).Config
    with pytest.raises(ValueError, match=key):
        cls(**bad)
    with pytest.raises(ConfigError, match=f"method: .*{key}"):
        from_dict(cls, bad, "method")


# --- recipes --------------------------------------------------------------------------------------
RECIPES = ["swiftbrush_toy2d", "msd_toy2d", "msd1_toy2d", "disback_toy2d"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_smoke_runs(recipe, tiny_teacher_run, tmp_path):
    extra = ["method.record_steps=4", "method.record_batch=16", "method.switch_every=1"] if recipe.startswith("disback") else []
    s = potstill.run_recipe(ROOT / f"recipes/gen/{recipe}.yaml", tmp_path / recipe,
                            [f"teacher.checkpoint={tiny_teacher_run}", "trainer.steps=3", "trainer.progress=false",
                             "trainer.threads=1", "trainer.eval_every=3", "trainer.ckpt_every=0",
                             "trainer.batch_size=32", "data.train_size=256", "data.val_size=64", "data.test_size=64",
                             *extra])
    assert math.isfinite(s["val"]["swd"]) and s["method"]["name"] == recipe.split("_")[0].rstrip("1")
    d = potstill.load_denoiser(tmp_path / recipe)
    assert d.sampling["steps"] == 1
    y = torch.arange(16) % 8
    x = multistep(d, torch.randn(16, 2), [d.sampling["sigma_max"], 0.0], cond=y).x
    assert torch.isfinite(x).all()
    if recipe.startswith("msd"):
        k = 4 if recipe == "msd_toy2d" else 1
        assert d.model_spec["name"] == "msd_router" and len(d.net.nets) == k
    if recipe == "swiftbrush_toy2d":
        assert s["train_rows"] == potstill.resolve(ROOT / f"recipes/gen/{recipe}.yaml").method.config.label_pool


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_round_trips_strictly(recipe):
    cfg = potstill.resolve(ROOT / f"recipes/gen/{recipe}.yaml")
    assert cfg.description and potstill.resolve(cfg.to_dict()).to_dict() == cfg.to_dict()
