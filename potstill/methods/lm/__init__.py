from . import distillspec, language_model, mgsr, swing, token_kd  # noqa: F401
