"""The shipped hyperparameter files (``<algo>.yml``, keyed by env id), installed with the package as data."""
