"""Masked Autoencoders Are Scalable Vision Learners — He, Chen, Xie, Li, Dollár & Girshick, arXiv 2111.06377.

Not a distillation method: the baseline that DMAE (``dmae.py``, catalog K18) and Hybrid Distill
(``hybrid.py``, K1) add teachers to, and the way the masked-image-modelling (MIM) teacher of
Hybrid Distill is made. Every step, per image:

1. cut the image into N patches and keep a random K = round(N·(1 − r)) of them (r: ``mask_ratio``,
   at least one patch is always kept);
2. the ViT encoder sees CLS + the K visible patches only (``ViT.forward_features(x, keep_idx)``);
3. a light decoder puts a learned mask token at every hidden position, adds position embeddings
   and predicts every patch's pixels;
4. the loss is the mean squared error on the *masked* patches only, against pixels normalised
   per patch (``norm_pix_loss``, MAE's best target):

       L_MAE = (1 / |M|) Σ_{i ∈ M} ‖ pred_i − (x_i − mean(x_i)) / std(x_i) ‖² / P

The export is the encoder (a ``vit`` whose classifier head is untouched by pretraining). It is
judged by fine-tuning (``method: supervised`` with ``student_init``, ``recipes/kd/vit_finetune_fmnist.yaml``)
and by a linear probe (:func:`linear_probe`). During pretraining the validation metric ``acc`` is
the k-NN accuracy of the encoder's pooled features against the training pool (k = ``knn_k``,
votes weighted by exp(cos / 0.07), as in Wu et al. 2018), so runs can be compared without labels
in the loss.

:class:`MaskedPretraining` holds what the three methods share: the encoder group, the training
pool (optionally with the unlabeled pool), the k-NN evaluation and the FLOP counters
(``cost``: student forward, teacher forward and the cost of the whole teacher on whole images, so
a method can report the fraction of teacher compute it used).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.config import ConfigError
from ...core.method import Method
from ...core.registry import METHODS
from ...losses.features import masked_patch_mse
from ...models.vit import MAEDecoder, ViT, decoder_flops, model_flops, random_keep


def require_vit(model: nn.Module, key: str) -> ViT:
    if not isinstance(model, ViT):
        raise ConfigError(f"{key}: this method works on Vision Transformer tokens; use {{name: vit, ...}} "
                          f"(got {type(model).__name__})")
    return model


class MaskedPretraining(Method):
    """Shared base: a ViT student pretrained without labels; export = the encoder."""

    pillar = "kd"
    cacheable_teacher = False          # masks are random per step: nothing to cache per example

    def __init__(self, cfg, student: nn.Module):
        super().__init__(cfg)
        self.student = require_vit(student, "student")
        self._pool = None
        # forward FLOPs summed over training: [student, teacher(s) as run, teacher(s) on whole images, examples]
        self.register_buffer("cost", torch.zeros(4, dtype=torch.long))

    # --- data ---------------------------------------------------------------------------------------
    def train_data(self, bundle):
        from ...data import ArrayData

        parts = [bundle.train]
        if getattr(self.cfg, "unlabeled", False) and bundle.unlabeled is not None and len(bundle.unlabeled):
            parts.append(bundle.unlabeled)
        self._pool = bundle.train              # k-NN evaluation reads the labelled rows
        x = torch.cat([p.x for p in parts])
        return ArrayData(x, torch.full((len(x),), -1, dtype=torch.long))   # pretraining sees no labels

    # --- parameters ---------------------------------------------------------------------------------
    def encoder_parameters(self) -> list[nn.Parameter]:
        """Every student parameter except the classifier head (pretraining never reaches it)."""
        return [p for n, p in self.student.named_parameters() if not n.startswith("classifier.")]

    def heads(self) -> list[nn.Module]:
        """Pretraining-only modules (decoder, projectors) trained with the encoder and dropped at export."""
        return []

    def param_groups(self):
        # one group: the encoder and its heads learn from the one total loss (one backward pass)
        return {"student": self.encoder_parameters() + [p for h in self.heads() for p in h.parameters()]}

    def count(self, student: int = 0, teacher: int = 0, teacher_full: int = 0, examples: int = 0) -> None:
        self.cost += torch.tensor([student, teacher, teacher_full, examples], device=self.cost.device)

    def export(self):
        return self.student

    # --- evaluation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, data, batch_size: int = 512) -> dict[str, float]:
        out = {}
        if self._pool is not None and (self._pool.y >= 0).any():
            out["acc"] = out["knn_acc"] = knn_accuracy(self.student, self._pool, data, getattr(self.cfg, "knn_k", 20),
                                                       batch_size)
        c = self.cost.tolist()
        out["train_student_fwd_gflop"] = c[0] / 1e9
        if c[2]:
            out["train_teacher_fwd_gflop"] = c[1] / 1e9
            out["teacher_cost_fraction"] = c[1] / c[2]
        return out


@torch.no_grad()
def features(model: ViT, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Pooled final features (what a linear probe / k-NN reads), in eval mode."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = torch.cat([model.embed(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])
    model.train(was)
    return out


@torch.no_grad()
def knn_accuracy(model: ViT, pool, data, k: int = 20, batch_size: int = 512, temperature: float = 0.07) -> float:
    """Weighted k-NN accuracy of cosine-similar pooled features (labelled rows of ``pool`` vote)."""
    keep = pool.y >= 0
    bank, labels = F.normalize(features(model, pool.x[keep], batch_size), dim=1), pool.y[keep]
    qkeep = data.y >= 0
    q, qy = F.normalize(features(model, data.x[qkeep], batch_size), dim=1), data.y[qkeep]
    c = int(labels.max()) + 1
    correct = 0
    for i in range(0, len(q), 1024):
        sim, idx = (q[i:i + 1024] @ bank.T).topk(min(k, len(bank)), dim=1)
        votes = torch.zeros(len(sim), c).scatter_add_(1, labels[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1) == qy[i:i + 1024]).sum())
    return correct / max(1, len(q))


def linear_probe(model: ViT, train, tests: dict, c: float = 1.0, max_iter: int = 1000) -> dict[str, float]:
    """Accuracy of a logistic-regression probe on frozen, standardised pooled features.

    Fitted on the labelled rows of ``train`` (scikit-learn, L2 strength 1/``c``); returns the accuracy
    on each split of ``tests`` ({"val": ArrayData, "test": ArrayData}).
    """
    from sklearn.linear_model import LogisticRegression

    keep = train.y >= 0
    f = features(model, train.x[keep])
    mu, sd = f.mean(0), f.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=max_iter).fit(((f - mu) / sd).numpy(), train.y[keep].numpy())
    out = {}
    for name, d in tests.items():
        m = d.y >= 0
        out[name] = float(clf.score(((features(model, d.x[m]) - mu) / sd).numpy(), d.y[m].numpy()))
    return out


@dataclass
class MAEConfig:
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder_width: int = 64
    decoder_depth: int = 1
    decoder_heads: int = 4
    unlabeled: bool = False       # also pretrain on the dataset's unlabeled pool (labels are never used)
    knn_k: int = 20               # validation: k-NN accuracy of the encoder's features

    def __post_init__(self):
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError("mask_ratio must be in [0, 1) (at least one patch is always kept)")
        if self.decoder_width < 4 or self.decoder_depth < 0 or self.decoder_heads < 1 or self.knn_k < 1:
            raise ValueError("decoder_width >= 4, decoder_depth >= 0, decoder_heads >= 1, knn_k >= 1")


def mae_step(student: ViT, decoder: MAEDecoder, x: torch.Tensor, mask_ratio: float, norm_pix: bool):
    """One masked-autoencoding pass: (loss, encoder features of the visible tokens, keep_idx)."""
    keep, mask = random_keep(x.shape[0], student.num_patches, mask_ratio, device=x.device)
    feats = student.forward_features(x, keep)
    pred = decoder(feats.tokens, keep)
    return masked_patch_mse(pred, student.patchify(x), mask, norm_pix), feats, keep


@METHODS.register("mae")
class MAE(MaskedPretraining):
    """Masked-autoencoder pretraining of a ViT (pixel reconstruction of masked patches); the DMAE/Hybrid baseline."""

    Config = MAEConfig
    name = "mae"
    catalog_ids = ()
    paper = "Masked Autoencoders Are Scalable Vision Learners (baseline for K18/K1)"
    arxiv = "2111.06377"

    def __init__(self, cfg: MAEConfig, student: nn.Module):
        super().__init__(cfg, student)
        self.decoder = MAEDecoder(self.student, cfg.decoder_width, cfg.decoder_depth, cfg.decoder_heads,
                                  self.student.cfg.mlp_ratio)

    @classmethod
    def build(cls, cfg, ctx):
        return cls(cfg, ctx.student())

    def heads(self):
        return [self.decoder]

    def loss(self, batch, step):
        x = batch["x"]
        loss, _, keep = mae_step(self.student, self.decoder, x, self.cfg.mask_ratio, self.cfg.norm_pix_loss)
        k = keep.shape[1]
        self.count(student=len(x) * (model_flops(self.student, 1 + k) + decoder_flops(self.decoder, k)), examples=len(x))
        return {"student": loss, "log/mae": loss.detach(), "log/visible": torch.tensor(float(k))}
