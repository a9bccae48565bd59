"""Hybrid Distillation: Connecting Masked Autoencoders with Contrastive Learners — Shi, Zhang, Wang, Li,
Dai, Zou, Xiong & Tian, ICLR 2024, arXiv 2306.15876 (catalog K1).

Two frozen teachers guide one ViT student, without labels:

* T_c, a supervised or contrastive (CL) teacher: its *final* token features carry discrimination;
  the student's final tokens imitate them through a projection head h;
* T_m, a masked-image-modelling (MIM) teacher: its *token relations* (attention maps) at
  intermediate layers carry diversity (MIM attention stays local and varied across layers, while
  CL/supervised attention collapses onto a few global tokens); the student's attention maps at
  the chosen layers imitate them.

With M the set of kept tokens (CLS + K patches), A^l = softmax(Q Kᵀ / √d) of block l and D the
smooth-L1 distance:

    L = α · D( T_c(x) ⊙ M ,  h(S(M ⊙ x)) )  +  β · Σ_{l ∈ I} D( A^{g(l)}_{T_m} ⊙ M ,  A^l_S(M ⊙ x) )

``feature_weight`` α and ``relation_weight`` β switch the terms: α = 0 is the "T_m relations only"
single-teacher variant, β = 0 the "T_c features only" one (plain feature distillation), same code.

Progressive redundant-token masking: the kept ratio ρ_t falls linearly from ``keep_start`` to
``keep_end`` over training (``schedule_steps``; 0 = the run's ``trainer.steps``); at step t each
image keeps its K_t = max(1, round(N·ρ_t)) patches that the teacher attends to most — the CLS
row of the teacher's last-run block, averaged over heads — and drops the rest as redundant. The
student runs on the kept tokens only, so its cost falls over training.

Our choices where the paper is not available to us (unverified):

* teachers see the whole image; their outputs are restricted to the kept tokens (⊙M). For the
  attention maps that means the kept rows and columns, each row renormalised to sum to one so it
  is a distribution over the same keys as the student's (``mim_input: kept`` instead runs T_m on
  the kept tokens only, like DMAE — cheaper);
* which teacher's attention ranks the tokens (``mask_by``: contrastive | mim | random);
* I defaults to every student block but the last (the last one's output is aligned to T_c),
  teacher layer g(l) at the same relative depth; per-head maps when the head counts match, else
  head-averaged maps;
* D: smooth-L1 (β = 1) averaged over elements; attention maps are multiplied by the number of
  keys first, so a uniform row is all ones and the term is on the scale of the feature term;
* T_c's target tokens pass through a LayerNorm without affine parameters (feature whitening, as
  in feature-distillation work on CL teachers); h is Linear-GELU-Linear.

The whole-image teacher outputs (T_c's tokens and ranking attention, T_m's maps in ``full`` mode)
do not depend on the mask, so by default (``cache_teachers``) they are computed once per training
row when training starts and read by row index afterwards; the counted teacher cost is that one
pass (``mim_input: kept`` runs T_m every step).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.config import ConfigError
from ...core.registry import METHODS
from ...core.teacher import TeacherConfig, load_teacher
from ...models.vit import mask_from_keep, model_flops, num_kept
from .dmae import make_head
from .mae import MaskedPretraining, require_vit


@dataclass
class HybridConfig:
    feature_weight: float = 1.0                 # α: T_c final features (0: "T_m relations only")
    relation_weight: float = 1.0                # β: T_m attention relations (0: "T_c features only")
    relation_layers: list[int] = field(default_factory=list)           # student blocks; [] = all but the last
    teacher_relation_layers: list[int] = field(default_factory=list)   # T_m blocks; [] = same relative depth
    keep_start: float = 1.0                     # kept-token ratio at the first step ...
    keep_end: float = 0.5                       # ... falling linearly to this
    schedule_steps: int = 0                     # 0: over the run's trainer.steps
    mask_by: Literal["contrastive", "mim", "random"] = "contrastive"
    mim_input: Literal["full", "kept"] = "full"
    projector: Literal["linear", "mlp"] = "mlp"
    whiten_target: bool = True
    smooth_l1_beta: float = 1.0
    cache_teachers: bool = True                 # whole-image teacher outputs computed once per training row
    mim_teacher: TeacherConfig = field(default_factory=TeacherConfig)   # {model: {...}, checkpoint: ...}
    unlabeled: bool = False
    knn_k: int = 20

    def __post_init__(self):
        if self.feature_weight < 0 or self.relation_weight < 0 or self.feature_weight + self.relation_weight == 0:
            raise ValueError("feature_weight and relation_weight must be >= 0 and not both 0")
        if not 0 < self.keep_end <= self.keep_start <= 1:
            raise ValueError("need 0 < keep_end <= keep_start <= 1 (the kept ratio only falls)")
        if self.schedule_steps < 0 or self.smooth_l1_beta <= 0 or self.knn_k < 1:
            raise ValueError("schedule_steps >= 0, smooth_l1_beta > 0, knn_k >= 1")
        if self.mask_by == "mim" and self.mim_input == "kept":
            raise ValueError("mask_by: mim needs T_m's attention on the whole image (mim_input: full)")
        if self.teacher_relation_layers and len(self.teacher_relation_layers) != len(self.relation_layers):
            raise ValueError("teacher_relation_layers needs one entry per relation_layers entry")


def keep_ratio(step: int, total: int, start: float, end: float) -> float:
    """Linear fall from ``start`` (step 0) to ``end`` (step ≥ total − 1); never rises."""
    if total <= 1:
        return end
    return start + (end - start) * min(1.0, step / (total - 1))


def keep_most_attended(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, k), ascending, of the k patches with the highest attention score; ``scores``: (B, N)."""
    return scores.topk(k, dim=1).indices.sort(dim=1).values


def cls_attention(attn: torch.Tensor) -> torch.Tensor:
    """How much CLS attends to each patch (heads averaged): (B, H, 1+N, 1+N) -> (B, N)."""
    return attn[:, :, 0, 1:].mean(1)


def restrict_attention(attn: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
    """A ⊙ M: keep the rows and columns of CLS + the kept patches, renormalise every row to sum to one."""
    b, h, _, _ = attn.shape
    idx = torch.cat([torch.zeros_like(keep_idx[:, :1]), keep_idx + 1], dim=1)          # token ids incl. CLS
    t = idx.shape[1]
    rows = torch.gather(attn, 2, idx[:, None, :, None].expand(b, h, t, attn.shape[3]))
    sub = torch.gather(rows, 3, idx[:, None, None, :].expand(b, h, t, t))
    return sub / sub.sum(-1, keepdim=True).clamp_min(1e-12)


def relation_loss(student_attn: torch.Tensor, teacher_attn: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Smooth-L1 between attention maps over the same tokens, both scaled by the number of keys.

    Per-head when the head counts match, else between head-averaged maps. Zero iff the maps agree."""
    if student_attn.shape[1] != teacher_attn.shape[1]:
        student_attn, teacher_attn = student_attn.mean(1, keepdim=True), teacher_attn.mean(1, keepdim=True)
    if student_attn.shape != teacher_attn.shape:
        raise ValueError(f"relation_loss: attention maps {tuple(student_attn.shape)} vs {tuple(teacher_attn.shape)}")
    t = student_attn.shape[-1]
    return F.smooth_l1_loss(student_attn.float() * t, teacher_attn.float() * t, beta=beta)


def same_depth(layers: list[int], depth_s: int, depth_t: int) -> list[int]:
    """Teacher block at the same relative depth as each student block: round((l + 1)·D_t / D_s) − 1."""
    return [min(depth_t - 1, max(0, round((l + 1) * depth_t / depth_s) - 1)) for l in layers]


@METHODS.register("hybrid_distill")
class HybridDistill(MaskedPretraining):
    """Hybrid Distill: T_m attention relations + T_c final features, progressive redundant-token masking."""

    Config = HybridConfig
    name = "hybrid_distill"
    catalog_ids = ("K1",)
    paper = "Hybrid Distillation: Connecting Masked Autoencoders with Contrastive Learners"
    arxiv = "2306.15876"

    def __init__(self, cfg: HybridConfig, student: nn.Module, teacher=None, mim_teacher=None):
        super().__init__(cfg, student)
        s = self.student
        need_c = cfg.feature_weight > 0 or cfg.mask_by == "contrastive"
        need_m = cfg.relation_weight > 0 or cfg.mask_by == "mim"
        # T_c, T_m (frozen Teacher wrappers); a teacher the chosen terms do not read is not kept
        self.teacher, self.mim_teacher = (teacher if need_c else None), (mim_teacher if need_m else None)
        teacher, mim_teacher = self.teacher, self.mim_teacher
        if need_c and teacher is None:
            raise ConfigError("teacher: Hybrid Distill needs the supervised/contrastive teacher T_c here "
                              "(or set method.feature_weight: 0 and method.mask_by: mim or random)")
        if need_m and mim_teacher is None:
            raise ConfigError("method.mim_teacher: Hybrid Distill needs the MIM teacher T_m "
                              "(or set method.relation_weight: 0 and mask_by: contrastive or random)")
        for t, key in ((teacher, "teacher.model"), (mim_teacher, "method.mim_teacher.model")):
            if t is not None and require_vit(t.model, key).num_patches != s.num_patches:
                raise ConfigError(f"{key}: the teacher cuts {t.model.num_patches} patches, the student "
                                  f"{s.num_patches}; give them the same patch size")
        self.s_layers = list(cfg.relation_layers) or list(range(s.cfg.depth - 1)) or [0]
        if any(not 0 <= l < s.cfg.depth for l in self.s_layers):
            raise ConfigError(f"method.relation_layers: {self.s_layers} out of range for student depth {s.cfg.depth}")
        self.t_layers = []
        if mim_teacher is not None:
            dt = mim_teacher.model.cfg.depth
            self.t_layers = list(cfg.teacher_relation_layers) or same_depth(self.s_layers, s.cfg.depth, dt)
            if any(not 0 <= l < dt for l in self.t_layers):
                raise ConfigError(f"method.teacher_relation_layers: {self.t_layers} out of range for T_m depth {dt}")
        self.projector = make_head(s.cfg.width, teacher.model.cfg.width, cfg.projector) \
            if (teacher is not None and cfg.feature_weight > 0) else None
        self._trainer_steps = 0
        self._cache: dict[str, torch.Tensor] | None = None

    @classmethod
    def build(cls, cfg, ctx):
        need_c = cfg.feature_weight > 0 or cfg.mask_by == "contrastive"
        need_m = cfg.relation_weight > 0 or cfg.mask_by == "mim"
        teacher = ctx.teacher() if need_c else None
        mim = None
        if need_m:
            if cfg.mim_teacher.model is None:
                raise ConfigError("method.mim_teacher: give the MIM teacher, e.g. {model: {name: vit, ...}, "
                                  "checkpoint: runs/vit_mae_teacher_fmnist/export/model.safetensors}")
            try:
                mim = load_teacher(cfg.mim_teacher, ctx.data, key="method.mim_teacher")
            except ConfigError as e:      # load_teacher names the keys of the recipe's teacher section
                msg = str(e)
                raise ConfigError(msg.replace("teacher.", "method.mim_teacher.", 1) if msg.startswith("teacher.")
                                  else f"method.mim_teacher: {msg}") from None
        return cls(cfg, ctx.student(), teacher, mim)

    def heads(self):
        return [self.projector] if self.projector is not None else []

    def trainable_state(self):
        return {k: v for k, v in super().trainable_state().items() if not k.startswith("mim_teacher.")}

    def train_step(self, batch, step, trainer):
        self._trainer_steps = trainer.cfg.steps      # the masking schedule spans the run
        return trainer.default_step(batch, step)

    # --- masking -------------------------------------------------------------------------------------
    def kept_count(self, step: int) -> int:
        total = self.cfg.schedule_steps or self._trainer_steps
        return num_kept(self.student.num_patches, 1.0 - keep_ratio(step, total, self.cfg.keep_start, self.cfg.keep_end))

    # --- teachers on the whole image (cacheable: no randomness in their input) ---------------------------
    def _mim_upto(self) -> int:
        return max(self.t_layers) + 1 if self.cfg.relation_weight > 0 else self.mim_teacher.model.cfg.depth

    def _whole_image_flops(self) -> tuple[int, int]:
        """(FLOPs of one :meth:`whole_image_pass` per example, FLOPs of every teacher run whole on it)."""
        n, run, full = self.student.num_patches, 0, 0
        if self.teacher is not None:
            run += model_flops(self.teacher.model, 1 + n)
            full += model_flops(self.teacher.model, 1 + n)
        if self.mim_teacher is not None:
            if self.cfg.mim_input == "full":
                run += model_flops(self.mim_teacher.model, 1 + n, self._mim_upto())
            full += model_flops(self.mim_teacher.model, 1 + n)
        return run, full

    @torch.no_grad()
    def whole_image_pass(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``tc``: T_c's final tokens (B, 1+N, d); ``tm``: T_m's attention maps at the relation layers
        (B, L, H, 1+N, 1+N) (``mim_input: full``); ``score``: the CLS attention that ranks patches (B, N)."""
        cfg, out = self.cfg, {}
        if self.teacher is not None:
            tm = self.teacher.model
            f = tm.forward_features(x, attn=[tm.cfg.depth - 1] if cfg.mask_by == "contrastive" else ())
            if cfg.feature_weight > 0:
                out["tc"] = f.tokens
            if cfg.mask_by == "contrastive":
                out["score"] = cls_attention(f.attn[-1])
        if self.mim_teacher is not None and cfg.mim_input == "full":
            upto = self._mim_upto()
            want = (set(self.t_layers) if cfg.relation_weight > 0 else set()) | ({upto - 1} if cfg.mask_by == "mim" else set())
            f = self.mim_teacher.model.forward_features(x, upto=upto, attn=want)
            if cfg.relation_weight > 0:
                out["tm"] = torch.stack([f.attn[l] for l in self.t_layers], 1)
            if cfg.mask_by == "mim":
                out["score"] = cls_attention(f.attn[upto - 1])
        return out

    def train_data(self, bundle):
        data = super().train_data(bundle)
        self._cache = None
        if self.cfg.cache_teachers:     # one pass over the training rows; steps then read rows by index
            dev = next(self.student.parameters()).device
            chunks: dict[str, list[torch.Tensor]] = {}
            for i in range(0, len(data), 256):
                for key, v in self.whole_image_pass(data.x[i:i + 256].to(dev)).items():
                    chunks.setdefault(key, []).append(v.float().cpu())
            self._cache = {key: torch.cat(v) for key, v in chunks.items()}
            self.count(teacher=len(data) * self._whole_image_flops()[0])
        return data

    # --- the two terms ---------------------------------------------------------------------------------
    def loss(self, batch, step):
        cfg, s = self.cfg, self.student
        x, n = batch["x"], s.num_patches
        b, k = len(x), self.kept_count(step)
        run_flops, full_flops = self._whole_image_flops()
        index = batch.get("index")
        if self._cache is not None and index is not None:
            t = {key: v[index.cpu()].to(x.device) for key, v in self._cache.items()}
        else:
            t = self.whole_image_pass(x)
            self.count(teacher=b * run_flops)
        with torch.no_grad():
            if k == n:
                keep = torch.arange(n, device=x.device).expand(b, n)
            elif cfg.mask_by == "random":
                keep = torch.rand(b, n, device=x.device).argsort(1)[:, :k].sort(1).values
            else:
                keep = keep_most_attended(t["score"], k)
            if cfg.relation_weight > 0 and cfg.mim_input == "kept":     # T_m on the kept tokens only (not cacheable)
                upto = max(self.t_layers) + 1
                f = self.mim_teacher.model.forward_features(x, keep, upto=upto, attn=set(self.t_layers))
                t["tm"] = torch.stack([f.attn[l] for l in self.t_layers], 1)
                self.count(teacher=b * model_flops(self.mim_teacher.model, 1 + k, upto))
        self.count(teacher_full=b * full_flops, student=b * model_flops(s, 1 + k), examples=b)

        feats = s.forward_features(x, keep, attn=set(self.s_layers) if cfg.relation_weight > 0 else ())
        total = x.new_zeros(())
        logs = {"log/kept": torch.tensor(float(k)), "log/masked_frac": mask_from_keep(keep, n).float().mean()}
        if cfg.feature_weight > 0:
            idx = torch.cat([torch.zeros_like(keep[:, :1]), keep + 1], dim=1)
            target = torch.gather(t["tc"], 1, idx[..., None].expand(-1, -1, t["tc"].shape[-1]))
            if cfg.whiten_target:
                target = F.layer_norm(target, target.shape[-1:])
            l_f = F.smooth_l1_loss(self.projector(feats.tokens).float(), target.float(), beta=cfg.smooth_l1_beta)
            total = total + cfg.feature_weight * l_f
            logs["log/feature"] = l_f.detach()
        if cfg.relation_weight > 0:
            l_r = x.new_zeros(())
            for j, ls in enumerate(self.s_layers):
                a_t = t["tm"][:, j]
                if cfg.mim_input == "full" and k < n:
                    a_t = restrict_attention(a_t, keep)
                l_r = l_r + relation_loss(feats.attn[ls], a_t, cfg.smooth_l1_beta)
            l_r = l_r / len(self.s_layers)
            total = total + cfg.relation_weight * l_r
            logs["log/relation"] = l_r.detach()
        return {"student": total, **logs}
