"""Pure loss functions shared by the methods (no state, no modules)."""
from .divergences import js_divergence, kl_divergence, soft_target_kd  # noqa: F401
from .features import barlow_twins_loss, hint_loss  # noqa: F401
from .diffusion import edm_loss, edm_weight  # noqa: F401
