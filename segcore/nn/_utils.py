"""Construction arguments shared by the layers: ``rng``, ``dtype``, ``backend`` and torch's int-or-pair sizes."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..backend import Backend, get_backend
from ..functional._utils import ntuple
from .parameter import Parameter

__all__ = ["Factory", "ntuple", "check_positive_int", "check_probability"]


class Factory:
    """Where a layer's tensors come from: random generator, floating dtype and backend.

    ``rng=None`` means a fresh ``np.random.default_rng()`` (unseeded, so weights differ run to run); pass a
    seeded generator for reproducible construction. ``dtype`` defaults to float32; ``backend=None`` is the
    default backend (NumPy unless changed with ``segcore.set_default_backend``).
    """

    def __init__(self, rng: np.random.Generator | None, dtype: Any, backend: str | Backend | None, layer: str) -> None:
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"{layer}: rng must be a numpy.random.Generator or None, got {type(rng).__name__}"
            )
        try:
            resolved = np.dtype(np.float32 if dtype is None else dtype)
        except TypeError:
            raise TypeError(f"{layer}: dtype must be a NumPy floating dtype, got {dtype!r}") from None
        if resolved.kind != "f":
            raise TypeError(f"{layer}: dtype must be floating point (float32 or float64), got {resolved}")
        self.rng = np.random.default_rng() if rng is None else rng
        self.dtype = resolved
        self.backend = get_backend(backend)

    def tensor(self, values: np.ndarray, dtype: Any = None) -> Tensor:
        """A plain (buffer) tensor holding ``values``."""
        array = np.asarray(values, dtype=self.dtype if dtype is None else dtype)
        return Tensor(self.backend.asarray(array), self.backend)

    def parameter(self, shape: tuple[int, ...], fill: float = 0.0) -> Parameter:
        """A parameter of ``shape`` filled with ``fill`` (layers then initialise it with ``segcore.nn.init``)."""
        return Parameter(self.tensor(np.full(shape, fill)))


def check_positive_int(value: Any, name: str, layer: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``, or a ValueError naming the layer and argument."""
    if not isinstance(value, (numbers.Integral, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{layer}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_probability(p: Any, layer: str) -> float:
    """A dropout probability in ``[0, 1]``."""
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{layer}: dropout probability p must be a number in [0, 1], got {p!r}")
    return float(p)
