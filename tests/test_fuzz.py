"""Property-based tests (hypothesis): bad input only ever fails with the project's own error type.

Every loader gets a valid file mutated at random (truncated, bytes flipped, bytes replaced) and
the recipe parser gets random recipes and overrides. The property: the call either succeeds or
raises a :class:`potstill.errors.PotstillError` (ConfigError, DataError, CheckpointError) with a
message; never a bare ``ValueError`` / ``KeyError`` / ``zipfile.BadZipFile`` / crash.
"""
import gzip
import io
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from potstill.errors import PotstillError

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def mutated(draw, data: bytes):
    """A valid file's bytes after one of: truncation, random byte flips, a random splice, garbage."""
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "garbage", "same"]))
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[:draw(st.integers(0, max(0, len(b) - 1)))])
    if kind == "flip":
        for i in draw(st.lists(st.integers(0, len(b) - 1), min_size=1, max_size=8)):
            b[i] = draw(st.integers(0, 255))
        return bytes(b)
    if kind == "splice":
        i = draw(st.integers(0, len(b)))
        return bytes(b[:i]) + draw(st.binary(max_size=64)) + bytes(b[i:])
    if kind == "garbage":
        return draw(st.binary(max_size=256))
    return bytes(b)


def expect_clean(fn, *args):
    try:
        fn(*args)
    except PotstillError as e:
        assert str(e)                       # one clear line, never empty


# --- idx (Fashion-MNIST) -------------------------------------------------------------------------
def _idx_bytes() -> bytes:
    x = (np.arange(2 * 3 * 3) % 251).astype(np.uint8).reshape(2, 3, 3)
    return bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in x.shape) + x.tobytes()


@FUZZ
@given(data=mutated(_idx_bytes()), gz=st.booleans())
def test_idx_reader_rejects_corrupt_files_cleanly(tmp_path_factory, data, gz):
    from potstill.data.fmnist import read_idx

    d = tmp_path_factory.mktemp("idx")
    path = d / ("f-idx3-ubyte.gz" if gz else "f-idx3-ubyte")
    path.write_bytes(gzip.compress(data) if gz else data)
    expect_clean(read_idx, path)
    if gz:                                   # and a corrupted gzip stream itself
        path.write_bytes(data)
        expect_clean(read_idx, path)


# --- npz -------------------------------------------------------------------------------------------
def _npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32), y=np.arange(6) % 2)
    return buf.getvalue()


@FUZZ
@given(data=mutated(_npz_bytes()))
def test_npz_reader_rejects_corrupt_files_cleanly(tmp_path_factory, data):
    from potstill.data.npz import read_npz

    path = tmp_path_factory.mktemp("npz") / "d.npz"
    path.write_bytes(data)
    expect_clean(read_npz, str(path))


# --- synthetic sets and checkpoints (safetensors + JSON) ----------------------------------------
@pytest.fixture(scope="module")
def synthetic_files(tmp_path_factory):
    from potstill.data.synthetic_set import SyntheticSet

    d = tmp_path_factory.mktemp("syn")
    s = SyntheticSet(torch.randn(4, 1, 4, 4), torch.tensor([0, 0, 1, 1]), 2, {"method": "dm"})
    s.save(d / "set")
    return (d / "set.safetensors").read_bytes(), (d / "set.json").read_text()


@st.composite
def json_mutation(draw, text: str):
    """The JSON object with one field replaced by a random JSON value, removed, or the text mangled."""
    obj = json.loads(text)
    kind = draw(st.sampled_from(["replace", "drop", "mangle"]))
    key = draw(st.sampled_from(sorted(obj)))
    if kind == "replace":
        obj[key] = draw(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                                     max_leaves=6))
        return json.dumps(obj)
    if kind == "drop":
        del obj[key]
        return json.dumps(obj)
    return draw(mutated(text.encode())).decode("utf-8", errors="replace")


@FUZZ
@given(data=st.data())
def test_synthetic_set_loader_rejects_corrupt_files_cleanly(tmp_path_factory, synthetic_files, data):
    from potstill.data.synthetic_set import SyntheticSet

    tensors, meta = synthetic_files
    d = tmp_path_factory.mktemp("s")
    which = data.draw(st.sampled_from(["tensors", "meta", "both"]))
    (d / "set.safetensors").write_bytes(data.draw(mutated(tensors)) if which != "meta" else tensors)
    (d / "set.json").write_text(data.draw(json_mutation(meta)) if which != "tensors" else meta)
    expect_clean(SyntheticSet.load, d / "set")


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory):
    from potstill.core.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("ck")
    path = save_checkpoint(d, 3, {"method/w": torch.randn(3, 2), "optim/x": torch.zeros(2)}, {"step": 3, "optim": {}})
    return (path / "state.safetensors").read_bytes(), (path / "meta.json").read_text()


@FUZZ
@given(data=st.data())
def test_checkpoint_and_weights_loaders_reject_corrupt_files_cleanly(tmp_path_factory, checkpoint_files, data):
    from potstill.core.checkpoint import load_checkpoint, load_module_weights

    tensors, meta = checkpoint_files
    d = tmp_path_factory.mktemp("c")
    (d / "state.safetensors").write_bytes(data.draw(mutated(tensors)))
    (d / "meta.json").write_text(data.draw(json_mutation(meta)))
    expect_clean(load_checkpoint, d)
    expect_clean(load_module_weights, torch.nn.Linear(2, 3), d / "state.safetensors")


# --- recipes and overrides ---------------------------------------------------------------------------
SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=10)
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                      max_leaves=8)
SECTIONS = {
    "method": st.fixed_dictionaries({"name": st.sampled_from(["kd", "dm", "supervised", "edm", "token_kd", "nope", 3])},
                                    optional={"temperature": VALUES, "alpha": VALUES, "ipc": VALUES, "steps": VALUES}),
    "data": st.fixed_dictionaries({"name": st.sampled_from(["digits", "fmnist", "toy2d", "arithmetic", "bogus"])},
                                  optional={"val_size": VALUES, "train_size": VALUES}),
    "student": st.fixed_dictionaries({"name": st.sampled_from(["mlp", "convnet", "gpt", "nothing"])},
                                     optional={"hidden": VALUES, "width": VALUES}),
    "trainer": st.dictionaries(st.sampled_from(["steps", "batch_size", "seed", "lr", "ema_decay", "precision", "device",
                                                "time_limit_s", "optim", "bogus"]), VALUES, max_size=4),
    "eval": st.dictionaries(st.sampled_from(["epochs", "seeds", "lr", "bogus"]), VALUES, max_size=3),
}


@FUZZ
@given(recipe=st.fixed_dictionaries({}, optional={**SECTIONS, "extra": VALUES}))
def test_recipe_parser_rejects_bad_recipes_cleanly(recipe):
    from potstill.core.run import resolve

    expect_clean(resolve, recipe)


@FUZZ
@given(overrides=st.lists(st.text(max_size=30), max_size=4))
def test_override_parser_rejects_bad_overrides_cleanly(overrides):
    from potstill.core.run import resolve

    expect_clean(resolve, {"method": {"name": "supervised"}, "data": {"name": "digits"}, "student": {"name": "mlp"}},
                 overrides)


VALID_RECIPE = b"method: {name: supervised}\ndata: {name: digits}\nstudent: {name: mlp, hidden: [8]}\n"


@FUZZ
@given(data=st.text(max_size=200).map(str.encode) | mutated(VALID_RECIPE))
def test_recipe_files_that_are_not_yaml_mappings_are_rejected_cleanly(tmp_path_factory, data):
    from potstill.core.run import resolve

    path = tmp_path_factory.mktemp("r") / "r.yaml"
    path.write_bytes(data)                   # also bytes that are not UTF-8
    expect_clean(resolve, path)
