"""Every registered method, one file each, grouped by pillar."""
from . import dataset, generative, kd, lm  # noqa: F401
