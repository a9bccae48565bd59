from dataclasses import dataclass, field
from typing import Literal

import pytest

from potstill.core.config import ConfigError, apply_overrides, from_dict, parse_override
from potstill.core.run import resolve

RECIPE = {"method": {"name": "kd"}, "data": {"name": "digits"}, "student": {"name": "mlp"},
          "teacher": {"model": {"name": "mlp"}, "checkpoint": "x.safetensors"}}


@dataclass
class Inner:
    lr: float = 0.1
    kind: Literal["a", "b"] = "a"


@dataclass
class Outer:
    steps: int = 10
    inner: Inner = field(default_factory=Inner)
    groups: dict[str, Inner] = field(default_factory=dict)
    name: str | None = None


def test_override_parsing_types():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=0.5") == ("a", 0.5)
    assert parse_override("a=true") == ("a", True)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=hello") == ("a", "hello")
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("nonsense")


def test_overrides_create_nested_and_refuse_scalar_parent():
    out = apply_overrides({"a": {"b": 1}}, ["a.c.d=2"])
    assert out == {"a": {"b": 1, "c": {"d": 2}}}
    with pytest.raises(ConfigError, match="a.b is a value"):
        apply_overrides({"a": {"b": 1}}, ["a.b.c=2"])


def test_strict_dataclass_parsing():
    cfg = from_dict(Outer, {"steps": 5, "inner": {"lr": "1e-3"}, "groups": {"g": {"kind": "b"}}})
    assert cfg.steps == 5 and cfg.inner.lr == 1e-3 and cfg.groups["g"].kind == "b"
    with pytest.raises(ConfigError, match=r"unknown key 'inner.lrr'; valid keys under inner: kind, lr"):
        from_dict(Outer, {"inner": {"lrr": 1}})
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        from_dict(Outer, {"steps": "ten"})
    with pytest.raises(ConfigError, match=r"groups.g.kind: 'c' is not one of \['a', 'b'\]"):
        from_dict(Outer, {"groups": {"g": {"kind": "c"}}})
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        from_dict(Outer, {"steps": True})  # bools are not ints here


def test_recipe_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        resolve(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown key 'method.temprature'.*temperature"):
        resolve(RECIPE, ["method.temprature=3"])
    with pytest.raises(ConfigError, match="unknown method 'kdd'; registered: .*kd"):
        resolve(RECIPE, ["method.name=kdd"])
    with pytest.raises(ConfigError, match="unknown key 'bogus'; valid top-level keys"):
        resolve({**RECIPE, "bogus": 1})
    with pytest.raises(ConfigError, match="student.width: expected an integer"):
        resolve({**RECIPE, "student": {"name": "convnet", "width": "wide"}})
    with pytest.raises(ConfigError, match="method: temperature must be > 0"):
        resolve(RECIPE, ["method.temperature=-1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        resolve(bad)


def test_resolved_recipe_round_trips():
    cfg = resolve(RECIPE, ["trainer.steps=7", "method.alpha=0.5"])
    again = resolve(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    assert again.trainer.steps == 7 and again.method.config.alpha == 0.5


def test_unknown_optimizer_group_is_an_error(tmp_path, digits):
    import potstill

    cfg = resolve({"method": {"name": "supervised"}, "data": {"name": "digits"}, "student": {"name": "mlp", "hidden": [8]},
                   "trainer": {"steps": 1, "progress": False, "optim": {"critic": {"lr": 0.1}}}})
    with pytest.raises(ConfigError, match="trainer.optim.critic: Supervised has no parameter group 'critic'; its groups: student"):
        potstill.core.run.run(cfg, tmp_path / "r", bundle=digits)
    assert not (tmp_path / "r").exists(), "nothing is written for a bad recipe"
