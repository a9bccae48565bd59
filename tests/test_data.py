import gzip
import struct

import numpy as np
import pytest
import torch

import potstill
from potstill.data import ArrayData, DataError, carve, stratified_split
from potstill.data.fmnist import read_idx
from potstill.data.loader import BatchSampler


def write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_reader_round_trip_and_truncation(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), arr)
    header = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10)
    with gzip.open(tmp_path / "b.gz", "wb") as f:
        f.write(header + b"\x01\x02")
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "b.gz")


def test_fmnist_from_a_user_folder_and_missing_folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    b = potstill.load_dataset({"name": "fmnist", "path": str(tmp_path), "val_size": 10, "train_size": 20})
    assert (len(b.train), len(b.val), len(b.unlabeled), len(b.test)) == (20, 10, 30, 20)
    assert b.in_shape == (1, 28, 28) and (b.unlabeled.y == -1).all()
    monkeypatch.setenv("POTSTILL_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        potstill.load_dataset({"name": "fmnist"})


def test_npz_user_data_and_its_errors(tmp_path):
    x = np.random.default_rng(0).normal(size=(100, 6)).astype(np.float32)
    y = np.arange(100) % 3
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    b = potstill.load_dataset({"name": "npz", "path": str(tmp_path / "ok.npz")})
    assert b.num_classes == 3 and len(b.train) + len(b.val) + len(b.test) == 100
    np.savez(tmp_path / "nolabels.npz", x=x)
    with pytest.raises(DataError, match=r"missing array\(s\) \['y'\]"):
        potstill.load_dataset({"name": "npz", "path": str(tmp_path / "nolabels.npz")})
    with pytest.raises(DataError, match="data file not found"):
        potstill.load_dataset({"name": "npz", "path": str(tmp_path / "absent.npz")})
    x[0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=y)
    with pytest.raises(DataError, match="NaN"):
        potstill.load_dataset({"name": "npz", "path": str(tmp_path / "nan.npz")})


def test_splits_are_disjoint_and_stratified():
    y = torch.arange(1000) % 10
    taken, rest = stratified_split(y, 100, seed=3)
    assert len(taken) == 100 and len(set(taken.tolist()) & set(rest.tolist())) == 0
    assert torch.bincount(y[taken]).tolist() == [10] * 10
    data = ArrayData(torch.arange(1000).float().unsqueeze(1), y)
    train, val, unl = carve(data, 100, 300, seed=0)
    ids = [set(d.x.squeeze(1).long().tolist()) for d in (train, val, unl)]
    assert sum(map(len, ids)) == 1000 and len(ids[0] | ids[1] | ids[2]) == 1000


def test_batches_are_a_pure_function_of_step_and_shard_across_ranks():
    a = BatchSampler(100, 20, seed=1)
    b = BatchSampler(100, 20, seed=1)
    assert torch.equal(a.indices(7), b.indices(7))
    assert not torch.equal(a.indices(0), a.indices(5))  # epoch 1 reshuffles
    epoch = torch.cat([a.indices(s) for s in range(5)])
    assert sorted(epoch.tolist()) == list(range(100))
    shards = [BatchSampler(100, 20, seed=1, rank=r, world=2).indices(3) for r in range(2)]
    assert sorted(torch.cat(shards).tolist()) == sorted(a.indices(3).tolist())
    with pytest.raises(DataError, match="not divisible"):
        BatchSampler(100, 21, seed=0, world=2)


def test_fmnist_pixel_scalings_are_exact():
    import numpy as np

    from potstill.data.fmnist import MEAN, STD, FashionMNISTConfig, to_arrays

    raw = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    sym = to_arrays(raw, np.array([3]), "symmetric")
    assert torch.allclose(sym.x.flatten(), torch.tensor([-1.0, 1.0, -0.6, -0.2]))
    std = to_arrays(raw, np.array([3]))
    assert std.x.flatten()[1].item() == pytest.approx((1.0 - MEAN) / STD)
    with pytest.raises(ValueError, match="pixels"):
        FashionMNISTConfig(pixels="zero_one")
