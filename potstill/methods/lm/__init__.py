from . import language_model, token_kd  # noqa: F401
