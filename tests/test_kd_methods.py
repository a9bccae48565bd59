"""Mechanism tests for B1 (Hinton KD), B2 (FitNets) and K7 (SSLD label-free)."""
import pytest
import torch
import torch.nn.functional as F

import potstill
from potstill.methods.kd.fitnets import FitNets, FitNetsConfig
from potstill.methods.kd.hinton import HintonConfig, HintonKD
from potstill.methods.kd.label_free import LabelFree, LabelFreeConfig, mine_by_teacher
from potstill.models import build_model


def nets(in_shape=(1, 8, 8), sw=8, tw=16):
    torch.manual_seed(0)
    s = build_model({"name": "convnet", "width": sw, "depth": 2}, in_shape, 10)
    t = build_model({"name": "convnet", "width": tw, "depth": 2}, in_shape, 10)
    return s, potstill.Teacher(t)


def batch(n=8):
    torch.manual_seed(1)
    return {"x": torch.randn(n, 1, 8, 8), "y": torch.randint(0, 10, (n,))}


def test_hinton_mixes_soft_and_hard_terms_exactly():
    s, t = nets()
    b = batch()
    m = HintonKD(HintonConfig(temperature=2.0, alpha=0.3), s, t)
    loss = m.loss(b, 0)["student"].detach()
    zs, zt = s(b["x"]), t(b["x"]).logits
    soft = 4.0 * F.kl_div(F.log_softmax(zs / 2, -1), F.log_softmax(zt / 2, -1), log_target=True, reduction="batchmean")
    hard = F.cross_entropy(zs, b["y"])
    assert float(loss) == pytest.approx(float((0.3 * soft + 0.7 * hard).detach()), rel=1e-5)


def test_hinton_alpha_one_ignores_labels_and_unlabeled_rows_skip_ce():
    s, t = nets()
    b = batch()
    m = HintonKD(HintonConfig(alpha=1.0), s, t)
    shuffled = {**b, "y": b["y"].flip(0)}
    with torch.no_grad():
        assert float(m.loss(b, 0)["student"]) == pytest.approx(float(m.loss(shuffled, 0)["student"]))
    m.cfg = HintonConfig(alpha=0.5)
    unl = {**b, "y": torch.full_like(b["y"], -1)}
    assert torch.isfinite(m.loss(unl, 0)["student"])


def test_fitnets_projects_mismatched_widths_and_hint_stage_trains_only_the_trunk():
    s, t0 = nets(sw=8, tw=16)
    t = potstill.Teacher(t0.model, taps=["features"])
    m = FitNets(FitNetsConfig(hint_stage_steps=10), s, t, (1, 8, 8))
    assert isinstance(m.projector, torch.nn.Conv2d) and (m.projector.in_channels, m.projector.out_channels) == (8, 16)
    losses = m.loss(batch(), step=0)
    losses["student"].backward(inputs=list(s.parameters()))
    assert s.classifier.weight.grad is None or s.classifier.weight.grad.abs().sum() == 0  # stage 1: hints only
    assert s.features[0].weight.grad.abs().sum() > 0
    # stage 2: classifier is trained too, and the projector's loss is exactly the weighted hint
    s.zero_grad()
    losses = m.loss(batch(), step=10)
    losses["student"].backward(inputs=list(s.parameters()))
    assert s.classifier.weight.grad.abs().sum() > 0
    assert float(losses["projector"].detach()) == pytest.approx(float(m.cfg.hint_weight * losses["log/hint"]))


def test_fitnets_pools_a_larger_student_map_to_the_teachers():
    torch.manual_seed(0)
    s = build_model({"name": "convnet", "width": 4, "depth": 1}, (1, 8, 8), 10)      # features: 4 x 4 x 4
    t = build_model({"name": "convnet", "width": 6, "depth": 2}, (1, 8, 8), 10)      # features: 6 x 2 x 2
    m = FitNets(FitNetsConfig(), s, potstill.Teacher(t, taps=["features"]), (1, 8, 8))
    assert torch.isfinite(m.loss(batch(), 0)["projector"])


def test_label_free_never_reads_labels(digits, tiny_trainer):
    """Permuting every training label leaves the trained student bit-identical."""
    finals = []
    for perm in (False, True):
        s, t = nets()
        m = LabelFree(LabelFreeConfig(), s, t)
        bundle = digits
        if perm:
            bundle = potstill.DataBundle("d", potstill.ArrayData(digits.train.x, digits.train.y.flip(0)),
                                         digits.val, digits.test, 10, digits.unlabeled)
        pool = m.train_data(bundle)
        assert (pool.y == -1).all()
        potstill.Trainer(tiny_trainer(steps=5)).fit(m, pool)
        finals.append([p.detach().clone() for p in s.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*finals))


def test_label_free_adds_and_mines_unlabeled_images():
    s, t = nets()
    x = torch.randn(200, 1, 8, 8)
    keep = mine_by_teacher(t, x, per_class=3)
    probs = t(x).logits.softmax(-1)
    conf, pred = probs.max(-1)
    for c in pred[keep].unique():
        chosen = keep[pred[keep] == c]
        others = torch.tensor([i for i in torch.nonzero(pred == c).squeeze(1).tolist() if i not in chosen.tolist()])
        assert len(chosen) <= 3
        if len(others):
            assert conf[chosen].min() >= conf[others].max()
    bundle = potstill.DataBundle("d", potstill.ArrayData(x[:50], torch.zeros(50, dtype=torch.long)), None, None, 10,
                                 potstill.ArrayData(x[50:], torch.full((150,), -1)))
    assert len(LabelFree(LabelFreeConfig(), s, t).train_data(bundle)) == 200
    assert len(LabelFree(LabelFreeConfig(use_unlabeled=False), s, t).train_data(bundle)) == 50
    mined = LabelFree(LabelFreeConfig(select_per_class=2), s, t).train_data(bundle)
    assert 50 < len(mined) <= 50 + 2 * 10


def test_label_free_js_gradient_pulls_student_toward_teacher():
    s, t = nets()
    m = LabelFree(LabelFreeConfig(), s, t)
    b = batch(64)
    opt = torch.optim.SGD(s.parameters(), lr=0.5)
    first = float(m.loss(b, 0)["student"].detach())
    for _ in range(20):
        opt.zero_grad()
        m.loss(b, 0)["student"].backward()
        opt.step()
    assert float(m.loss(b, 0)["student"].detach()) < 0.5 * first
