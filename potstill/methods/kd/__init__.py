from . import diswot, ff_g2m, fitnets, gnn, hinton, label_free, quantized, supervised  # noqa: F401
