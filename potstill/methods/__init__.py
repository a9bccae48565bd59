"""Every registered method, one file each, grouped by pillar."""
from . import dataset, generative, kd  # noqa: F401
