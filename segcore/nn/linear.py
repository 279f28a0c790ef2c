"""``Identity``, ``Linear`` and ``Flatten``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..backend import Backend
from . import init
from ._utils import Factory, check_positive_int
from .module import Module

__all__ = ["Identity", "Linear", "Flatten"]


class Identity(Module):
    """Returns its input unchanged; constructor arguments are accepted and ignored, as in torch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Any) -> Any:
        return input


class Linear(Module):
    """``y = x W^T + b`` over the last dimension (``weight`` is ``(out_features, in_features)``, as in torch).

    Initialised like torch: ``weight`` ~ kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)), and
    ``bias`` ~ U(-1/sqrt(in), 1/sqrt(in)), drawn from ``rng`` (a fresh unseeded generator when ``None``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rng: np.random.Generator | None = None,
        dtype: Any = None,
        backend: str | Backend | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features", "Linear", minimum=0)
        self.out_features = check_positive_int(out_features, "out_features", "Linear", minimum=0)
        factory = Factory(rng, dtype, backend, "Linear")
        self.weight = factory.parameter((self.out_features, self.in_features))
        if bias:
            self.bias = factory.parameter((self.out_features,))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(factory.rng)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Re-draw weight and bias with torch's default initialisation."""
        _reset_weight_and_bias(self.weight, self.bias, rng)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _reset_weight_and_bias(weight: Tensor, bias: Tensor | None, rng: np.random.Generator) -> None:
    # torch's reset_parameters for Linear and Conv: kaiming_uniform(a=sqrt(5)) + U(+-1/sqrt(fan_in)) bias.
    if weight.numel() == 0:
        return  # nothing to draw (torch also skips zero-element tensors)
    init.kaiming_uniform_(weight, a=math.sqrt(5), rng=rng)
    if bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound, rng=rng)


class Flatten(Module):
    """Flatten dimensions ``start_dim..end_dim`` into one (default: everything but the batch dimension)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Flatten: {name} must be an int, got {value!r}")
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: Tensor) -> Tensor:
        return F.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
