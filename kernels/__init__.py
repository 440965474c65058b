"""rescore.kernels."""
