from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

import potstill
from potstill.core.method import Method
from potstill.core.trainer import OptimConfig
from potstill.data import ArrayData


@dataclass
class ToyConfig:
    pass


class TwoGroups(Method):
    """Toy method: group a minimises a·b, group b minimises (a·b)² (both depend on both)."""

    Config = ToyConfig
    name = "toy"
    pillar = "kd"

    def __init__(self):
        super().__init__(ToyConfig())
        self.a = nn.Parameter(torch.tensor([1.0]))
        self.b = nn.Parameter(torch.tensor([2.0]))

    def param_groups(self):
        return {"a": [self.a], "b": [self.b]}

    def loss(self, batch, step):
        ab = (self.a * self.b).sum()
        return {"a": ab, "b": ab**2, "log/ab": ab.detach()}

    def export(self):
        return self


DATA = ArrayData(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))


def sgd(update_every=1):
    return {"name": "sgd", "lr": 1.0, "momentum": 0.0, "update_every": update_every}


def test_each_loss_reaches_only_its_group(tiny_trainer):
    m = TwoGroups()
    potstill.Trainer(tiny_trainer(steps=1, optim={"a": sgd(), "b": sgd()})).fit(m, DATA)
    # a <- a - d(ab)/da = 1 - 2 = -1 ;  b <- b - d(ab)^2/db = 2 - 2·a·b·a = -2
    # (if a's loss leaked into b, b would be 2 - (1 + 4) = -3)
    assert m.a.item() == pytest.approx(-1.0)
    assert m.b.item() == pytest.approx(-2.0)


def test_b_group_steps_only_on_its_schedule(tiny_trainer):
    m = TwoGroups()
    values = []

    class Spy(potstill.core.callbacks.Callback):
        def on_step_end(self, trainer, step, logs):
            values.append(m.b.item())

    cfg = tiny_trainer(steps=4, optim={"a": {"name": "sgd", "lr": 0.0, "momentum": 0.0},
                                       "b": {"name": "sgd", "lr": 0.01, "momentum": 0.0, "update_every": 2}})
    potstill.Trainer(cfg, callbacks=[Spy()]).fit(m, DATA)
    assert values[0] != 2.0 and values[1] == values[0] and values[2] != values[1] and values[3] == values[2]


def test_lr_schedules_are_pure_functions_of_step():
    c = OptimConfig(lr=1.0, schedule="cosine", warmup_steps=10)
    assert c.lr_at(0, 110) == pytest.approx(0.1)
    assert c.lr_at(9, 110) == pytest.approx(1.0)
    assert c.lr_at(60, 110) == pytest.approx(0.5)
    assert c.lr_at(110, 110) == pytest.approx(0.0, abs=1e-12)
    s = OptimConfig(lr=0.01, schedule="step", decay_at=0.5)
    assert s.lr_at(49, 100) == 0.01 and s.lr_at(50, 100) == pytest.approx(0.001)


def test_grad_clip_bounds_the_update(tiny_trainer):
    m = TwoGroups()
    m.b.data.fill_(100.0)  # d(ab)/da = 100
    cfg = tiny_trainer(steps=1, optim={"a": {**sgd(), "grad_clip": 1.0}, "b": {"name": "sgd", "lr": 0.0, "momentum": 0.0}})
    potstill.Trainer(cfg).fit(m, DATA)
    assert m.a.item() == pytest.approx(0.0)  # 1 - 1.0 · (clipped unit gradient)


def test_ema_tracks_and_is_used_for_eval(tiny_trainer):
    m = TwoGroups()
    t = potstill.Trainer(tiny_trainer(steps=3, ema_decay=0.5, optim={"a": sgd(), "b": {"name": "sgd", "lr": 0.0, "momentum": 0}}))
    t.fit(m, DATA)
    live = m.a.item()
    with t.averaged():
        averaged = m.a.item()
    assert averaged != live and m.a.item() == live


def test_nan_loss_stops_with_a_clear_error(tiny_trainer):
    class Bad(TwoGroups):
        def loss(self, batch, step):
            out = super().loss(batch, step)
            out["a"] = out["a"] * float("nan")
            return out

    from potstill.errors import TrainingError

    with pytest.raises(TrainingError, match=r"step 0: the loss of parameter group 'a' is nan.*no checkpoint"):
        potstill.Trainer(tiny_trainer(steps=2)).fit(Bad(), DATA)


def test_missing_group_loss_is_reported(tiny_trainer):
    class Missing(TwoGroups):
        def loss(self, batch, step):
            return {"a": (self.a * self.b).sum()}

    with pytest.raises(KeyError, match=r"no loss for group\(s\) \['b'\]"):
        potstill.Trainer(tiny_trainer(steps=1)).fit(Missing(), DATA)


def test_user_dataloader_is_cycled(tiny_trainer, digits):
    from potstill.models import build_model

    model = build_model({"name": "mlp", "hidden": [16]}, digits.in_shape, 10)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(digits.train.x[:64], digits.train.y[:64]), batch_size=32)
    method = potstill.METHODS.get("supervised")(potstill.METHODS.get("supervised").Config(), student=model)
    out = potstill.Trainer(tiny_trainer(steps=5)).fit(method, loader, digits.val)
    assert out["steps"] == 5


def test_time_limit_stops_between_steps_and_says_so(tiny_trainer):
    import time

    class Slow(TwoGroups):
        def loss(self, batch, step):
            time.sleep(0.05)
            return super().loss(batch, step)

    out = potstill.Trainer(tiny_trainer(steps=10_000, time_limit_s=0.3,
                                        optim={"a": sgd(), "b": sgd()})).fit(Slow(), DATA)
    assert 1 <= out["steps"] < 50                      # ~6 steps of 0.05 s fit in 0.3 s
    assert out["stopped"].startswith("time_limit (0.3 s) after") and "of 10000 steps" in out["stopped"]
    full = potstill.Trainer(tiny_trainer(steps=3, time_limit_s=60)).fit(TwoGroups(), DATA)
    assert full["steps"] == 3 and "stopped" not in full
    with pytest.raises(potstill.ConfigError, match="trainer.time_limit_s"):
        tiny_trainer(time_limit_s=-1)
