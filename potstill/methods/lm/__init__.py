from . import distillspec, language_model, token_kd  # noqa: F401
