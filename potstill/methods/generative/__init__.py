"""Generative distillation: teachers in the EDM denoiser interface and their few-step students."""
from . import consistency, dmd, dmd2, edm, progressive, sfd, sid, sim  # noqa: F401
