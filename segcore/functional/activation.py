"""Activations, softmax and dropout with ``torch.nn.functional`` names, arguments and gradient conventions.

At kinks the gradient follows torch: relu passes nothing at 0, relu6 and hardsigmoid pass only strictly
inside their linear range, leaky_relu and elu use the negative branch at 0. Dropout masks come from an
explicit ``numpy.random.Generator`` (never the global RNG), drawn on the host and moved to the backend.

The ``inplace`` arguments of torch's activations are not offered: ops here always return a new tensor.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..autograd import Function, Tensor
from ._utils import check_floating
from .reduction import normalize_dims

__all__ = [
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "gelu",
    "sigmoid",
    "tanh",
    "silu",
    "hardsigmoid",
    "hardswish",
    "softmax",
    "log_softmax",
    "dropout",
    "dropout2d",
]


def _stable_sigmoid(xp, x):
    # exp(-|x|) never overflows; the two algebraically equal branches are each exact on their side.
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        out = ctx.xp.maximum(x, 0.0)
        # The output is enough for backward (out > 0 exactly where x > 0): x itself need not be kept.
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        return g * (out > 0)


class ReLU6(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.clip(x, 0.0, 6.0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * ((x > 0) & (x < 6))


class LeakyReLU(Function):
    @staticmethod
    def forward(ctx, x, *, negative_slope):
        ctx.negative_slope = negative_slope
        ctx.save_for_backward(x)
        return ctx.xp.where(x > 0, x, x * negative_slope)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return ctx.xp.where(x > 0, g, g * ctx.negative_slope)


class ELU(Function):
    @staticmethod
    def forward(ctx, x, *, alpha):
        xp = ctx.xp
        # expm1 of the clamped input: exact near 0 and no overflow warning for large positive x.
        out = xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0.0)))
        ctx.alpha = alpha
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved
        # d/dx alpha (e^x - 1) = alpha e^x = out + alpha on the negative branch.
        return ctx.xp.where(x > 0, g, g * (out + ctx.alpha))


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_CUBIC = 0.044715


class GELU(Function):
    @staticmethod
    def forward(ctx, x):
        xp = ctx.xp
        # Phi(x) = erfc(-x / sqrt 2) / 2 keeps full relative precision in the far negative tail.
        cdf = 0.5 * ctx.kernel("erfc")(xp, -x * _SQRT_HALF)
        ctx.save_for_backward(x, cdf)
        return x * cdf

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        x, cdf = ctx.saved
        pdf = _INV_SQRT_2PI * xp.exp(-0.5 * x * x)
        return g * (cdf + x * pdf)


class GELUTanh(Function):
    @staticmethod
    def forward(ctx, x):
        xp = ctx.xp
        t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_TANH_CUBIC * x * x * x))
        ctx.save_for_backward(x, t)
        return 0.5 * x * (1.0 + t)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved
        inner_grad = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_CUBIC * x * x)
        return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * inner_grad)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        out = _stable_sigmoid(ctx.xp, x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        return g * out * (1.0 - out)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        out = ctx.xp.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        return g * (1.0 - out * out)


class SiLU(Function):
    @staticmethod
    def forward(ctx, x):
        s = _stable_sigmoid(ctx.xp, x)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved
        return g * s * (1.0 + x * (1.0 - s))


class Hardsigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.clip(x + 3.0, 0.0, 6.0) / 6.0

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * ((x > -3) & (x < 3)) / 6.0


class Hardswish(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * ctx.xp.clip(x + 3.0, 0.0, 6.0) / 6.0

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        (x,) = ctx.saved
        # torch's branches: 0 below -3, x/3 + 1/2 on [-3, 3], 1 above 3.
        slope = xp.where(x < -3, 0.0, xp.where(x <= 3, x / 3.0 + 0.5, 1.0))
        return g * slope.astype(g.dtype)


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, *, axis):
        xp = ctx.xp
        # Subtracting the max makes every exponent <= 0: no overflow for logits of any magnitude.
        e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
        out = e / xp.sum(e, axis=axis, keepdims=True)
        ctx.axis = axis
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        return out * (g - ctx.xp.sum(g * out, axis=ctx.axis, keepdims=True))


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, *, axis):
        xp = ctx.xp
        shifted = x - xp.max(x, axis=axis, keepdims=True)
        out = shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
        ctx.axis = axis
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        (out,) = ctx.saved
        return g - xp.exp(out) * xp.sum(g, axis=ctx.axis, keepdims=True)


class Dropout(Function):
    """Multiply by a fixed mask (0 or ``1/(1-p)`` per element, channel, ...) built on the host."""

    @staticmethod
    def forward(ctx, x, *, mask):
        scaled = ctx.backend.asarray(mask.astype(x.dtype))
        ctx.save_for_backward(scaled)
        return x * scaled

    @staticmethod
    def backward(ctx, g):
        (scaled,) = ctx.saved
        return g * scaled


# -- public API -----------------------------------------------------------------------------------------------
def _check(op: str, input) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    check_floating(input, f"{op}: input")


def _check_number(op: str, name: str, value) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{op}: {name} must be a finite number, got {value!r}")
    return float(value)


def relu(input: Tensor) -> Tensor:
    """``max(input, 0)``."""
    _check("relu", input)
    return ReLU.apply(input)


def relu6(input: Tensor) -> Tensor:
    """``min(max(input, 0), 6)``."""
    _check("relu6", input)
    return ReLU6.apply(input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    """``input`` where positive, ``negative_slope * input`` elsewhere."""
    _check("leaky_relu", input)
    return LeakyReLU.apply(input, negative_slope=_check_number("leaky_relu", "negative_slope", negative_slope))


def elu(input: Tensor, alpha: float = 1.0) -> Tensor:
    """``input`` where positive, ``alpha * (exp(input) - 1)`` elsewhere."""
    _check("elu", input)
    return ELU.apply(input, alpha=_check_number("elu", "alpha", alpha))


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit ``x * Phi(x)``; ``approximate='tanh'`` uses torch's tanh approximation."""
    _check("gelu", input)
    if approximate == "none":
        return GELU.apply(input)
    if approximate == "tanh":
        return GELUTanh.apply(input)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def sigmoid(input: Tensor) -> Tensor:
    """Logistic function ``1 / (1 + exp(-input))``, computed without overflow."""
    _check("sigmoid", input)
    return Sigmoid.apply(input)


def tanh(input: Tensor) -> Tensor:
    """Hyperbolic tangent."""
    _check("tanh", input)
    return Tanh.apply(input)


def silu(input: Tensor) -> Tensor:
    """Sigmoid-weighted linear unit (swish) ``input * sigmoid(input)``."""
    _check("silu", input)
    return SiLU.apply(input)


def hardsigmoid(input: Tensor) -> Tensor:
    """Piecewise-linear sigmoid ``relu6(input + 3) / 6`` (MobileNetV3)."""
    _check("hardsigmoid", input)
    return Hardsigmoid.apply(input)


def hardswish(input: Tensor) -> Tensor:
    """``input * relu6(input + 3) / 6`` (MobileNetV3)."""
    _check("hardswish", input)
    return Hardswish.apply(input)


def _softmax_axis(op: str, input, dim) -> int:
    _check(op, input)
    if dim is None:
        raise ValueError(
            f"{op}: dim is required (torch's implicit choice of dim is deprecated); "
            f"pass e.g. dim=1 for the class axis of (N, K, H, W) logits"
        )
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have at least 1 dimension, got a 0-d tensor")
    return normalize_dims(dim, input.ndim, "dim")[0]


def softmax(input: Tensor, dim: int | None = None) -> Tensor:
    """``exp(input) / sum(exp(input), dim)``, stable for logits of any magnitude. ``dim`` is required."""
    return Softmax.apply(input, axis=_softmax_axis("softmax", input, dim))


def log_softmax(input: Tensor, dim: int | None = None) -> Tensor:
    """``log(softmax(input, dim))`` computed as ``input - logsumexp(input, dim)``. ``dim`` is required."""
    return LogSoftmax.apply(input, axis=_softmax_axis("log_softmax", input, dim))


def _dropout_mask(op: str, input, p, training, rng, mask_shape) -> np.ndarray | None:
    """The host-side scaled mask, or ``None`` when dropout is the identity (eval mode or ``p == 0``)."""
    _check(op, input)
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: p must be a probability in [0, 1], got {p!r}")
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{op}: training must be a bool, got {type(training).__name__}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"{op}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not training or p == 0:
        return None
    if rng is None:
        raise ValueError(
            f"{op}: training with p={p} needs an explicit random generator; "
            "pass rng=np.random.default_rng(seed) (segcore never uses the global NumPy RNG)"
        )
    if p == 1:
        # Everything dropped; the 1/(1-p) scale is undefined but would multiply only zeros (torch returns zeros).
        return np.zeros(mask_shape)
    keep = rng.random(mask_shape) >= p
    return keep * (1.0 / (1.0 - p))


def dropout(input: Tensor, p: float = 0.5, training: bool = True, *, rng: np.random.Generator | None = None) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)`` (inverted dropout).

    Identity when ``training`` is false or ``p == 0``. ``rng`` (a ``numpy.random.Generator``) is required
    otherwise: the same seed gives the same mask.
    """
    mask = _dropout_mask("dropout", input, p, training, rng, input.shape if isinstance(input, Tensor) else ())
    if mask is None:
        return input
    return Dropout.apply(input, mask=mask)


def dropout2d(
    input: Tensor, p: float = 0.5, training: bool = True, *, rng: np.random.Generator | None = None
) -> Tensor:
    """Zero whole channels of an ``(N, C, H, W)`` input with probability ``p``, scaling the rest by ``1/(1-p)``.

    Identity when ``training`` is false or ``p == 0``; ``rng`` is required otherwise (see :func:`dropout`).
    """
    if isinstance(input, Tensor) and input.ndim != 4:
        # A 3-D input is ambiguous in torch ((C, H, W) or (N, C, L)): refuse rather than guess.
        raise ValueError(
            f"dropout2d: input must be 4-D (N, C, H, W), got shape {input.shape}; add a batch dimension to a "
            "(C, H, W) input"
        )
    mask_shape = input.shape[:2] + (1, 1) if isinstance(input, Tensor) else ()
    mask = _dropout_mask("dropout2d", input, p, training, rng, mask_shape)
    if mask is None:
        return input
    return Dropout.apply(input, mask=mask)
