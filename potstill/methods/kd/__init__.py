from . import ff_g2m, fitnets, gnn, hinton, label_free, supervised  # noqa: F401
