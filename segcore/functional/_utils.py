"""Argument handling shared by the functional ops: scalar promotion and torch-style int-or-pair arguments."""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor


def as_tensor_like(value, like: Tensor, name: str = "other") -> Tensor:
    """``value`` as a Tensor on ``like``'s backend.

    Python and NumPy scalars take ``like``'s dtype (torch's "weak scalar" rule: ``x * 2.0`` stays float32);
    a Tensor is returned unchanged so that mixing backends is reported by the op itself.
    """
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (bool, np.bool_)):
        return Tensor(like.backend.asarray(value, dtype=np.bool_), like.backend)
    if isinstance(value, (numbers.Number, np.generic)):
        kind = np.dtype(like.dtype).kind
        if isinstance(value, (float, np.floating)) and kind in "iub":
            dtype = np.float32
        elif kind == "b":
            dtype = np.int64  # bool tensor + 2 is an int64 tensor in torch, not True
        else:
            dtype = like.dtype
        return Tensor(like.backend.asarray(value, dtype=dtype), like.backend)
    raise TypeError(f"{name} must be a Tensor or a number, got {type(value).__name__}")


def first_tensor(*values) -> Tensor:
    for v in values:
        if isinstance(v, Tensor):
            return v
    raise TypeError(f"expected at least one Tensor argument, got {', '.join(type(v).__name__ for v in values)}")


def ntuple(value, n: int, name: str, *, minimum: int | None = None) -> tuple[int, ...]:
    """torch's int-or-tuple convention: ``3`` -> ``(3, 3)``; checks length, integrality and lower bound."""
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        out = (int(value),) * n
    elif isinstance(value, (tuple, list)) and len(value) == n and all(
        isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) for v in value
    ):
        out = tuple(int(v) for v in value)
    else:
        raise ValueError(f"{name} must be an int or a sequence of {n} ints, got {value!r}")
    if minimum is not None and any(v < minimum for v in out):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return out


def check_ndim(x: Tensor, ndims: tuple[int, ...], name: str, what: str) -> None:
    """Raise naming the argument when ``x`` is not a Tensor with one of ``ndims`` dimensions."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if x.ndim not in ndims:
        expected = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {expected} ({what}), got shape {x.shape}")


def check_floating(x: Tensor, name: str) -> None:
    if np.dtype(x.dtype).kind != "f":
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
