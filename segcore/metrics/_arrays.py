"""Input conversion shared by the metrics: NumPy arrays in, segcore Tensors accepted and copied to host."""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor


def as_numpy(value: object, name: str) -> np.ndarray:
    """``value`` as a NumPy array; a segcore Tensor is copied off its backend with ``.numpy()``."""
    if isinstance(value, Tensor):
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (str, bytes, dict)) or value is None:
        raise TypeError(f"{name} must be a NumPy array or a segcore Tensor, got {type(value).__name__}")
    return np.asarray(value)


def as_label_array(value: object, name: str) -> np.ndarray:
    """An integer (or boolean) label array; floating-point labels are refused rather than truncated."""
    array = as_numpy(value, name)
    if array.dtype.kind not in "biu":
        raise TypeError(f"{name} must hold integer labels, got dtype {array.dtype}")
    return array
