"""Generative distillation: teachers in the EDM denoiser interface and their few-step students."""
from . import dmd, dmd2, edm  # noqa: F401
