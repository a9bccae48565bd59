"""ViT + masked pretraining distillation: MAE baseline, K18 DMAE, K1 Hybrid Distill."""
import copy
import itertools
import math

import pytest
import torch

import potstill
from potstill.core.teacher import Teacher
from potstill.losses.features import masked_patch_mse, normalized_l1
from potstill.methods.kd.dmae import DMAE, DMAEConfig
from potstill.methods.kd.hybrid import (HybridConfig, HybridDistill, cls_attention, keep_most_attended, keep_ratio,
                                        relation_loss, restrict_attention)
from potstill.methods.kd.mae import MAE, MAEConfig, mae_step
from potstill.models import build_model
from potstill.models.vit import random_keep

SHAPE = (1, 8, 8)                 # digits; patch 2 -> 16 patches
TINY = {"name": "vit", "patch": 2, "width": 16, "depth": 2, "heads": 2}
BIG = {"name": "vit", "patch": 2, "width": 24, "depth": 6, "heads": 2}


def vit(spec=TINY, seed=0):
    torch.manual_seed(seed)
    return build_model(spec, SHAPE, 10)


def test_patchify_round_trip_and_per_token_embedding():
    m = vit()
    x = torch.randn(3, *SHAPE)
    assert torch.equal(m.unpatchify(m.patchify(x)), x)
    assert m.patchify(x)[0, 1].tolist() == x[0, 0, 0:2, 2:4].reshape(-1).tolist()     # row-major patches
    keep, _ = random_keep(3, m.num_patches, 0.75)
    full = m.embed_tokens(x)
    sub = m.embed_tokens(x, keep)
    assert torch.allclose(sub[:, 1:], torch.gather(full[:, 1:], 1, keep[..., None].expand(-1, -1, 16)))
    assert torch.allclose(sub[:, 0], full[:, 0])


def test_keep_idx_equals_the_full_forward_restricted_when_tokens_do_not_mix():
    m = vit({**TINY, "depth": 3})
    with torch.no_grad():           # attention output zeroed: every block acts on each token alone
        for blk in m.blocks:
            blk.attn.proj.weight.zero_()
            blk.attn.proj.bias.zero_()
    x = torch.randn(4, *SHAPE)
    keep, _ = random_keep(4, m.num_patches, 0.5)
    idx = torch.cat([torch.zeros(4, 1, dtype=torch.long), keep + 1], 1)
    full, sub = m.forward_features(x), m.forward_features(x, keep)
    assert torch.allclose(sub.tokens, torch.gather(full.tokens, 1, idx[..., None].expand(-1, -1, 16)), atol=1e-6)


def test_attention_maps_are_row_distributions_and_match_the_fused_kernel():
    m = vit()
    x = torch.randn(2, *SHAPE)
    a, b = m.forward_features(x, attn=True), m.forward_features(x)
    assert torch.allclose(a.tokens, b.tokens, atol=1e-5)
    assert a.attn[0].shape == (2, 2, 17, 17) and torch.allclose(a.attn[1].sum(-1), torch.ones(2, 2, 17))
    assert m.forward_features(x, attn=[1]).attn[0] is None


def test_mae_loss_counts_masked_patches_only():
    patches, pred = torch.randn(2, 16, 4), torch.randn(2, 16, 4)
    _, mask = random_keep(2, 16, 0.75)
    base = masked_patch_mse(pred, patches, mask)
    moved = pred.clone()
    moved[~mask] += 5.0                                # change only what the encoder saw
    assert torch.equal(masked_patch_mse(moved, patches, mask), base)
    moved[mask] += 1.0
    assert masked_patch_mse(moved, patches, mask) != base
    # normalised-pixel target: a perfect prediction of the per-patch-standardised pixels scores ~0
    t = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    assert masked_patch_mse(t, patches, mask) < 1e-10


def test_mask_ratio_098_keeps_one_token_and_trains():
    keep, mask = random_keep(5, 16, 0.98)
    assert keep.shape == (5, 1) and mask.sum(1).tolist() == [15] * 5
    method = MAE(MAEConfig(mask_ratio=0.98), vit())
    loss, feats, keep = mae_step(method.student, method.decoder, torch.randn(4, *SHAPE), 0.98, True)
    assert keep.shape[1] == 1 and feats.tokens.shape[1] == 2 and math.isfinite(loss.item())
    loss.backward()
    assert method.student.patch_embed.weight.grad.abs().sum() > 0


def test_dmae_teacher_runs_only_the_tapped_blocks_on_the_visible_tokens():
    teacher = Teacher(vit(BIG, seed=1))
    calls = []
    for i, blk in enumerate(teacher.model.blocks):
        blk.register_forward_hook(lambda mod, inp, out, i=i: calls.append((i, inp[0].shape[1])))
    method = DMAE(DMAEConfig(mask_ratio=0.75, teacher_block=2, student_block=1), vit(), teacher)
    out = method.loss({"x": torch.randn(8, *SHAPE), "y": torch.zeros(8, dtype=torch.long)}, 0)
    assert calls == [(0, 1 + 4), (1, 1 + 4), (2, 1 + 4)]           # blocks 0..2 only, CLS + 4 visible patches
    out["student"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert method.projector.weight.grad is not None and method.student.blocks[0].mlp[0].weight.grad is not None
    assert method.student.blocks[1].mlp[0].weight.grad is not None
    frac = method.evaluate(potstill.data.ArrayData(torch.randn(4, *SHAPE), torch.zeros(4, dtype=torch.long)))
    assert 0 < frac["teacher_cost_fraction"] < 0.5 * 0.5           # half the blocks, under a third of the tokens
    # default tap: three quarters of the depth, as the paper's block 9 of 12 / 18 of 24
    assert (DMAE(DMAEConfig(), vit(), teacher).t_block, DMAE(DMAEConfig(), vit(), teacher).s_block) == (4, 1)


def test_normalized_l1_ignores_scale_and_is_zero_for_equal_directions():
    a = torch.randn(3, 5, 8)
    assert float(normalized_l1(3.0 * a, a)) < 1e-6 and float(normalized_l1(-a, a)) > 0


def test_relation_loss_zero_for_equal_maps_and_restriction_renormalises():
    a = torch.softmax(torch.randn(2, 3, 5, 5), -1)
    assert float(relation_loss(a, a.clone())) == 0.0 and float(relation_loss(a, a.flip(-1))) > 0
    assert relation_loss(a, a[:, :1].expand(-1, 3, -1, -1)).item() > 0
    keep = torch.tensor([[0, 2], [1, 3]])
    r = restrict_attention(a, keep)
    assert r.shape == (2, 3, 3, 3) and torch.allclose(r.sum(-1), torch.ones(2, 3, 3))
    idx = [0, 1, 3]                                     # CLS + patches 0 and 2 of the first image
    sub = a[0][:, idx][:, :, idx]
    assert torch.allclose(r[0], sub / sub.sum(-1, keepdim=True))


def hybrid(student, t_c=None, t_m=None, **kw):
    return HybridDistill(HybridConfig(**kw), student, Teacher(t_c) if t_c is not None else None,
                         Teacher(t_m) if t_m is not None else None)


def test_hybrid_relations_zero_when_attention_equal_and_gradients_reach_the_student_only():
    x = torch.randn(6, *SHAPE)
    batch = {"x": x, "y": torch.full((6,), -1)}
    s = vit()
    # T_m = a frozen copy of the student: equal attention maps -> zero relation loss
    for kw in ({"keep_start": 1.0, "keep_end": 1.0, "mim_input": "full", "mask_by": "mim"},   # all tokens kept
               {"keep_start": 0.5, "keep_end": 0.5, "mim_input": "kept", "mask_by": "random"}):
        m = hybrid(s, None, copy.deepcopy(s), feature_weight=0.0, relation_layers=[0, 1], **kw)
        out = m.loss(batch, 0)
        assert float(out["log/relation"]) < 1e-10
    # both teachers: gradients reach the student (and its projector), never a teacher
    t_c, t_m = vit(BIG, seed=1), vit(BIG, seed=2)
    m = hybrid(vit(), t_c, t_m, keep_start=0.5, keep_end=0.5)
    out = m.loss(batch, 0)
    assert float(out["log/relation"]) > 0 and float(out["log/feature"]) > 0
    out["student"].backward()
    assert all(p.grad is None and not p.requires_grad for p in [*t_c.parameters(), *t_m.parameters()])
    assert m.student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0 and m.projector[0].weight.grad is not None
    assert not any(k.startswith(("teacher.", "mim_teacher.")) for k in m.trainable_state())


def test_progressive_masking_is_non_increasing_and_drops_the_least_attended_tokens():
    ratios = [keep_ratio(t, 100, 1.0, 0.25) for t in range(120)]
    assert ratios[0] == 1.0 and ratios[-1] == 0.25 and all(a >= b for a, b in itertools.pairwise(ratios))
    m = hybrid(vit(), vit(BIG, seed=1), None, relation_weight=0.0, keep_start=1.0, keep_end=0.25, schedule_steps=100)
    kept = [m.kept_count(t) for t in range(120)]
    assert kept[0] == 16 and kept[-1] == 4 and all(a >= b for a, b in itertools.pairwise(kept))
    # hand-made attention: CLS attends most to patches 3, 7, 11 (and 0 least)
    attn = torch.zeros(1, 2, 17, 17)
    attn[0, :, 0, 1:] = torch.arange(16.0) / 100
    attn[0, :, 0, 1 + torch.tensor([3, 7, 11])] = 1.0
    assert keep_most_attended(cls_attention(attn), 3).tolist() == [[3, 7, 11]]
    assert keep_most_attended(cls_attention(attn), 5).tolist() == [[3, 7, 11, 14, 15]]


def test_hybrid_masks_what_the_teacher_ignores(monkeypatch):
    """Inside the method: the student sees exactly the patches the T_c CLS row ranks highest."""
    t_c = vit(BIG, seed=1)
    m = hybrid(vit(), t_c, None, relation_weight=0.0, keep_start=0.25, keep_end=0.25)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        want = keep_most_attended(cls_attention(t_c.forward_features(x, attn=True).attn[-1]), 4)
    seen = {}
    orig = m.student.forward_features

    def spy(x, keep_idx=None, **kw):
        seen["keep"] = keep_idx
        return orig(x, keep_idx, **kw)

    monkeypatch.setattr(m.student, "forward_features", spy)
    m.loss({"x": x, "y": torch.full((2,), -1)}, 0)
    assert torch.equal(seen["keep"], want)


def test_hybrid_teacher_cache_gives_the_same_loss(digits):
    m = hybrid(vit(), vit(BIG, seed=1), vit(BIG, seed=2), keep_start=0.5, keep_end=0.5)
    data = m.train_data(digits)
    assert m._cache["tc"].shape == (len(data), 17, 24) and m._cache["tm"].shape == (len(data), 1, 2, 17, 17)
    idx = torch.tensor([3, 1, 4, 1, 5])
    cached = m.loss({"x": data.x[idx], "y": data.y[idx], "index": idx}, 0)
    fresh = m.loss({"x": data.x[idx], "y": data.y[idx]}, 0)
    for key in ("student", "log/feature", "log/relation"):
        assert torch.allclose(cached[key], fresh[key], atol=1e-5), key


@pytest.mark.parametrize("name", ["mae", "dmae", "hybrid_distill"])
def test_methods_train_and_round_trip(name, digits, tmp_path, tiny_trainer):
    from potstill.core.method import BuildContext

    torch.manual_seed(0)

    def make():
        torch.manual_seed(0)
        s, t = vit(), vit(BIG, seed=1)
        if name == "mae":
            return MAE(MAEConfig(), s)
        if name == "dmae":
            return DMAE.build(DMAEConfig(), BuildContext(data=digits, student_module=s, teacher_module=t))
        return HybridDistill(HybridConfig(keep_end=0.5), s, Teacher(t), Teacher(vit(BIG, seed=2)))

    method = make()
    before = [p.detach().clone() for p in method.param_groups()["student"]]
    res = potstill.Trainer(tiny_trainer(), tmp_path).fit(method, method.train_data(digits), digits.val)
    assert any(not torch.equal(a, b) for a, b in zip(before, method.param_groups()["student"]))
    assert 0.0 <= res["val"]["acc"] <= 1.0 and res["val"]["train_student_fwd_gflop"] > 0
    fresh = make()
    potstill.Trainer(tiny_trainer(), tmp_path).fit(fresh, fresh.train_data(digits), resume=True)
    a, b = method.trainable_state(), fresh.trainable_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith(("teacher.", "mim_teacher.")) for k in a)


def test_pretrained_encoder_fine_tunes_from_its_export(tmp_path):
    common = {"data": {"name": "digits"}, "student": {**TINY},
              "trainer": {"steps": 4, "batch_size": 32, "progress": False, "eval_every": 0, "threads": 1}}
    s = potstill.core.run.run(potstill.resolve({"method": {"name": "mae"}, **common}), tmp_path / "pre")
    assert "knn_acc" in s["val"]
    init = str(tmp_path / "pre/export/model.safetensors")
    cfg = potstill.resolve({"method": {"name": "supervised", "student_init": init}, **common})
    method, _ = potstill.core.run.build(cfg)
    pre = potstill.load_model(tmp_path / "pre")
    assert all(torch.equal(a, b) for a, b in zip(pre.state_dict().values(), method.student.state_dict().values()))
    with pytest.raises(potstill.core.config.ConfigError, match="student_init"):
        potstill.core.run.build(potstill.resolve({"method": {"name": "supervised", "student_init": str(tmp_path / "no")},
                                                  **common}))
