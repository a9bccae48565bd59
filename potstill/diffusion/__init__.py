"""Diffusion building blocks shared by every generative method: one denoiser interface
``D(x, sigma, cond)`` (EDM preconditioning and adapters), noise schedules, samplers."""
from .denoiser import Denoiser, EDMPrecond, EpsAdapter, FlowAdapter, from_diffusers  # noqa: F401
from .samplers import SAMPLERS, SampleOut, sample  # noqa: F401
from .schedules import karras_sigmas, nested_sigmas, plan_sigmas, strided_sigmas  # noqa: F401
