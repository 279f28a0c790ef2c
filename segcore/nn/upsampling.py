"""``Upsample``: :func:`segcore.functional.interpolate` as a layer (torch's arguments and ``repr``)."""

from __future__ import annotations

import numbers

from .. import functional as F
from ..autograd import Tensor
from ..functional.resample import _MODES  # one source of truth for the supported modes
from .module import Module

__all__ = ["Upsample"]


class Upsample(Module):
    """Resize ``(N, C, H, W)`` inputs to ``size`` or by ``scale_factor`` (exactly one of the two).

    ``mode`` is ``'nearest'`` (default), ``'nearest-exact'``, ``'bilinear'`` or ``'area'``, as in
    :func:`segcore.functional.interpolate`; ``align_corners`` only applies to ``'bilinear'``.
    """

    def __init__(
        self,
        size: int | tuple[int, int] | None = None,
        scale_factor: float | tuple[float, float] | None = None,
        mode: str = "nearest",
        align_corners: bool | None = None,
        recompute_scale_factor: bool | None = None,
    ) -> None:
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ValueError(
                f"Upsample: exactly one of size and scale_factor must be given, got size={size!r}, "
                f"scale_factor={scale_factor!r}"
            )
        if mode not in _MODES:
            raise ValueError(f"Upsample: mode must be one of {_MODES}, got {mode!r}")
        if align_corners is not None and mode != "bilinear":
            raise ValueError(
                f"Upsample: align_corners only applies to mode 'bilinear', got mode={mode!r} "
                f"with align_corners={align_corners!r}"
            )
        if scale_factor is not None:
            values = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,)
            if not 1 <= len(values) <= 2 or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0 for v in values
            ):
                raise ValueError(f"Upsample: scale_factor must be a positive number or pair, got {scale_factor!r}")
            # torch stores floats, which is what its repr shows (scale_factor=2.0).
            scale_factor = tuple(float(v) for v in values) if len(values) > 1 else float(values[0])
        self.size = size
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input: Tensor) -> Tensor:
        return F.interpolate(
            input,
            size=self.size,
            scale_factor=self.scale_factor,
            mode=self.mode,
            align_corners=self.align_corners,
            recompute_scale_factor=self.recompute_scale_factor,
        )

    def extra_repr(self) -> str:
        if self.scale_factor is not None:
            info = f"scale_factor={self.scale_factor!r}"
        else:
            info = f"size={self.size!r}"
        return f"{info}, mode={self.mode!r}"
