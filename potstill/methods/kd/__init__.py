from . import diswot, ff_g2m, fitnets, gnn, hinton, label_free, lelp, quantized, supervised  # noqa: F401
