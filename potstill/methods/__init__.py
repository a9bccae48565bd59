"""Every registered method, one file each, grouped by pillar."""
from . import kd  # noqa: F401
