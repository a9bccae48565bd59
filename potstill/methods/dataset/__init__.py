"""Dataset distillation: a training set into a few (synthetic) images per class."""
from . import coresets, cvdd, datadam, datm, dc, dm, dq, ftd, hello, infer, krr_st, mtt, smooth_experts, sre2l  # noqa: F401
