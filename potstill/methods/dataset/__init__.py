"""Dataset distillation: a training set into a few (synthetic) images per class."""
from . import coresets, datadam, datm, dc, dm, ftd, mtt, smooth_experts  # noqa: F401
