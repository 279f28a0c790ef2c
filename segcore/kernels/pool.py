"""Reference pool kernels."""

KERNELS: dict = {}
