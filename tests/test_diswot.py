"""K8 DisWOT: the score on hand-made cases, invariance to sample order, the search, the loss."""
import pytest
import torch

import potstill
from potstill.methods.kd.diswot import (cam_and_features, diswot_score, evolve, relation_distance, score_from,
                                        semantic_distance, similarity_matrices)


def convnet(width, depth, seed=0):
    torch.manual_seed(seed)
    return potstill.build_model({"name": "convnet", "width": width, "depth": depth}, (1, 16, 16), 4)


def batch(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 16, 16, generator=g), torch.randint(4, (n,), generator=g)


def test_distances_are_zero_for_identical_networks_and_relations_ignore_feature_scale():
    x, y = batch()
    t = convnet(8, 2)
    cam, f = cam_and_features(t, x, y)
    assert semantic_distance(cam, cam).item() == pytest.approx(0.0, abs=1e-7)
    assert relation_distance(f, f).item() == pytest.approx(0.0, abs=1e-7)
    assert relation_distance(f, 3.0 * f).item() == pytest.approx(0.0, abs=1e-6)     # rows are normalised
    assert diswot_score(t, t, x, y) == pytest.approx(0.0, abs=1e-6)
    # relation distance by hand: two samples, orthogonal vs parallel features
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # G_a = I; G_b = all ones, rows normalised to 1/sqrt(2): 2 (1 - 1/sqrt2)^2 + 2 (1/sqrt2)^2 over B^2 = 4
    assert relation_distance(a, b).item() == pytest.approx((2 * (1 - 2 ** -0.5) ** 2 + 1) / 4)


def test_semantic_term_compares_class_gram_matrices_of_classifier_gradients():
    x, y = batch()
    t, s = convnet(8, 2), convnet(16, 1, seed=3)
    gram, rel = similarity_matrices(t, x, y)
    assert gram.shape == (4, 4) and rel.shape == (12, 12)
    assert torch.allclose(gram.norm(dim=1), torch.ones(4), atol=1e-5)        # rows normalised
    assert similarity_matrices(s, x, y)[0].shape == (4, 4)                   # any width compares
    # hand case: C = 2; gradients e1, e2 (Gram I) vs parallel ones (Gram all ones)
    eye, ones = torch.eye(2), torch.nn.functional.normalize(torch.ones(2, 2), dim=1)
    zero = torch.zeros(3, 3)
    assert score_from((eye, zero), (ones, zero)) == pytest.approx(-(2 * (1 - 2 ** -0.5) ** 2 + 1) / 2, rel=1e-5)
    assert score_from((eye, zero), (eye, zero)) == 0.0


def test_score_is_invariant_to_the_order_of_the_samples():
    x, y = batch(16, seed=1)
    t, s = convnet(16, 3, seed=1), convnet(8, 2, seed=2)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(5))
    assert diswot_score(t, s, x, y) == pytest.approx(diswot_score(t, s, x[perm], y[perm]), rel=1e-5)


def test_evolution_finds_the_best_genes_of_a_known_score_within_the_budget():
    space = {"width": [4, 8, 16, 32, 64], "depth": [1, 2, 3]}
    score = lambda g: -abs(g["width"] - 16) - abs(g["depth"] - 2)  # noqa: E731
    ranked = evolve(score, space, population=6, generations=8, seed=0, allowed=lambda g: g["width"] <= 32)
    assert ranked[0][1] == {"width": 16, "depth": 2}
    assert all(g["width"] <= 32 for _, g in ranked)


def test_diswot_loss_trains_a_student(tmp_path):
    common = {"data": {"name": "digits"}, "trainer": {"steps": 60, "batch_size": 64, "progress": False,
                                                      "optim": {"default": {"name": "adam", "lr": 3e-3}}}}
    net = {"name": "convnet", "width": 16, "depth": 2}
    potstill.core.run.run(potstill.resolve({"method": {"name": "supervised"}, "student": net, **common}), tmp_path / "t")
    s = potstill.core.run.run(potstill.resolve({"method": {"name": "diswot"}, "student": {**net, "width": 8},
                                                "teacher": {"model": net, "checkpoint": str(tmp_path / "t/export/model.safetensors")},
                                                **common}), tmp_path / "s")
    assert s["test"]["acc"] > 0.6
    with pytest.raises(potstill.core.config.ConfigError, match="features"):
        potstill.core.run.run(potstill.resolve({"method": {"name": "diswot"}, "student": {"name": "mlp"},
                                                "teacher": {"model": net, "checkpoint": str(tmp_path / "t/export/model.safetensors")},
                                                **common}), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
