"""Generative distillation: teachers in the EDM denoiser interface and their few-step students."""
from . import edm  # noqa: F401
