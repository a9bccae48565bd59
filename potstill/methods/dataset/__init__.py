"""Dataset distillation: a training set into a few (synthetic) images per class."""
from . import coresets, datadam, dc, dm  # noqa: F401
