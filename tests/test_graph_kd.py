"""Graph KD (K12 FF-G2M): the csbm generator, the GCN layer, the two knowledge terms by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

import potstill
from potstill.losses.graph import high_frequency_kd, neighbour_kd
from potstill.models.gcn import normalized_adjacency


def test_csbm_homophily_is_what_was_asked_and_splits_are_disjoint_node_sets():
    for h in (0.9, 0.1):
        b = potstill.load_dataset({"name": "csbm", "nodes": 600, "homophily": h, "seed": 3})
        g = b.info["graph"]
        assert abs(g["homophily"] - h) < 0.05
        ids = torch.cat([b.train.index, b.val.index, b.test.index])
        assert len(ids) == 600 and len(torch.unique(ids)) == 600
        assert torch.equal(b.test.x, g["x"][b.test.index]) and torch.equal(b.test.y, g["y"][b.test.index])
        e = g["edge_index"]
        assert (e[0] != e[1]).all() and e.shape[1] % 2 == 0                       # undirected, no self loops
        assert len(b.train) == 100 and torch.bincount(b.train.y, minlength=5).min() >= 12   # stratified


def test_csbm_cyclic_cross_edges_join_each_class_to_its_successor_only():
    b = potstill.load_dataset({"name": "csbm", "nodes": 600, "homophily": 0.0, "cross": "cyclic", "seed": 1})
    g = b.info["graph"]
    y, e = g["y"], g["edge_index"]
    a, c = y[e[0]], y[e[1]]
    assert g["homophily"] == 0.0
    assert ((c == (a + 1) % 5) | (a == (c + 1) % 5)).all()                  # one of the two is the successor
    assert len(set(zip(a.tolist(), c.tolist()))) == 10                       # 5 pairs, both directions
    with pytest.raises(ValueError, match="cross"):
        potstill.load_dataset({"name": "csbm", "cross": "ring"})


def test_gcn_adjacency_is_the_symmetric_normalisation_with_self_loops():
    # a path 0-1-2: degrees with self loops 2, 3, 2
    e = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    a = normalized_adjacency(e, 3).to_dense()
    want = torch.tensor([[1 / 2, 1 / math.sqrt(6), 0], [1 / math.sqrt(6), 1 / 3, 1 / math.sqrt(6)], [0, 1 / math.sqrt(6), 1 / 2]])
    assert torch.allclose(a, want)
    mean = normalized_adjacency(e, 3, self_loops=False, mean=True).to_dense()
    assert torch.allclose(mean.sum(1), torch.ones(3)) and mean[1, 0] == 0.5


def test_neighbour_kd_by_hand_and_self_loops_only_is_plain_kd():
    zs = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    zt = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    e = torch.tensor([[0, 1], [1, 0]])
    kl = lambda p, q: float((F.softmax(p, -1) * (F.log_softmax(p, -1) - F.log_softmax(q, -1))).sum())  # noqa: E731
    # pairs (student i, teacher j): (0,1), (1,0), and the self loops (0,0), (1,1)
    want = (kl(zt[1], zs[0]) + kl(zt[0], zs[1]) + kl(zt[0], zs[0]) + kl(zt[1], zs[1])) / 4
    assert neighbour_kd(zs, zt, e) == pytest.approx(want, rel=1e-5)
    assert neighbour_kd(zs, zt, e[:, :0]) == pytest.approx((kl(zt[0], zs[0]) + kl(zt[1], zs[1])) / 2, rel=1e-5)


def test_high_frequency_term_is_zero_where_features_are_constant_over_neighbourhoods():
    # two cliques; every node of a clique has the same features, so a GCN teacher and an MLP student
    # both give neighbours identical logits: nothing tells neighbours apart, and the term vanishes
    cliques = [range(0, 4), range(4, 8)]
    e = torch.tensor([(i, j) for c in cliques for i in c for j in c if i != j]).T
    x = torch.cat([torch.ones(4, 3), -torch.ones(4, 3)])
    gcn = potstill.build_model({"name": "gcn", "dropout": 0.0}, (3,), 4).set_graph(e, 8).eval()
    mlp = potstill.build_model({"name": "mlp", "hidden": [8]}, (3,), 4).eval()
    with torch.no_grad():
        zt, zs = gcn(x), mlp(x)
    assert high_frequency_kd(zs, zt, e).item() == pytest.approx(0.0, abs=1e-7)
    # one node that differs from its neighbours makes it positive
    x2 = x.clone()
    x2[0] = 5.0
    with torch.no_grad():
        assert high_frequency_kd(mlp(x2), gcn(x2), e).item() > 1e-4


def test_ff_g2m_trains_an_mlp_from_a_gcn_teacher_end_to_end(tmp_path):
    data = {"name": "csbm", "nodes": 400, "features": 8, "signal": 2.0, "homophily": 0.9, "train_per_class": 5,
            "val_per_class": 5}
    teacher = potstill.core.run.run(potstill.resolve({"method": {"name": "gnn"}, "data": data,
                                                      "student": {"name": "gcn", "hidden": [16]},
                                                      "trainer": {"steps": 60, "batch_size": 1, "progress": False,
                                                                  "optim": {"default": {"name": "adam", "lr": 0.02}}}}),
                                    tmp_path / "t")
    common = {"data": data, "student": {"name": "mlp", "hidden": [16]},
              "teacher": {"model": {"name": "gcn", "hidden": [16]}, "checkpoint": str(tmp_path / "t/export/model.safetensors")},
              "trainer": {"steps": 80, "batch_size": 1, "progress": False, "optim": {"default": {"name": "adam", "lr": 0.02}}}}
    s = potstill.core.run.run(potstill.resolve({"method": {"name": "ff_g2m"}, **common}), tmp_path / "s")
    assert teacher["test"]["acc"] > 0.8 and s["test"]["acc"] > 0.5                # 4 classes: chance 0.25
    with pytest.raises(potstill.core.config.ConfigError, match="not a graph dataset"):
        potstill.core.run.run(potstill.resolve({"method": {"name": "ff_g2m"}, **{**common, "data": {"name": "digits"}}}),
                              tmp_path / "bad")
