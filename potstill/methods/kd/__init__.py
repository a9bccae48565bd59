from . import barlow_twins, diswot, dmae, ff_g2m, fitnets, gnn, hinton, hybrid, label_free, lelp, mae, quantized, supervised  # noqa: F401
