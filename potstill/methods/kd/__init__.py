from . import fitnets, hinton, label_free, supervised  # noqa: F401
