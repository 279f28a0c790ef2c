"""Element-wise arithmetic and maths with NumPy broadcasting: ``+ - * / **``, matmul, exp, log, ...

Gradients of broadcast inputs are summed back to the input shape by the autograd engine (``unbroadcast``),
so backward functions here return full-shape gradients.
"""

from __future__ import annotations

import numbers

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


_DEFAULT_FLOAT = np.float32


def _is_float(x: Tensor) -> bool:
    return np.dtype(x.dtype).kind == "f"


def _operand(value, like: Tensor, name: str) -> Tensor:
    """A Tensor for ``value``; Python scalars are "weak" and take ``like``'s dtype, as in torch."""
    if (
        isinstance(value, (numbers.Integral, np.integer))
        and not isinstance(value, bool)
        and np.dtype(like.dtype) == np.bool_
    ):
        # bool tensor + 2 is int64 in torch; taking the tensor's dtype would turn 2 into True.
        return Tensor(like.backend.asarray(value, dtype=np.int64), like.backend)
    return as_tensor_like(value, like, name)


def promote_floating(*tensors: Tensor) -> tuple[Tensor, ...]:
    """torch's category rule: integer/bool tensors mixed with floating ones take the floating dtype.

    NumPy would promote int64 with float32 to float64; torch keeps float32. Floating tensors of different
    widths are left to NumPy's promotion (float32 with float64 gives float64 in both).
    """
    floats = [np.dtype(t.dtype) for t in tensors if _is_float(t)]
    if not floats or len(floats) == len(tensors):
        return tensors
    target = np.result_type(*floats)
    return tuple(t if _is_float(t) else cast(t, target) for t in tensors)


def _binary_operands(a, b) -> tuple[Tensor, Tensor]:
    like = first_tensor(a, b)
    return promote_floating(_operand(a, like, "input"), _operand(b, like, "other"))


def _floating(x: Tensor, op: str) -> Tensor:
    """Integer input to a transcendental op computes in the default float dtype, as torch does."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(x).__name__}")
    return x if _is_float(x) else cast(x, _DEFAULT_FLOAT)


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
        ctx.save_for_backward(a, b, out if ctx.needs_input_grad[1] else None)
        return out

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        a, b, out = ctx.saved
        ga = None
        if ctx.needs_input_grad[0]:
            # b * a^(b-1) is 0 * inf at a == 0, b == 0; torch defines the gradient as 0 wherever b == 0, which
            # the factor b gives once the exponent there is made harmless.
            ga = g * b * a ** xp.where(b == 0, xp.ones_like(b), b - 1)
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
        # Restore the (m, n) matrix axes a 1-D operand removed from the output; a reshape also covers the
        # vector @ vector case, where g is 0-d and expand_dims(g, -2) would be out of range.
        m = a.shape[-2] if a.ndim > 1 else 1
        n = b.shape[-1] if b.ndim > 1 else 1
        batch = g.shape[: g.ndim - (a.ndim > 1) - (b.ndim > 1)]
        g2 = g.reshape(tuple(batch) + (m, n))
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
        wa = ((a > b) + 0.5 * (a == b)).astype(g.dtype)
        return g * wa, g * (1 - wa)


class Minimum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        wa = ((a < b) + 0.5 * (a == b)).astype(g.dtype)
        return g * wa, g * (1 - wa)


class Cast(Function):
    @staticmethod
    def forward(ctx, a, *, dtype):
        ctx.source_dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.source_dtype)


def _check_number(value, op: str, name: str) -> None:
    if not isinstance(value, (numbers.Real, np.number)) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")


def add(input, other, *, alpha=1) -> Tensor:
    """``input + alpha * other`` with broadcasting; Python scalars are accepted on either side."""
    _check_number(alpha, "add", "alpha")
    a, b = _binary_operands(input, other)
    if alpha != 1:
        b = mul(b, alpha)
    return Add.apply(a, b)


def sub(input, other, *, alpha=1) -> Tensor:
    """``input - alpha * other`` with broadcasting; Python scalars are accepted on either side."""
    _check_number(alpha, "sub", "alpha")
    a, b = _binary_operands(input, other)
    if alpha != 1:
        b = mul(b, alpha)
    return Sub.apply(a, b)


def mul(input, other) -> Tensor:
    """Element-wise product with broadcasting."""
    a, b = _binary_operands(input, other)
    return Mul.apply(a, b)


def div(input, other) -> Tensor:
    """True division (integer inputs give float32 output, as in torch)."""
    a, b = _binary_operands(input, other)
    if not _is_float(a) and not _is_float(b):
        a, b = cast(a, _DEFAULT_FLOAT), cast(b, _DEFAULT_FLOAT)
    return Div.apply(a, b)


def pow(input, exponent) -> Tensor:
    """``input ** exponent`` element-wise with broadcasting."""
    a, b = _binary_operands(input, exponent)
    return Pow.apply(a, b)


def neg(input: Tensor) -> Tensor:
    """``-input``."""
    return Neg.apply(input)


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """Matrix product with NumPy/torch ``matmul`` semantics, batch dimensions broadcast.

    Like torch, both operands must have the same dtype (no silent promotion of float32 to float64).
    """
    for name, x in (("input", input), ("other", other)):
        if not isinstance(x, Tensor):
            raise TypeError(f"matmul: {name} must be a Tensor, got {type(x).__name__}")
    if input.ndim == 0 or other.ndim == 0:
        raise ValueError(
            f"matmul needs operands with at least 1 dimension, got shapes {input.shape} and {other.shape}"
        )
    if input.dtype != other.dtype:
        raise TypeError(f"matmul: input and other must have the same dtype, got {input.dtype} and {other.dtype}")
    k_in = input.shape[-1]
    k_other = other.shape[0] if other.ndim == 1 else other.shape[-2]
    if k_in != k_other:
        raise ValueError(
            f"matmul: input shape {input.shape} and other shape {other.shape} do not align ({k_in} != {k_other})"
        )
    return MatMul.apply(input, other)


def exp(input: Tensor) -> Tensor:
    """``e ** input``; integer input gives float32."""
    return Exp.apply(_floating(input, "exp"))


def log(input: Tensor) -> Tensor:
    """Natural logarithm; integer input gives float32."""
    return Log.apply(_floating(input, "log"))


def sqrt(input: Tensor) -> Tensor:
    """Square root; integer input gives float32."""
    return Sqrt.apply(_floating(input, "sqrt"))


def abs(input: Tensor) -> Tensor:
    """Absolute value; the gradient at 0 is 0, as in torch."""
    return Abs.apply(input)


def clamp(input: Tensor, min=None, max=None) -> Tensor:
    """Clip to ``[min, max]``; the gradient passes where ``min <= input <= max`` (torch's convention)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"clamp: input must be a Tensor, got {type(input).__name__}")
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    for name, bound in (("min", min), ("max", max)):
        if bound is not None:
            _check_number(bound, "clamp", name)
    if not _is_float(input) and any(isinstance(v, (float, np.floating)) for v in (min, max)):
        # A float bound on an integer tensor gives a float32 result in torch, not a truncated bound.
        input = cast(input, _DEFAULT_FLOAT)
    return Clamp.apply(input, min=min, max=max)


def where(condition: Tensor, input, other) -> Tensor:
    """Pick ``input`` where ``condition`` is true, else ``other``; condition must be a boolean Tensor."""
    if not isinstance(condition, Tensor):
        raise TypeError(f"where: condition must be a boolean Tensor, got {type(condition).__name__}")
    if condition.dtype != np.bool_:
        raise TypeError(f"where: condition must have dtype bool, got {condition.dtype}")
    like = first_tensor(input, other, condition)
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        # Two scalars: torch's default dtypes (int64 for ints, float32 as soon as one is a float).
        floating = any(isinstance(v, (float, np.floating)) for v in (input, other))
        like = Tensor(like.backend.asarray(0, dtype=_DEFAULT_FLOAT if floating else np.int64), like.backend)
    a, b = promote_floating(_operand(input, like, "input"), _operand(other, like, "other"))
    return Where.apply(condition, a, b)


def maximum(input: Tensor, other: Tensor) -> Tensor:
    """Element-wise maximum with broadcasting; ties split the gradient equally."""
    a, b = _binary_operands(input, other)
    return Maximum.apply(a, b)


def minimum(input: Tensor, other: Tensor) -> Tensor:
    """Element-wise minimum with broadcasting; ties split the gradient equally."""
    a, b = _binary_operands(input, other)
    return Minimum.apply(a, b)


def cast(input: Tensor, dtype) -> Tensor:
    """Differentiable dtype conversion (gradients are cast back to the input dtype)."""
    dtype = np.dtype(dtype)
    if dtype == input.dtype:
        return input
    return Cast.apply(input, dtype=dtype)
