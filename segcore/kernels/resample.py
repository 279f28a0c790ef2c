"""Reference resample kernels."""

KERNELS: dict = {}
