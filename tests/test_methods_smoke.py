"""Every registered method: trains 3 steps on tiny data with finite losses, changes every
parameter group, and round-trips a checkpoint exactly."""
import math

import pytest
import torch

import potstill
from potstill.report.plots import read_metrics
from potstill.core.method import BuildContext
from potstill.diffusion import EDMPrecond
from potstill.models import build_model


def small_config(cls):
    """Defaults, except dataset-distillation methods get 2 images per class and a tiny network."""
    if cls.pillar != "dataset":
        return cls.Config()
    fields = set(cls.Config.__dataclass_fields__)
    extra = {"net": {"name": "convnet", "width": 8, "depth": 2}} if "net" in fields else {}
    extra.update({k: 2 for k in ("outer_loop", "inner_loop") if k in fields})
    extra.update({"batch_real": 8} if "batch_real" in fields else {})
    extra.update({"relabel": False} if "relabel" in fields else {})   # soft labels' argmax is not the class
    if "experts" in fields:   # trajectory matching: one short expert, a short unroll
        extra.update(experts={"num": 1, "epochs": 3, "batch_size": 64, "dsa": "none"}, syn_steps=2,
                     expert_epochs=1, max_start_epoch=2)
    return cls.Config(ipc=2, **extra)


def small_generative_config(cls):
    fields = set(cls.Config.__dataclass_fields__)
    extra = {k: v for k, v in {"regression_pairs": 16, "regression_steps": 2}.items() if k in fields}
    return cls.Config(**extra)


TINY_GPT = {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16}


def build(name, bundle, text=None):
    torch.manual_seed(0)
    cls = potstill.METHODS.get(name)
    if cls.pillar == "lm":
        ctx = BuildContext(data=text, student_module=build_model(TINY_GPT, text.in_shape, text.num_classes),
                           teacher_module=build_model({**TINY_GPT, "n_embd": 24}, text.in_shape, text.num_classes))
        fields = cls.Config.__dataclass_fields__
        if "data_mix" in fields:          # distillspec: half data, half draft samples
            cfg = cls.Config(data_mix={"data": 0.5, "student": 0.5}, prompt_len=4)
        else:
            cfg = cls.Config(on_policy=0.5, prompt_len=4) if "on_policy" in fields else cls.Config()
        return cls.build(cfg, ctx)
    if cls.pillar == "generative":
        unet = {"name": "unet", "channels": [8, 16], "groups": 4, "emb": 16}
        ctx = BuildContext(data=bundle, student_module=build_model(unet, bundle.in_shape, 10),
                           teacher_module=EDMPrecond(build_model(unet, bundle.in_shape, 10)))
        return cls.build(small_generative_config(cls), ctx)
    if name in GRAPH_METHODS:              # full-batch node classification on a small generated graph
        g = small_graph()
        student = {"name": "gcn" if name == "gnn" else "mlp", "hidden": [8]}
        ctx = BuildContext(data=g, student_module=build_model(student, g.in_shape, g.num_classes),
                           teacher_module=build_model({"name": "gcn", "hidden": [8]}, g.in_shape, g.num_classes))
        return cls.build(cls.Config(), ctx)
    ctx = BuildContext(data=bundle,
                       student_module=build_model({"name": "convnet", "width": 8, "depth": 2}, bundle.in_shape, 10),
                       teacher_module=build_model({"name": "convnet", "width": 12, "depth": 2,
                                                   **({"norm": "batch"} if cls.pillar == "dataset" else {})},
                                                  bundle.in_shape, 10))
    if name in ("mae", "dmae", "hybrid_distill"):   # masked pretraining works on ViT tokens
        vit = {"name": "vit", "patch": 2, "width": 16, "depth": 2, "heads": 2}
        ctx = BuildContext(data=bundle, student_module=build_model(vit, bundle.in_shape, 10),
                           teacher_module=build_model({**vit, "width": 24, "depth": 3}, bundle.in_shape, 10))
        if name == "hybrid_distill":           # one teacher through the context: the T_c-features-only variant
            return cls(cls.Config(relation_weight=0.0), ctx.student(), ctx.teacher())
        return cls.build(cls.Config(), ctx)
    if name == "diff_quant":               # quantizes a given (here: untrained) student; no weights file to load
        return cls(cls.Config(), ctx.student(), ctx.teacher())
    if name == "lelp":                     # its student head has k outputs per class
        ctx.student_module = build_model({"name": "convnet", "width": 8, "depth": 2}, bundle.in_shape, 10 * cls.Config().k)
    return cls.build(small_config(cls), ctx)


GRAPH_METHODS = ("gnn", "ff_g2m")
_GRAPH = {}


def small_graph():
    if "g" not in _GRAPH:
        _GRAPH["g"] = potstill.load_dataset({"name": "csbm", "nodes": 200, "features": 8, "train_per_class": 5,
                                             "val_per_class": 5})
    return _GRAPH["g"]


@pytest.fixture(scope="module")
def small_digits():
    return potstill.load_dataset({"name": "digits", "train_size": 300})


@pytest.fixture(scope="module")
def small_text():
    return potstill.load_dataset({"name": "arithmetic", "train_size": 200, "val_size": 20, "test_size": 20,
                                  "block_size": 16})


@pytest.mark.parametrize("name", potstill.METHODS.names())
def test_method_trains_changes_every_group_and_round_trips(name, small_digits, small_text, tmp_path, tiny_trainer):
    cls = potstill.METHODS.get(name)
    assert cls.__doc__ and cls.pillar in ("kd", "dataset", "generative", "lm")
    if cls.pillar == "lm":
        small_digits = small_text  # the same checks on text
    if name in GRAPH_METHODS:
        small_digits = small_graph()
    if cls.catalog_ids:
        assert cls.paper and cls.arxiv, "a catalog method names its paper and arXiv id"
    method = build(name, small_digits, small_text)
    before = {g: [p.detach().clone() for p in ps] for g, ps in method.param_groups().items()}
    trainer = potstill.Trainer(tiny_trainer(), tmp_path)
    result = trainer.fit(method, method.train_data(small_digits), small_digits.val)
    # finite losses were logged for every group
    rows = read_metrics(tmp_path / "metrics.jsonl")
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 3
    for g in before:
        assert all(math.isfinite(r[f"loss/{g}"]) for r in train_rows)
    for g, ps in method.param_groups().items():
        assert any(not torch.equal(a, b) for a, b in zip(before[g], ps)), f"group {g} did not change"
    if cls.pillar == "dataset":  # judged by the protocol after training, not per step
        assert result["val"] == {} and method.export().ipc == 2
    elif cls.pillar == "generative":
        assert "edm_loss" in result["val"] or "swd" in result["val"]  # teachers / few-step students
    elif cls.pillar == "lm":
        assert 0.0 < result["val"]["nll"] < 2 * math.log(small_text.num_classes)
    else:
        assert 0.0 <= result["val"]["acc"] <= 1.0
    # checkpoint round trip: a fresh method restored from the run equals the trained one
    fresh = build(name, small_digits, small_text)
    potstill.Trainer(tiny_trainer(), tmp_path).fit(fresh, fresh.train_data(small_digits), resume=True)
    trained, restored = method.trainable_state(), fresh.trainable_state()
    assert trained.keys() == restored.keys()
    for k in trained:
        assert torch.equal(trained[k], restored[k]), k
    assert not any(k.startswith("teacher.") for k in trained), "the frozen teacher is not checkpointed"


def test_catalog_ids_of_first_slice():
    ids = {i for n in potstill.METHODS.names() for i in potstill.METHODS.get(n).catalog_ids}
    assert {"B1", "B2", "K7"} <= ids
