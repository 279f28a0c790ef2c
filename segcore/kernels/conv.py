"""Reference conv kernels."""

KERNELS: dict = {}
