"""Generative distillation: teachers in the EDM denoiser interface and their few-step students."""
from . import consistency, disback, dmd, dmd2, edm, msd, progressive, sfd, sid, sim, swiftbrush  # noqa: F401
