"""Element-wise arithmetic and maths with NumPy broadcasting: ``+ - * / **``, matmul, exp, log, ...

Gradients of broadcast inputs are summed back to the input shape by the autograd engine (``unbroadcast``),
so backward functions here return full-shape gradients.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from ._utils import as_tensor_like, first_tensor

__all__ = [
    "add",
    "sub",
    "mul",
    "div",
    "pow",
    "neg",
    "matmul",
    "exp",
    "log",
    "sqrt",
    "abs",
    "clamp",
    "where",
    "maximum",
    "minimum",
    "cast",
]


def _binary_operands(a, b) -> tuple[Tensor, Tensor]:
    like = first_tensor(a, b)
    return as_tensor_like(a, like, "input"), as_tensor_like(b, like, "other")


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, -g


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a if ctx.needs_input_grad[1] else None, b if ctx.needs_input_grad[0] else None)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        return (g * b if b is not None else None), (g * a if a is not None else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        out = a / b
        ctx.save_for_backward(b, out if ctx.needs_input_grad[1] else None)
        return out

    @staticmethod
    def backward(ctx, g):
        b, out = ctx.saved
        ga = g / b if ctx.needs_input_grad[0] else None
        gb = -g * out / b if ctx.needs_input_grad[1] else None
        return ga, gb


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        out = a**b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        a, b, out = ctx.saved
        ga = g * b * a ** (b - 1) if ctx.needs_input_grad[0] else None
        gb = None
        if ctx.needs_input_grad[1]:
            # d(a^b)/db = a^b log(a); defined as 0 where a == 0 (torch's convention) to avoid 0 * -inf.
            safe_log = xp.log(xp.where(a > 0, a, xp.ones_like(a)))
            gb = xp.where(a > 0, g * out * safe_log, xp.zeros_like(out))
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class MatMul(Function):
    """``a @ b`` with NumPy matmul semantics (1-D operands promoted and the added axis removed again)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        a, b = ctx.saved
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, axis=-2)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, axis=-1)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = xp.matmul(g2, xp.swapaxes(b2, -1, -2))
            ga = ga.reshape(ga.shape[:-2] + (ga.shape[-1],)) if a.ndim == 1 else ga
            ga = _sum_leading(xp, ga, a.shape)
        if ctx.needs_input_grad[1]:
            gb = xp.matmul(xp.swapaxes(a2, -1, -2), g2)
            gb = gb.reshape(gb.shape[:-1]) if b.ndim == 1 else gb
            gb = _sum_leading(xp, gb, b.shape)
        return ga, gb


def _sum_leading(xp, grad, shape):
    # matmul broadcasts batch dims; the engine's unbroadcast handles size-1 dims, but a 1-D operand's gradient
    # may still carry batch dims in front that must be summed away.
    extra = grad.ndim - len(shape)
    return xp.sum(grad, axis=tuple(range(extra))) if extra > 0 else grad


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = ctx.xp.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        return g * out


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        return g / a


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        out = ctx.xp.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        return g / (2 * out)


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.abs(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        return g * ctx.xp.sign(a)


class Clamp(Function):
    @staticmethod
    def forward(ctx, a, *, min, max):
        xp = ctx.xp
        inside = xp.ones(a.shape, dtype=bool)
        out = a
        if min is not None:
            inside &= a >= min
            out = xp.maximum(out, xp.asarray(min, dtype=a.dtype))
        if max is not None:
            inside &= a <= max
            out = xp.minimum(out, xp.asarray(max, dtype=a.dtype))
        ctx.save_for_backward(inside)
        return out

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved
        return g * inside


class Where(Function):
    @staticmethod
    def forward(ctx, condition, a, b):
        ctx.save_for_backward(condition)
        return ctx.xp.where(condition, a, b)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        (condition,) = ctx.saved
        zero = xp.zeros_like(g)
        return None, xp.where(condition, g, zero), xp.where(condition, zero, g)


class Maximum(Function):
    @staticmethod
    def forward(ctx, a, b):
        xp = ctx.xp
        ctx.save_for_backward(a, b)
        return xp.maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        # Ties split the gradient equally, as torch does.
        wa = (a > b) + 0.5 * (a == b)
        return g * wa, g * (1 - wa)


class Minimum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        wa = (a < b) + 0.5 * (a == b)
        return g * wa, g * (1 - wa)


class Cast(Function):
    @staticmethod
    def forward(ctx, a, *, dtype):
        ctx.source_dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.source_dtype)


def add(input, other, *, alpha=1) -> Tensor:
    """``input + alpha * other`` with broadcasting."""
    a, b = _binary_operands(input, other)
    if alpha != 1:
        b = mul(b, alpha)
    return Add.apply(a, b)


def sub(input, other, *, alpha=1) -> Tensor:
    """``input - alpha * other`` with broadcasting."""
    a, b = _binary_operands(input, other)
    if alpha != 1:
        b = mul(b, alpha)
    return Sub.apply(a, b)


def mul(input, other) -> Tensor:
    a, b = _binary_operands(input, other)
    return Mul.apply(a, b)


def div(input, other) -> Tensor:
    """True division (integer inputs give floating output, as in torch)."""
    a, b = _binary_operands(input, other)
    return Div.apply(a, b)


def pow(input, exponent) -> Tensor:
    a, b = _binary_operands(input, exponent)
    return Pow.apply(a, b)


def neg(input: Tensor) -> Tensor:
    return Neg.apply(input)


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """Matrix product with NumPy/torch ``matmul`` semantics, batch dimensions broadcast."""
    if input.ndim == 0 or other.ndim == 0:
        raise ValueError(f"matmul needs operands with at least 1 dimension, got shapes {input.shape} and {other.shape}")
    k_in = input.shape[-1]
    k_other = other.shape[0] if other.ndim == 1 else other.shape[-2]
    if k_in != k_other:
        raise ValueError(f"matmul: input shape {input.shape} and other shape {other.shape} do not align ({k_in} != {k_other})")
    return MatMul.apply(input, other)


def exp(input: Tensor) -> Tensor:
    return Exp.apply(input)


def log(input: Tensor) -> Tensor:
    return Log.apply(input)


def sqrt(input: Tensor) -> Tensor:
    return Sqrt.apply(input)


def abs(input: Tensor) -> Tensor:
    return Abs.apply(input)


def clamp(input: Tensor, min=None, max=None) -> Tensor:
    """Clip to ``[min, max]``; the gradient passes where ``min <= input <= max`` (torch's convention)."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    return Clamp.apply(input, min=min, max=max)


def where(condition: Tensor, input, other) -> Tensor:
    """Pick ``input`` where ``condition`` is true, else ``other``; condition must be a boolean Tensor."""
    if not isinstance(condition, Tensor):
        raise TypeError(f"where: condition must be a boolean Tensor, got {type(condition).__name__}")
    if condition.dtype != np.bool_:
        raise TypeError(f"where: condition must have dtype bool, got {condition.dtype}")
    like = first_tensor(input, other, condition)
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        like = Tensor(like.backend.asarray(0.0, dtype=np.float32), like.backend)
    a, b = as_tensor_like(input, like, "input"), as_tensor_like(other, like, "other")
    return Where.apply(condition, a, b)


def maximum(input: Tensor, other: Tensor) -> Tensor:
    a, b = _binary_operands(input, other)
    return Maximum.apply(a, b)


def minimum(input: Tensor, other: Tensor) -> Tensor:
    a, b = _binary_operands(input, other)
    return Minimum.apply(a, b)


def cast(input: Tensor, dtype) -> Tensor:
    """Differentiable dtype conversion (gradients are cast back to the input dtype)."""
    dtype = np.dtype(dtype)
    if dtype == input.dtype:
        return input
    return Cast.apply(input, dtype=dtype)
