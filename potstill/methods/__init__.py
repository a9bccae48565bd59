"""Every registered method, one file each, grouped by pillar."""
from . import dataset, kd  # noqa: F401
