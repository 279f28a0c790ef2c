"""Reductions with torch's ``dim`` / ``keepdim`` arguments: sum, mean, max, min, argmax."""

from __future__ import annotations

import numbers

from ..autograd import Function, Tensor

__all__ = ["sum", "mean"]


def normalize_dims(dim, ndim: int, name: str = "dim") -> tuple[int, ...]:
    """torch's ``dim`` argument (None, an int or a sequence, negatives allowed) as sorted non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    out = []
    for d in dims:
        if not isinstance(d, numbers.Integral) or isinstance(d, bool):
            raise TypeError(f"{name} must be an int or a sequence of ints, got {dim!r}")
        lo = -max(ndim, 1)
        if not lo <= d < max(ndim, 1):
            raise ValueError(f"{name}={d} is out of range for a tensor with {ndim} dimensions")
        out.append(int(d) % max(ndim, 1))
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


def sum(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Sum over ``dim`` (all dimensions when ``None``)."""
    return Sum.apply(input, axes=normalize_dims(dim, input.ndim), keepdim=keepdim)


def mean(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Mean over ``dim`` (all dimensions when ``None``); needs a floating-point input like torch."""
    if input.dtype.kind != "f":
        raise TypeError(f"mean: input must be floating point, got dtype {input.dtype}")
    return Mean.apply(input, axes=normalize_dims(dim, input.ndim), keepdim=keepdim)
