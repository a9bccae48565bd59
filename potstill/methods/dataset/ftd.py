"""Minimizing the Accumulated Trajectory Error to Improve Dataset Distillation (FTD) — Du, Jiang,
Tan, Zhou & Li, CVPR 2023, arXiv 2211.11004 (catalog D10).

MTT's student drifts from the expert because errors accumulate along the unrolled steps. FTD
changes two things and keeps MTT's loss (eq. 2 there) unchanged:

1. **Flat expert trajectories** (sec. 4.1): the experts are trained with sharpness-aware
   minimisation, so small deviations of the student's parameters cost little. Defaults follow
   the authors' code: rho = 0.01, the adaptive perturbation e = rho w^2 g / ||w g|| and GSAM's
   surrogate-gap term with alpha = 0.4 (see :mod:`.experts`). A buffer trained without SAM is
   refused.
2. **An exponential moving average of the synthetic images** (sec. 4.2):
       x_ema <- d x_ema + (1 - d) x        after every update (d = ``image_ema``, 0.999 there)
   and the EMA images are the distilled set that is exported and evaluated. Short runs need a
   smaller d (the recipes use 0.99 for a few hundred iterations: 0.999 would keep ~75% of the
   initial images after 300 steps).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.config import ConfigError
from ...core.registry import METHODS
from .experts import ExpertConfig
from .mtt import MTT, MTTConfig

#: the experts FTD trains unless the recipe says otherwise (authors' run_buffer.sh)
FLAT_EXPERTS = {"sam_rho": 0.01, "sam_adaptive": True, "gsam_alpha": 0.4}


@dataclass
class FTDConfig(MTTConfig):
    image_ema: float = 0.999         # d of the images' EMA

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.image_ema < 1.0:
            raise ValueError(f"image_ema must be in [0, 1), got {self.image_ema}")


@METHODS.register("ftd")
class FTD(MTT):
    """MTT with flat (SAM-trained) experts and an EMA of the synthetic images."""

    Config = FTDConfig
    name = "ftd"
    catalog_ids = ("D10",)
    paper = "Minimizing the Accumulated Trajectory Error to Improve Dataset Distillation"
    arxiv = "2211.11004"

    def __init__(self, cfg: FTDConfig, data):
        super().__init__(cfg, data)
        if not (self.buffer.meta.get("training") or {}).get("sam_rho", 0) > 0:
            raise ConfigError(f"method.buffer: {self.buffer.root} was trained without SAM; FTD needs "
                              "flat experts (experts.sam_rho > 0)")
        self.register_buffer("images_ema", self.images.detach().clone())
        self.register_buffer("ema_folded", torch.zeros((), dtype=torch.long))   # updates folded in
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))      # updates the images had

    @classmethod
    def expert_config(cls, cfg) -> ExpertConfig:
        return ExpertConfig(**{**FLAT_EXPERTS, **cfg.experts})

    @torch.no_grad()
    def fold_ema(self) -> None:
        """Fold the current images into the EMA once per image update."""
        if int(self.ema_folded) < int(self.updates):
            self.images_ema.lerp_(self.images.detach(), 1 - self.cfg.image_ema)
            self.ema_folded.copy_(self.updates)

    def loss(self, batch, step):
        self.updates.fill_(step)     # the images now hold ``step`` optimizer updates
        self.fold_ema()
        self.updates.fill_(step + 1)  # ... and will hold one more after this step
        return super().loss(batch, step)

    def exported_images(self) -> torch.Tensor:
        x = self.images_ema.detach()
        if int(self.ema_folded) < int(self.updates):   # the last update, folded without touching the state
            x = torch.lerp(x, self.images.detach(), 1 - self.cfg.image_ema)
        return self.zca.invert(x) if self.zca is not None else x
