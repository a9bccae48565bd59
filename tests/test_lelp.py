"""K10 LELP: null-space projection, class directions, pseudo-labels refine the classes, end to end."""
import pytest
import torch

import potstill
from potstill.methods.kd.lelp import class_directions, mix_directions, null_space_projector


def test_null_space_projector_removes_what_the_classifier_reads():
    w = torch.randn(3, 8)
    p = null_space_projector(w)
    e = torch.randn(20, 8)
    assert torch.allclose((e @ p) @ w.T, torch.zeros(20, 3), atol=1e-5)      # logits see nothing of ē
    assert torch.allclose(p @ p, p, atol=1e-5)                               # a projector


def test_class_directions_find_the_main_axis_of_each_class():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 3, generator=g) * torch.tensor([5.0, 0.1, 0.1])     # class 0 spreads along x
    b = torch.randn(200, 3, generator=g) * torch.tensor([0.1, 0.1, 5.0]) + 10  # class 1 along z
    mu, v, sd = class_directions(torch.cat([a, b]), torch.tensor([0] * 200 + [1] * 200), 2, 1)
    assert abs(v[0, 0, 0]) > 0.99 and abs(v[1, 0, 2]) > 0.99
    assert sd[0, 0] == pytest.approx(5.0, rel=0.15) and torch.allclose(mu[1], torch.tensor([10.0, 10, 10]), atol=1.0)


def test_mixed_directions_span_the_same_subspace_with_equal_expected_variance():
    g = torch.Generator().manual_seed(1)
    v = torch.linalg.qr(torch.randn(2, 6, 3, generator=g))[0].transpose(1, 2)       # (C=2, S=3, d=6), orthonormal rows
    sd = torch.tensor([[3.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    u, sbar = mix_directions(v, sd, seed=0)
    assert torch.allclose(u @ u.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-5)   # still orthonormal
    assert torch.allclose(u.transpose(1, 2) @ u, v.transpose(1, 2) @ v, atol=1e-5)         # same subspace
    assert torch.allclose(sbar, torch.tensor([(14 / 3) ** 0.5, 1.0]))                       # √(mean eigenvalue)
    # the variance a mixed direction carries, Σ_j Q_sj² σ_j², averages to the mean eigenvalue over draws
    var = torch.stack([torch.einsum("sj,j->s", (mix_directions(v[:1], sd[:1], s)[0][0] @ v[0].T) ** 2, sd[0] ** 2)
                       for s in range(400)])
    assert var.mean().item() == pytest.approx(14 / 3, rel=0.05) and var.std().item() > 0.5


def test_lelp_pseudo_labels_refine_the_true_classes_and_a_student_learns(tmp_path):
    common = {"data": {"name": "digits"}, "trainer": {"steps": 80, "batch_size": 64, "progress": False,
                                                      "optim": {"default": {"name": "adam", "lr": 3e-3}}}}
    net = {"name": "convnet", "width": 16, "depth": 2}
    potstill.core.run.run(potstill.resolve({"method": {"name": "supervised"}, "student": net, **common}), tmp_path / "t")
    cfg = potstill.resolve({"method": {"name": "lelp", "k": 3}, "student": {**net, "width": 8},
                            "teacher": {"model": net, "checkpoint": str(tmp_path / "t/export/model.safetensors")}, **common})
    method, bundle = potstill.core.run.build(cfg)
    x, y = bundle.train.x[:300], bundle.train.y[:300]
    pl = method.pseudo_labels(x, y)
    assert torch.equal(pl // 3, y)                         # every pseudo-subclass lies inside one true class
    assert len(torch.unique(pl)) > 10                      # ... and classes do split
    q = method.teacher_targets(x[:32]).view(32, 10, 3)     # Eq. 5: the subclasses share out their class's mass
    with torch.no_grad():
        p = torch.softmax(method.teacher.model(x[:32]) / method.cfg.temperature, -1)
    assert torch.allclose(q.sum(2), p, atol=1e-5) and (q.std(2) > 1e-3).any()
    assert method.cacheable_teacher                        # convnet: the embedding is the 'features' tap
    method.teacher.attach_cache(bundle.train.x)            # cached per example, the same targets
    idx = torch.arange(32)
    assert torch.allclose(method.teacher_targets(bundle.train.x[:32], idx), method.teacher_targets(x[:32]), atol=1e-5)
    s = potstill.core.run.run(cfg, tmp_path / "s")
    assert s["test"]["acc"] > 0.7
    model = potstill.load_model(tmp_path / "s")            # the exported C·k head rebuilds and sums subclasses
    assert model(x[:4]).shape == (4, 10)
