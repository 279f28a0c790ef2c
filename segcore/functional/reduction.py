"""Reductions with torch's ``dim`` / ``keepdim`` arguments: sum, mean, max, min, argmax, argmin."""

from __future__ import annotations

import builtins
import numbers
from typing import NamedTuple

import numpy as np

from ..autograd import Function, Tensor

__all__ = ["sum", "mean", "max", "min", "argmax", "argmin", "ValuesIndices"]


class ValuesIndices(NamedTuple):
    """``(values, indices)`` returned by :func:`max` and :func:`min` with a ``dim``, like torch's return types."""

    values: Tensor
    indices: Tensor


def normalize_dims(dim, ndim: int, name: str = "dim") -> tuple[int, ...]:
    """torch's ``dim`` argument (None, an int or a sequence, negatives allowed) as sorted non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, bool) or not isinstance(dim, (numbers.Integral, tuple, list)):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {dim!r}")
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    if not dims:
        # torch reduces over every dimension when given an empty dim list (x.sum(dim=()) is the total).
        return tuple(range(ndim))
    out = []
    for d in dims:
        if not isinstance(d, numbers.Integral) or isinstance(d, bool):
            raise TypeError(f"{name} must be an int or a sequence of ints, got {dim!r}")
        # This module defines max(); the builtin is meant here. A 0-d tensor accepts dim 0 and -1 (torch).
        extent = builtins.max(ndim, 1)
        if not -extent <= d < extent:
            raise ValueError(f"{name}={d} is out of range for a tensor with {ndim} dimensions")
        out.append(int(d) % extent)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} contains a repeated dimension: {dim!r}")
    return tuple(sorted(out)) if ndim else ()


def expand_reduced(xp, grad, axes: tuple[int, ...], keepdim: bool):
    """Re-insert the reduced axes of ``grad`` (size 1) so that it broadcasts against the input."""
    if keepdim or not axes:
        return grad
    return xp.expand_dims(grad, axis=axes)


class Sum(Function):
    @staticmethod
    def forward(ctx, x, *, axes, keepdim):
        ctx.axes, ctx.keepdim, ctx.shape = axes, keepdim, x.shape
        return ctx.xp.sum(x, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        return xp.broadcast_to(expand_reduced(xp, g, ctx.axes, ctx.keepdim), ctx.shape)


class Mean(Function):
    @staticmethod
    def forward(ctx, x, *, axes, keepdim):
        ctx.axes, ctx.keepdim, ctx.shape = axes, keepdim, x.shape
        ctx.count = 1
        for a in axes:
            ctx.count *= x.shape[a]
        return ctx.xp.mean(x, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        return xp.broadcast_to(expand_reduced(xp, g, ctx.axes, ctx.keepdim) / ctx.count, ctx.shape)


def _check_tensor(x, op: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(x).__name__}")


def sum(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Sum over ``dim`` (all dimensions when ``None``)."""
    _check_tensor(input, "sum")
    return Sum.apply(input, axes=normalize_dims(dim, input.ndim), keepdim=keepdim)


def mean(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Mean over ``dim`` (all dimensions when ``None``); needs a floating-point input like torch."""
    _check_tensor(input, "mean")
    if input.dtype.kind != "f":
        raise TypeError(f"mean: input must be floating point, got dtype {input.dtype}")
    return Mean.apply(input, axes=normalize_dims(dim, input.ndim), keepdim=keepdim)


class ExtremumAll(Function):
    """max/min over all elements. Ties share the gradient evenly, as torch does for a full reduction."""

    @staticmethod
    def forward(ctx, x, *, largest):
        xp = ctx.xp
        out = xp.max(x) if largest else xp.min(x)
        if ctx.needs_input_grad[0]:
            # NaN propagates to the result; the NaN entries then count as the selected ones (torch does so).
            selected = (x == out) | (xp.isnan(x) & xp.isnan(out))
            ctx.save_for_backward(selected)
        return xp.asarray(out)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        (selected,) = ctx.saved
        share = g / xp.sum(selected).astype(g.dtype)
        return xp.where(selected, share, xp.zeros_like(share))


class ExtremumDim(Function):
    """max/min along one dim: (values, indices); the gradient goes to the returned index only (torch)."""

    @staticmethod
    def forward(ctx, x, *, dim, keepdim, largest):
        xp = ctx.xp
        indices = xp.argmax(x, axis=dim, keepdims=True) if largest else xp.argmin(x, axis=dim, keepdims=True)
        values = xp.take_along_axis(x, indices, axis=dim)
        if not keepdim:
            values = xp.squeeze(values, axis=dim)
            indices = xp.squeeze(indices, axis=dim)
        ctx.dim, ctx.keepdim, ctx.shape = dim, keepdim, x.shape
        ctx.save_for_backward(indices)
        return values, indices.astype(np.int64)

    @staticmethod
    def backward(ctx, g, _g_indices):
        xp = ctx.xp
        (indices,) = ctx.saved
        if not ctx.keepdim:
            g = xp.expand_dims(g, axis=ctx.dim)
            indices = xp.expand_dims(indices, axis=ctx.dim)
        # A broadcast comparison with arange builds the one-hot scatter without put_along_axis, which not
        # every array library implements.
        positions = xp.arange(ctx.shape[ctx.dim]).reshape(
            (1,) * ctx.dim + (-1,) + (1,) * (len(ctx.shape) - ctx.dim - 1)
        )
        return xp.where(positions == indices, g, xp.zeros_like(g))


def _extremum(op: str, input: Tensor, dim, keepdim: bool, largest: bool):
    _check_tensor(input, op)
    if isinstance(dim, Tensor):
        if keepdim:
            raise ValueError(f"{op}: keepdim is not used when the second argument is a Tensor, got keepdim=True")
        from .arithmetic import maximum, minimum

        return maximum(input, dim) if largest else minimum(input, dim)
    if input.numel() == 0:
        raise ValueError(f"{op}: cannot reduce an empty tensor of shape {input.shape}")
    if dim is None:
        if keepdim:
            raise ValueError(f"{op}: keepdim=True needs a dim; got dim=None")
        return ExtremumAll.apply(input, largest=largest)
    if not isinstance(dim, (numbers.Integral, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int (use amax-style reductions one dim at a time), got {dim!r}")
    axes = normalize_dims(dim, input.ndim)  # validates; () for a 0-d tensor
    if input.ndim == 0:
        values = ExtremumAll.apply(input, largest=largest)
        return ValuesIndices(values, Tensor(input.backend.asarray(0, dtype=np.int64), input.backend))
    (axis,) = axes
    values, indices = ExtremumDim.apply(input, dim=axis, keepdim=bool(keepdim), largest=largest)
    return ValuesIndices(values, indices)


def max(input: Tensor, dim=None, keepdim: bool = False):
    """Largest element (``dim=None``) or ``(values, indices)`` along ``dim``, like ``torch.max``.

    ``max(input, other)`` with a Tensor ``other`` is the element-wise :func:`maximum`. Along a dim, the
    first occurrence of the maximum is returned and receives the whole gradient; over all elements, ties
    share the gradient evenly.
    """
    return _extremum("max", input, dim, keepdim, largest=True)


def min(input: Tensor, dim=None, keepdim: bool = False):
    """Smallest element (``dim=None``) or ``(values, indices)`` along ``dim``, like ``torch.min``."""
    return _extremum("min", input, dim, keepdim, largest=False)


def _arg_extremum(op: str, input: Tensor, dim, keepdim: bool, largest: bool) -> Tensor:
    _check_tensor(input, op)
    if input.numel() == 0:
        raise ValueError(f"{op}: cannot reduce an empty tensor of shape {input.shape}")
    xp = input.backend.xp
    find = xp.argmax if largest else xp.argmin
    if dim is None:
        # Index into the flattened tensor; keepdim keeps every axis with size 1 (torch >= 1.13).
        out = find(input.data.reshape(-1))
        out = xp.asarray(out, dtype=np.int64)
        if keepdim:
            out = out.reshape((1,) * input.ndim)
        return Tensor(out, input.backend)
    if not isinstance(dim, (numbers.Integral, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int or None, got {dim!r}")
    axes = normalize_dims(dim, input.ndim)
    if input.ndim == 0:
        return Tensor(xp.asarray(0, dtype=np.int64), input.backend)
    out = find(input.data, axis=axes[0], keepdims=bool(keepdim))
    return Tensor(xp.asarray(out, dtype=np.int64), input.backend)


def argmax(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """int64 indices of the maxima along ``dim`` (of the flattened tensor when ``dim=None``)."""
    return _arg_extremum("argmax", input, dim, keepdim, largest=True)


def argmin(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """int64 indices of the minima along ``dim`` (of the flattened tensor when ``dim=None``)."""
    return _arg_extremum("argmin", input, dim, keepdim, largest=False)
