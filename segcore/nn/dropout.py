"""``Dropout`` and ``Dropout2d``, each owning its random generator (segcore never uses the global RNG)."""

from __future__ import annotations

import numbers

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ._utils import check_probability
from .module import Module

__all__ = ["Dropout", "Dropout2d"]


class _DropoutNd(Module):
    def __init__(
        self,
        p: float = 0.5,
        inplace: bool = False,
        *,
        rng: np.random.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        layer = type(self).__name__
        self.p = check_probability(p, layer)
        if not isinstance(inplace, bool):
            raise TypeError(f"{layer}: inplace must be a bool, got {inplace!r}")
        self.inplace = inplace
        if rng is not None and seed is not None:
            raise ValueError(f"{layer}: pass either rng or seed, not both (got rng={rng!r}, seed={seed!r})")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"{layer}: rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
        if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"{layer}: seed must be a non-negative int or None, got {seed!r}")
        # The generator is state outside state_dict: masks are reproducible from construction, not from a file.
        self.rng = rng if rng is not None else np.random.default_rng(seed)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """Zero each element with probability ``p`` in training mode and scale the rest by ``1 / (1 - p)``.

    Identity in eval mode. Masks come from the layer's own ``numpy.random.Generator``: pass ``rng=`` (shared
    with other layers if you like) or ``seed=`` for reproducible masks; with neither, a fresh unseeded
    generator is used. ``inplace`` is accepted for torch compatibility; the result is always a new tensor.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training, rng=self.rng)


class Dropout2d(_DropoutNd):
    """Zero whole channels of ``(N, C, H, W)`` inputs with probability ``p`` (training mode only).

    Random generator as in :class:`Dropout` (``rng=`` or ``seed=``).
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout2d(input, self.p, self.training, rng=self.rng)
