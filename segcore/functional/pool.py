"""Pooling ops with ``torch.nn.functional`` semantics: max / average / adaptive pooling and max unpooling.

Inputs are ``(N, C, H, W)`` or unbatched ``(C, H, W)``. Max-pool indices are int64 flat positions
``h * W + w`` inside each input plane (torch's convention), so they round-trip through :func:`max_unpool2d`.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function, Tensor
from ..kernels.pool import pool_output_size
from ._utils import ntuple

__all__ = [
    "max_pool2d",
    "max_unpool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
]


# -- argument checks ----------------------------------------------------------------------------------------


def _check_input(op: str, input, *, floating: bool = True) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (3, 4):
        raise ValueError(f"{op}: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {input.shape}")
    if any(n == 0 for n in input.shape[-3:]):
        raise ValueError(f"{op}: input must have non-zero channels, height and width, got shape {input.shape}")
    if floating and np.dtype(input.dtype).kind != "f":
        raise TypeError(f"{op}: input must be a floating-point tensor, got dtype {input.dtype}")


def _pair(op: str, value, name: str, minimum: int) -> tuple[int, int]:
    try:
        return ntuple(value, 2, name, minimum=minimum)
    except ValueError as exc:
        raise ValueError(f"{op}: {exc}") from None


def _stride(op: str, stride, kernel_size: tuple[int, int]) -> tuple[int, int]:
    # torch: stride=None (or an empty list) means "same as kernel_size".
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel_size
    return _pair(op, stride, "stride", 1)


def _check_padding(op: str, padding: tuple[int, int], kernel_size: tuple[int, int]) -> None:
    if any(p > k // 2 for p, k in zip(padding, kernel_size)):
        raise ValueError(
            f"{op}: padding must be at most half of kernel_size, got padding={padding} for kernel_size={kernel_size}"
        )


def _check_bool(op: str, value, name: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")


def _output_hw(op: str, input: Tensor, kernel_size, stride, padding, dilation, ceil_mode) -> tuple[int, int]:
    h, w = input.shape[-2:]
    out = tuple(
        pool_output_size(size, k, s, p, d, ceil_mode)
        for size, k, s, p, d in zip((h, w), kernel_size, stride, padding, dilation)
    )
    if min(out) < 1:
        raise ValueError(
            f"{op}: input of spatial size {(h, w)} is too small for kernel_size={kernel_size}, stride={stride}, "
            f"padding={padding}, dilation={dilation}, ceil_mode={ceil_mode}: the output would be {out}"
        )
    return out


def _adaptive_size(op: str, input: Tensor, output_size) -> tuple[int, int]:
    """torch's adaptive ``output_size``: an int or a pair whose ``None`` entries keep the input's size."""
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(
            size if value is None else value for value, size in zip(output_size, input.shape[-2:])
        )
    return _pair(op, output_size, "output_size", 1)


# -- unbatched inputs ---------------------------------------------------------------------------------------


def _as_batch(x):
    return x if x.ndim == 4 else x[None]


def _like_input(ctx, y):
    """Drop the batch axis added by :func:`_as_batch` again when the input was unbatched."""
    return y if ctx.batched else y[0]


# -- Functions ----------------------------------------------------------------------------------------------


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, *, kernel_size, stride, padding, dilation, ceil_mode):
        ctx.batched = x.ndim == 4
        x = _as_batch(x)
        out, indices = ctx.kernel("max_pool2d")(ctx.xp, x, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.input_shape = x.shape
        ctx.save_for_backward(indices)
        return _like_input(ctx, out), _like_input(ctx, indices)

    @staticmethod
    def backward(ctx, grad, _grad_indices):
        (indices,) = ctx.saved
        gx = ctx.kernel("max_pool2d_backward")(ctx.xp, _as_batch(grad), indices, ctx.input_shape)
        return _like_input(ctx, gx)


class MaxUnpool2d(Function):
    @staticmethod
    def forward(ctx, x, indices, *, output_size):
        ctx.batched = x.ndim == 4
        indices = _as_batch(indices)
        out = ctx.kernel("max_unpool2d")(ctx.xp, _as_batch(x), indices, output_size)
        ctx.save_for_backward(indices)
        return _like_input(ctx, out)

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved
        gx = ctx.kernel("max_unpool2d_backward")(ctx.xp, _as_batch(grad), indices)
        return _like_input(ctx, gx), None


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, **params):
        ctx.batched = x.ndim == 4
        x = _as_batch(x)
        ctx.input_shape = x.shape
        ctx.params = params
        return _like_input(ctx, ctx.kernel("avg_pool2d")(ctx.xp, x, **params))

    @staticmethod
    def backward(ctx, grad):
        gx = ctx.kernel("avg_pool2d_backward")(ctx.xp, _as_batch(grad), ctx.input_shape, **ctx.params)
        return _like_input(ctx, gx)


class AdaptiveAvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, *, output_size):
        ctx.batched = x.ndim == 4
        x = _as_batch(x)
        ctx.input_shape = x.shape
        return _like_input(ctx, ctx.kernel("adaptive_avg_pool2d")(ctx.xp, x, output_size))

    @staticmethod
    def backward(ctx, grad):
        gx = ctx.kernel("adaptive_avg_pool2d_backward")(ctx.xp, _as_batch(grad), ctx.input_shape)
        return _like_input(ctx, gx)


class AdaptiveMaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, *, output_size):
        ctx.batched = x.ndim == 4
        x = _as_batch(x)
        out, indices = ctx.kernel("adaptive_max_pool2d")(ctx.xp, x, output_size)
        ctx.input_shape = x.shape
        ctx.save_for_backward(indices)
        return _like_input(ctx, out), _like_input(ctx, indices)

    @staticmethod
    def backward(ctx, grad, _grad_indices):
        (indices,) = ctx.saved
        gx = ctx.kernel("adaptive_max_pool2d_backward")(ctx.xp, _as_batch(grad), indices, ctx.input_shape)
        return _like_input(ctx, gx)


# -- public ops ---------------------------------------------------------------------------------------------


def max_pool2d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """2-D max pooling over ``(N, C, H, W)`` or ``(C, H, W)`` input, as ``torch.nn.functional.max_pool2d``.

    Padding counts as ``-inf``; ``stride`` defaults to ``kernel_size``; ``padding`` is at most half the
    kernel. With ``return_indices`` also returns int64 indices ``h * W + w`` of each maximum in its input
    plane (the first maximum in window order on ties).
    """
    op = "max_pool2d"
    _check_input(op, input)
    kernel_size = _pair(op, kernel_size, "kernel_size", 1)
    stride = _stride(op, stride, kernel_size)
    padding = _pair(op, padding, "padding", 0)
    dilation = _pair(op, dilation, "dilation", 1)
    _check_padding(op, padding, kernel_size)
    _check_bool(op, ceil_mode, "ceil_mode")
    _check_bool(op, return_indices, "return_indices")
    _output_hw(op, input, kernel_size, stride, padding, dilation, ceil_mode)
    out, indices = MaxPool2d.apply(
        input, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=bool(ceil_mode)
    )
    return (out, indices) if return_indices else out


def max_unpool2d(input: Tensor, indices: Tensor, kernel_size, stride=None, padding=0, output_size=None) -> Tensor:
    """Partial inverse of :func:`max_pool2d`: put each value at its index in zero planes, as torch.

    The default output size is ``(H - 1) * stride - 2 * padding + kernel_size``; ``output_size`` (``(H, W)``
    or ``(N, C, H, W)``) picks another one strictly within ``stride`` of it.
    """
    op = "max_unpool2d"
    _check_input(op, input)
    if not isinstance(indices, Tensor):
        raise TypeError(f"{op}: indices must be a Tensor, got {type(indices).__name__}")
    if indices.dtype != np.int64:
        raise TypeError(f"{op}: indices must have dtype int64 (as returned by max_pool2d), got {indices.dtype}")
    if indices.shape != input.shape:
        raise ValueError(f"{op}: indices must have the shape of input {input.shape}, got {indices.shape}")
    kernel_size = _pair(op, kernel_size, "kernel_size", 1)
    stride = _stride(op, stride, kernel_size)
    padding = _pair(op, padding, "padding", 0)
    default = tuple(
        (size - 1) * s + k - 2 * p for size, s, k, p in zip(input.shape[-2:], stride, kernel_size, padding)
    )
    if output_size is None:
        size = default
    else:
        if not isinstance(output_size, (tuple, list)) or len(output_size) not in (2, 4):
            raise ValueError(f"{op}: output_size must be (H, W) or (N, C, H, W), got {output_size!r}")
        size = _pair(op, tuple(output_size[-2:]), "output_size", 0)
        for dim, (want, base, s) in enumerate(zip(size, default, stride)):
            if not base - s < want < base + s:
                raise ValueError(
                    f"{op}: invalid output_size {tuple(output_size)!r}: dimension {dim} must be strictly between "
                    f"{base - s} and {base + s}"
                )
    plane = size[0] * size[1]
    if indices.numel():
        # Validated up front: a bad index would otherwise write outside the plane or fail inside the kernel.
        low, high = int(indices.backend.xp.min(indices.data)), int(indices.backend.xp.max(indices.data))
        if low < 0 or high >= plane:
            bad = low if low < 0 else high
            raise ValueError(f"{op}: indices contain {bad}, outside the output planes of size {size} (0..{plane - 1})")
    return MaxUnpool2d.apply(input, indices, output_size=size)


def avg_pool2d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Each output is its window's sum divided by ``divisor_override`` if given, else by the number of window
    positions inside the padded input (``count_include_pad=True``) or inside the input itself.
    """
    op = "avg_pool2d"
    _check_input(op, input)
    kernel_size = _pair(op, kernel_size, "kernel_size", 1)
    stride = _stride(op, stride, kernel_size)
    padding = _pair(op, padding, "padding", 0)
    _check_padding(op, padding, kernel_size)
    _check_bool(op, ceil_mode, "ceil_mode")
    _check_bool(op, count_include_pad, "count_include_pad")
    if divisor_override is not None:
        if not isinstance(divisor_override, (numbers.Integral, np.integer)) or isinstance(divisor_override, bool):
            raise TypeError(f"{op}: divisor_override must be an int or None, got {divisor_override!r}")
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must not be zero")
        divisor_override = int(divisor_override)
    _output_hw(op, input, kernel_size, stride, padding, (1, 1), ceil_mode)
    return AvgPool2d.apply(
        input,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        ceil_mode=bool(ceil_mode),
        count_include_pad=bool(count_include_pad),
        divisor_override=divisor_override,
    )


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Average over torch's adaptive bins ``[floor(i*H/out), ceil((i+1)*H/out))`` in each dimension.

    ``output_size`` is an int or an ``(oh, ow)`` pair; a ``None`` entry keeps that input dimension.
    """
    op = "adaptive_avg_pool2d"
    _check_input(op, input)
    return AdaptiveAvgPool2d.apply(input, output_size=_adaptive_size(op, input, output_size))


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Maximum over torch's adaptive bins (see :func:`adaptive_avg_pool2d`), optionally with indices."""
    op = "adaptive_max_pool2d"
    _check_input(op, input)
    _check_bool(op, return_indices, "return_indices")
    out, indices = AdaptiveMaxPool2d.apply(input, output_size=_adaptive_size(op, input, output_size))
    return (out, indices) if return_indices else out
