"""2-D convolution and transposed convolution with ``torch.nn.functional`` semantics (NCHW).

Both ops are thin autograd wrappers over three kernels (``conv2d``, ``conv2d_grad_input``,
``conv2d_grad_weight``): a transposed convolution's forward is a convolution's input gradient, and its
backward is a convolution plus a convolution's weight gradient (Chainer's reuse of one set of maths).
"""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function, Tensor
from ._utils import check_floating, check_ndim, ntuple

__all__ = ["conv2d", "conv_transpose2d"]

Pair = tuple[int, int]


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, w, b, *, stride, padding, dilation, groups, extra):
        xp = ctx.xp
        ctx.args = (stride, padding, dilation, groups)
        ctx.input_hw, ctx.extra, ctx.weight_shape = x.shape[2:], extra, w.shape
        if extra != (0, 0):
            # Odd total 'same' padding: torch puts the extra row/column at the bottom/right. The kernels take
            # symmetric padding, so the extra is added here and cut from the input gradient in backward.
            x = xp.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
        ctx.padded_shape = x.shape
        # Keep only what backward will use: x for the weight gradient, w for the input gradient.
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, w if ctx.needs_input_grad[0] else None)
        out = ctx.kernel("conv2d")(xp, x, w, stride, padding, dilation, groups)
        if b is not None:
            # Kernels return fresh arrays: adding in place spares a second output-sized allocation.
            out += xp.reshape(b, (1, -1, 1, 1))
        return out

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        x, w = ctx.saved
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = ctx.kernel("conv2d_grad_input")(xp, g, w, ctx.padded_shape, *ctx.args)
            if ctx.extra != (0, 0):
                gx = gx[:, :, : ctx.input_hw[0], : ctx.input_hw[1]]
        if ctx.needs_input_grad[1]:
            gw = ctx.kernel("conv2d_grad_weight")(xp, x, g, ctx.weight_shape, *ctx.args)
        if ctx.needs_input_grad[2]:
            gb = xp.sum(g, axis=(0, 2, 3))
        return gx, gw, gb


class ConvTranspose2d(Function):
    @staticmethod
    def forward(ctx, x, w, b, *, stride, padding, dilation, groups, output_shape):
        xp = ctx.xp
        ctx.args = (stride, padding, dilation, groups)
        ctx.input_hw, ctx.weight_shape = x.shape[2:], w.shape
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, w if ctx.needs_input_grad[0] else None)
        # The transposed convolution *is* the input gradient of the convolution it transposes.
        out = ctx.kernel("conv2d_grad_input")(xp, x, w, output_shape, stride, padding, dilation, groups)
        if b is not None:
            out += xp.reshape(b, (1, -1, 1, 1))
        return out

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        x, w = ctx.saved
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = ctx.kernel("conv2d")(xp, g, w, *ctx.args)
            h, wd = ctx.input_hw
            if gx.shape[2:] != (h, wd):
                # output_padding >= stride (allowed when < dilation) adds rows the forward never read from x;
                # convolving them gives extra outputs that are no position of x.
                gx = gx[:, :, :h, :wd]
        if ctx.needs_input_grad[1]:
            gw = ctx.kernel("conv2d_grad_weight")(xp, g, x, ctx.weight_shape, *ctx.args)
        if ctx.needs_input_grad[2]:
            gb = xp.sum(g, axis=(0, 2, 3))
        return gx, gw, gb


# -- argument checking ----------------------------------------------------------------------------------------


def _pair(op: str, value, name: str, minimum: int) -> Pair:
    try:
        return ntuple(value, 2, name, minimum=minimum)
    except ValueError as exc:
        raise ValueError(f"{op}: {exc}") from None


def _groups(op: str, groups) -> int:
    if not isinstance(groups, (numbers.Integral, np.integer)) or isinstance(groups, bool):
        raise TypeError(f"{op}: groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"{op}: groups must be >= 1, got {groups}")
    return int(groups)


def _check_operands(op: str, input, weight) -> None:
    check_ndim(input, (4,), "input", "N, C, H, W; for one unbatched image use input[None]")
    check_ndim(weight, (4,), "weight", "4-D convolution weight")
    check_floating(input, "input")
    if weight.dtype != input.dtype:
        raise TypeError(f"{op}: weight dtype {weight.dtype} does not match input dtype {input.dtype}")
    if any(s == 0 for s in input.shape[1:]):
        raise ValueError(f"{op}: input must have non-empty channel and spatial dimensions, got shape {input.shape}")
    if any(s == 0 for s in weight.shape):
        raise ValueError(f"{op}: weight must have no empty dimension, got shape {weight.shape}")


def _check_bias(op: str, bias, channels: int, input) -> None:
    if bias is None:
        return
    if not isinstance(bias, Tensor):
        raise TypeError(f"{op}: bias must be a Tensor or None, got {type(bias).__name__}")
    if bias.shape != (channels,):
        raise ValueError(f"{op}: bias must have shape ({channels},) (one value per output channel), got {bias.shape}")
    if bias.dtype != input.dtype:
        raise TypeError(f"{op}: bias dtype {bias.dtype} does not match input dtype {input.dtype}")


def _same_padding(kernel: Pair, dilation: Pair) -> tuple[Pair, Pair]:
    """torch's 'same': total ``d*(k-1)``, half on each side, the odd one out at the bottom/right."""
    total = tuple(d * (k - 1) for k, d in zip(kernel, dilation))
    return (total[0] // 2, total[1] // 2), (total[0] % 2, total[1] % 2)


def _check_output_size(op: str, out_hw: Pair, input, kernel: Pair, stride, padding, dilation) -> None:
    if out_hw[0] < 1 or out_hw[1] < 1:
        raise ValueError(
            f"{op}: output size would be {out_hw[0]}x{out_hw[1]} for input size {input.shape[2]}x{input.shape[3]}, "
            f"kernel {kernel[0]}x{kernel[1]}, stride={stride}, padding={padding}, dilation={dilation}; "
            "it must be at least 1x1 (the dilated kernel is larger than the padded input)"
        )


# -- public ops -----------------------------------------------------------------------------------------------


def conv2d(
    input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1, groups=1
) -> Tensor:
    """2-D cross-correlation over an ``(N, C, H, W)`` input, as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    input: ``(N, C_in, H, W)`` floating-point tensor.
    weight: ``(C_out, C_in / groups, kh, kw)``.
    bias: optional ``(C_out,)``.
    stride, dilation: int or pair, >= 1.
    padding: int or pair >= 0 (zeros on both sides), ``'valid'`` (no padding) or ``'same'`` (output size equals
        input size; needs stride 1; an odd total padding puts the extra row/column at the bottom/right).
    groups: splits input and output channels into ``groups`` independent convolutions.

    Returns
    -------
    ``(N, C_out, H_out, W_out)`` with ``H_out = (H + 2 p - d (kh - 1) - 1) // s + 1``.
    """
    op = "conv2d"
    _check_operands(op, input, weight)
    stride = _pair(op, stride, "stride", 1)
    dilation = _pair(op, dilation, "dilation", 1)
    groups = _groups(op, groups)
    _, c, h, w = input.shape
    o, cg, kh, kw = weight.shape
    if c % groups:
        raise ValueError(f"{op}: input channels ({c}) must be divisible by groups ({groups})")
    if o % groups:
        raise ValueError(f"{op}: weight's output channels ({o}, dim 0) must be divisible by groups ({groups})")
    if cg != c // groups:
        raise ValueError(
            f"{op}: weight of shape {weight.shape} expects {cg * groups} input channels "
            f"(dim 1 = C_in / groups = {cg} with groups={groups}), but input has {c} (shape {input.shape})"
        )
    extra: Pair = (0, 0)
    if isinstance(padding, str):
        if padding == "valid":
            pad: Pair = (0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{op}: padding='same' needs stride=1, got stride={stride}")
            pad, extra = _same_padding((kh, kw), dilation)
        else:
            raise ValueError(f"{op}: padding must be 'same', 'valid', an int or a pair of ints, got {padding!r}")
    else:
        pad = _pair(op, padding, "padding", 0)
    out_hw = tuple(
        (size + 2 * p + e - d * (k - 1) - 1) // s + 1
        for size, k, s, p, e, d in zip((h, w), (kh, kw), stride, pad, extra, dilation)
    )
    _check_output_size(op, out_hw, input, (kh, kw), stride, padding, dilation)
    _check_bias(op, bias, o, input)
    return Conv2d.apply(input, weight, bias, stride=stride, padding=pad, dilation=dilation, groups=groups, extra=extra)


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
) -> Tensor:
    """2-D transposed convolution ("deconvolution"), as ``torch.nn.functional.conv_transpose2d``.

    Note torch's argument order: ``groups`` comes before ``dilation``.

    Parameters
    ----------
    input: ``(N, C_in, H, W)`` floating-point tensor.
    weight: ``(C_in, C_out / groups, kh, kw)``.
    bias: optional ``(C_out,)``.
    stride, dilation: int or pair, >= 1.
    padding: int or pair >= 0, removed from both sides of the output.
    output_padding: int or pair added to the bottom/right of the output; must be smaller than stride or
        than dilation (per dimension).
    groups: splits channels into ``groups`` independent transposed convolutions.

    Returns
    -------
    ``(N, C_out, H_out, W_out)`` with ``H_out = (H - 1) s - 2 p + d (kh - 1) + output_padding + 1``.
    """
    op = "conv_transpose2d"
    _check_operands(op, input, weight)
    stride = _pair(op, stride, "stride", 1)
    dilation = _pair(op, dilation, "dilation", 1)
    groups = _groups(op, groups)
    if isinstance(padding, str):
        raise ValueError(
            f"{op}: padding must be an int or a pair of ints ('same'/'valid' exist only for conv2d), got {padding!r}"
        )
    pad = _pair(op, padding, "padding", 0)
    out_pad = _pair(op, output_padding, "output_padding", 0)
    for dim in range(2):
        if out_pad[dim] >= max(stride[dim], dilation[dim]):
            raise ValueError(
                f"{op}: output_padding must be smaller than either stride or dilation in each dimension, "
                f"got output_padding={output_padding!r} with stride={stride}, dilation={dilation}"
            )
    n, c, h, w = input.shape
    ci, cog, kh, kw = weight.shape
    if c % groups:
        raise ValueError(f"{op}: input channels ({c}) must be divisible by groups ({groups})")
    if ci != c:
        raise ValueError(
            f"{op}: weight of shape {weight.shape} expects {ci} input channels (dim 0 = C_in), "
            f"but input has {c} (shape {input.shape})"
        )
    out_hw = tuple(
        (size - 1) * s - 2 * p + d * (k - 1) + op_ + 1
        for size, k, s, p, d, op_ in zip((h, w), (kh, kw), stride, pad, dilation, out_pad)
    )
    if out_hw[0] < 1 or out_hw[1] < 1:
        raise ValueError(
            f"{op}: output size would be {out_hw[0]}x{out_hw[1]} for input size {h}x{w}, kernel {kh}x{kw}, "
            f"stride={stride}, padding={padding!r}, output_padding={output_padding!r}, dilation={dilation}; "
            "it must be at least 1x1 (padding removes more than the transposed convolution produces)"
        )
    _check_bias(op, bias, cog * groups, input)
    output_shape = (n, cog * groups, out_hw[0], out_hw[1])
    return ConvTranspose2d.apply(
        input, weight, bias, stride=stride, padding=pad, dilation=dilation, groups=groups, output_shape=output_shape
    )

