"""One-Step Diffusion Distillation through Score Implicit Matching (SIM) - Luo et al., NeurIPS 2024,
arXiv 2410.16794 (catalog G16).

SIM minimises a general score divergence between the generator's diffused distribution
p_theta,t and the teacher's q_t,

    D(theta) = int w(t) E_{x_t ~ p_theta,t} [ d(s_theta,t(x_t) - s_q,t(x_t)) ] dt,

with a distance d (d(0) = 0, minimised at 0). The score s_theta of the generator is unknown; a
*fake score* s_psi trained on the generator's samples stands in for it, and the *score-gradient
theorem* (Theorem 3.1) gives a loss with the same gradient that needs no derivative of s_theta
with respect to theta:

    L(theta) = -E_{t, z, x_g = G(z), x_t | x_g} [ d'(y_t)^T (s_psi(x_t) - grad_{x_t} log q_t(x_t | x_g)) ],
    y_t = s_psi(x_t) - s_q(x_t),

differentiated through x_g and x_t = x_g + sigma n (psi and the teacher frozen). In x_0 units
(s = (mu - x_t)/sigma^2, grad log q_t(x_t | x_g) = (x_g - x_t)/sigma^2) with delta = mu_fake - mu_real
(:func:`~potstill.losses.diffusion.sim_loss`, D dimensions per sample):

* ``distance: pseudo_huber`` (the paper's choice):
  d(delta) = sqrt(mean_j delta_j^2 + c^2) - c,   L = -mean_j[delta (mu_fake - x_g)]_j / sqrt(mean_j delta_j^2 + c^2);
* ``distance: squared``: d(delta) = 1/2 mean_j delta_j^2,   L = -mean_j[delta (mu_fake - x_g)]_j,
  which is exactly SiD's loss with alpha = 1 (``sid.py``; the paper's own sanity check).

Everything else - the generator's input noise sigma_init = 2.5, the noise levels of the loss,
the time weighting (SiD's per-sample 1 / sg(mean |x_g - mu_real|), standing in for w(t) and the
sigma^-4 of the score units), the fake score's EDM loss, one-to-one alternation, few-step
generators, guidance modes - is SiD's setup, reused by subclassing (the SIM paper trains with
SiD's setup). Assumptions: the paper's constant c and exact w(t) were not available here;
``huber_c`` (default 0.01, in data units per dimension for data in [-1, 1]) is this
implementation's choice, and the per-dimension form of the pseudo-Huber distance makes it
independent of the data's dimension.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...core.registry import METHODS
from ...losses.diffusion import sim_loss
from .sid import ScoreDistillConfig, SiD

DISTANCES = ("pseudo_huber", "squared")


@dataclass
class SIMConfig(ScoreDistillConfig):
    distance: str = "pseudo_huber"    # pseudo_huber | squared (= SiD with alpha = 1)
    huber_c: float = 0.01             # pseudo-Huber constant c (data units, per dimension)

    def __post_init__(self):
        super().__post_init__()
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, not {self.distance!r}")
        if not self.huber_c > 0:
            raise ValueError(f"huber_c must be > 0, got {self.huber_c}")


@METHODS.register("sim")
class SIM(SiD):
    """SIM: one-step generator trained by score implicit matching with a pseudo-Huber (or squared) score distance."""

    Config = SIMConfig
    name = "sim"
    catalog_ids = ("G16",)
    paper = "One-Step Diffusion Distillation through Score Implicit Matching"
    arxiv = "2410.16794"

    def match_loss(self, x, mu_real, mu_fake, cond):
        return sim_loss(x, mu_real, mu_fake, self.cfg.distance, self.cfg.huber_c, weight=self.sample_weight(cond))


__all__ = ["DISTANCES", "SIM", "SIMConfig"]
