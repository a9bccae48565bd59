"""Generative metrics on distributions with known answers."""
import math

import numpy as np

import pytest
import torch

import potstill
from potstill.eval.generative import frechet_distance, mmd_rbf, mode_stats, precision_recall, sliced_wasserstein


def test_fid_of_a_set_to_itself_is_zero_and_gaussians_match_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 4, generator=g)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # N(0, I) vs N(m, 4 I): |m|^2 + tr(I + 4I - 2*2I) = |m|^2 + 4 (d = 4)
    b = 2 * torch.randn(4000, 4, generator=g) + torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(1.0 + 4.0, abs=0.25)


def test_sliced_wasserstein_of_shifted_gaussians():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(20000, 2, generator=g)
    shift = torch.tensor([3.0, 4.0])
    b = torch.randn(20000, 2, generator=g) + shift
    # E_theta[(theta . shift)^2] = |shift|^2 / d  ->  sqrt(25 / 2)
    assert sliced_wasserstein(a, b) == pytest.approx(math.sqrt(25 / 2), rel=0.05)
    assert sliced_wasserstein(a, a[torch.randperm(20000, generator=g)]) == pytest.approx(0.0, abs=1e-9)


def test_mmd_precision_recall_and_modes():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    far = b + 10
    assert abs(mmd_rbf(a, b)) < 0.02 and mmd_rbf(a, far) > 1.0
    pr = precision_recall(a, b)
    assert pr["precision"] > 0.8 and pr["recall"] > 0.8
    half = a[a[:, 0] > 0]  # generated samples covering half of the real distribution
    pr = precision_recall(a, half)
    assert pr["precision"] > 0.9 and pr["recall"] < 0.7
    assert precision_recall(a, far) == {"precision": 0.0, "recall": 0.0}
    bundle = potstill.load_dataset({"name": "toy2d", "modes": 8, "std": 0.05})
    centers = torch.tensor(bundle.info["centers"])
    assert mode_stats(bundle.test.x, centers, 0.05) == {"mode_coverage": 1.0, "high_quality": pytest.approx(0.99, abs=0.01)}
    only_two = bundle.test.x[bundle.test.y < 2]
    assert mode_stats(only_two, centers, 0.05)["mode_coverage"] == 0.25


def test_frechet_distance_matches_the_matrix_square_root_formula():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 12))
    b = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12)) * 0.5 + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    want = (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2)
            - 2 * np.trace(linalg.sqrtm(s1 @ s2).real))
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-9)
