"""Reference norm kernels."""

KERNELS: dict = {}
