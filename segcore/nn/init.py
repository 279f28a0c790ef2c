"""Parameter initialisers with ``torch.nn.init`` names and formulas, drawing from an explicit NumPy ``rng``.

Every function fills ``tensor`` in place (its ``data`` is replaced, outside autograd) and returns it. Values
are drawn in float64 with the given ``np.random.Generator`` and cast to the tensor's dtype and backend, so the
same seed gives the same weights on every backend.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.special import erfinv

from ..autograd import Tensor, no_grad

__all__ = [
    "calculate_gain",
    "constant_",
    "zeros_",
    "ones_",
    "uniform_",
    "normal_",
    "trunc_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "bilinear_kernel",
    "bilinear_upsampling_",
]

_LINEAR_GAIN = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


def _check_tensor(tensor: object, fn: str) -> Tensor:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{fn}: tensor must be a segcore Tensor, got {type(tensor).__name__}")
    if np.dtype(tensor.dtype).kind != "f":
        raise TypeError(f"{fn}: tensor must be floating point, got dtype {tensor.dtype}")
    return tensor


def _check_rng(rng: object, fn: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{fn}: rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), got {type(rng).__name__}"
        )
    return rng


def _fill(tensor: Tensor, values: np.ndarray) -> Tensor:
    with no_grad():
        tensor.data = tensor.backend.asarray(np.asarray(values, dtype=tensor.dtype).reshape(tensor.shape))
    return tensor


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for ``nonlinearity`` (torch's table: relu sqrt(2), tanh 5/3, selu 3/4, ...).

    ``param`` is leaky_relu's negative slope (default 0.01).
    """
    if nonlinearity in _LINEAR_GAIN or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, numbers.Real) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: param (negative slope) must be a number, got {param!r}")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    known = ", ".join((*_LINEAR_GAIN, "sigmoid", "tanh", "relu", "leaky_relu", "selu"))
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; expected one of {known}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """torch's fans: ``fan_in = shape[1] * receptive``, ``fan_out = shape[0] * receptive``.

    ``receptive`` is the product of the trailing (kernel) dimensions. For ``ConvTranspose2d`` weights
    ``(C_in, C_out / groups, kh, kw)`` this deliberately gives torch's (swapped-looking) values, so that
    initial weights have the same distribution as in torch.
    """
    if tensor.ndim < 2:
        raise ValueError(
            f"fan in and fan out need a tensor with at least 2 dimensions, got shape {tensor.shape}"
        )
    receptive = int(np.prod(tensor.shape[2:])) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _calculate_correct_fan(tensor: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill ``tensor`` with ``val``."""
    _check_tensor(tensor, "constant_")
    return _fill(tensor, np.full(tensor.shape, val, dtype=np.float64))


def zeros_(tensor: Tensor) -> Tensor:
    """Fill ``tensor`` with 0."""
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    """Fill ``tensor`` with 1."""
    return constant_(tensor, 1.0)


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, *, rng: np.random.Generator) -> Tensor:
    """Fill ``tensor`` with draws from U(a, b)."""
    _check_tensor(tensor, "uniform_")
    _check_rng(rng, "uniform_")
    if not a <= b:
        raise ValueError(f"uniform_: needs a <= b, got a={a!r}, b={b!r}")
    return _fill(tensor, rng.uniform(a, b, size=tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, *, rng: np.random.Generator) -> Tensor:
    """Fill ``tensor`` with draws from N(mean, std^2)."""
    _check_tensor(tensor, "normal_")
    _check_rng(rng, "normal_")
    if std < 0:
        raise ValueError(f"normal_: std must be >= 0, got {std!r}")
    return _fill(tensor, rng.normal(mean, std, size=tensor.shape))


def trunc_normal_(
    tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0, *, rng: np.random.Generator
) -> Tensor:
    """Fill with N(mean, std^2) truncated to ``[a, b]`` (absolute bounds, as in torch), by inverse CDF."""
    _check_tensor(tensor, "trunc_normal_")
    _check_rng(rng, "trunc_normal_")
    if std <= 0:
        raise ValueError(f"trunc_normal_: std must be > 0, got {std!r}")
    if not a < b:
        raise ValueError(f"trunc_normal_: needs a < b, got a={a!r}, b={b!r}")

    def cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    lo, hi = cdf((a - mean) / std), cdf((b - mean) / std)
    u = rng.uniform(lo, hi, size=tensor.shape)
    values = mean + std * math.sqrt(2.0) * erfinv(2 * u - 1)
    return _fill(tensor, np.clip(values, a, b))


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, *, rng: np.random.Generator) -> Tensor:
    """Glorot uniform: U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``."""
    _check_tensor(tensor, "xavier_uniform_")
    _check_rng(rng, "xavier_uniform_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _fill(tensor, rng.uniform(-bound, bound, size=tensor.shape))


def xavier_normal_(tensor: Tensor, gain: float = 1.0, *, rng: np.random.Generator) -> Tensor:
    """Glorot normal: N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    _check_tensor(tensor, "xavier_normal_")
    _check_rng(rng, "xavier_normal_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _fill(tensor, rng.normal(0.0, std, size=tensor.shape))


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    rng: np.random.Generator,
) -> Tensor:
    """He uniform: U(-b, b) with ``b = gain * sqrt(3 / fan)``, ``gain = calculate_gain(nonlinearity, a)``.

    ``a=sqrt(5)`` with the default nonlinearity is torch's default for Linear and Conv weights
    (``b = 1 / sqrt(fan_in)``).
    """
    _check_tensor(tensor, "kaiming_uniform_")
    _check_rng(rng, "kaiming_uniform_")
    fan = _calculate_correct_fan(tensor, mode)
    if fan == 0:
        raise ValueError(f"kaiming_uniform_: tensor of shape {tensor.shape} has a zero fan ({mode})")
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return _fill(tensor, rng.uniform(-bound, bound, size=tensor.shape))


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    rng: np.random.Generator,
) -> Tensor:
    """He normal: N(0, std^2) with ``std = gain / sqrt(fan)``, ``gain = calculate_gain(nonlinearity, a)``."""
    _check_tensor(tensor, "kaiming_normal_")
    _check_rng(rng, "kaiming_normal_")
    fan = _calculate_correct_fan(tensor, mode)
    if fan == 0:
        raise ValueError(f"kaiming_normal_: tensor of shape {tensor.shape} has a zero fan ({mode})")
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return _fill(tensor, rng.normal(0.0, std, size=tensor.shape))


def bilinear_kernel(size: int) -> np.ndarray:
    """The ``size x size`` bilinear interpolation filter used to initialise FCN's upsampling layers."""
    if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1:
        raise ValueError(f"bilinear_kernel: size must be a positive int, got {size!r}")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.arange(size, dtype=np.float64)
    filt = 1 - np.abs(og - center) / factor
    return np.outer(filt, filt)


def bilinear_upsampling_(weight: Tensor) -> Tensor:
    """Fill a ``ConvTranspose2d`` weight with bilinear interpolation (FCN's initialiser).

    ``weight`` is ``(C, C, k, k)`` (channel ``i`` maps to channel ``i`` with the bilinear kernel, other
    pairs 0) or ``(C, 1, k, k)`` for a depthwise (``groups=C``) transposed conv. With ``stride = k // 2``
    and ``padding = k // 4`` (e.g. k=4, stride 2, padding 1) the layer upsamples by bilinear interpolation.
    """
    _check_tensor(weight, "bilinear_upsampling_")
    if weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
        raise ValueError(
            f"bilinear_upsampling_: weight must be (C_in, C_out, k, k) with a square kernel, got shape {weight.shape}"
        )
    c_in, c_out, k, _ = weight.shape
    if c_out != 1 and c_in != c_out:
        raise ValueError(
            f"bilinear_upsampling_: weight must have C_in == C_out, or C_out == 1 (depthwise), got shape {weight.shape}"
        )
    values = np.zeros(weight.shape, dtype=np.float64)
    channels = np.arange(c_in)
    values[channels, 0 if c_out == 1 else channels] = bilinear_kernel(k)
    return _fill(weight, values)
