"""The predictive-maintenance asset solution: one package, one module per service."""
