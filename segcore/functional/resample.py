"""Resizing with ``torch.nn.functional.interpolate`` semantics for ``(N, C, H, W)`` inputs."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..autograd import Function, Tensor
from .pool import adaptive_avg_pool2d

__all__ = ["interpolate"]

_MODES = ("nearest", "nearest-exact", "bilinear", "area")
# torch modes that are meaningful for other input ranks or not implemented here; named in the error.
_OTHER_TORCH_MODES = ("linear", "trilinear", "bicubic")


class InterpolateNearest(Function):
    @staticmethod
    def forward(ctx, x, *, output_size, scales, exact):
        ctx.name = "interpolate_nearest_exact" if exact else "interpolate_nearest"
        ctx.input_size, ctx.scales = x.shape[-2:], scales
        return ctx.kernel(ctx.name)(ctx.xp, x, output_size, scales)

    @staticmethod
    def backward(ctx, grad):
        return ctx.kernel(ctx.name + "_backward")(ctx.xp, grad, ctx.input_size, ctx.scales)


class InterpolateBilinear(Function):
    @staticmethod
    def forward(ctx, x, *, output_size, align_corners, scales):
        ctx.input_size, ctx.align_corners, ctx.scales = x.shape[-2:], align_corners, scales
        return ctx.kernel("interpolate_bilinear")(ctx.xp, x, output_size, align_corners, scales)

    @staticmethod
    def backward(ctx, grad):
        return ctx.kernel("interpolate_bilinear_backward")(
            ctx.xp, grad, ctx.input_size, ctx.align_corners, ctx.scales
        )


def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, bool)


def _pair_of(value, name: str, accept, expected: str) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"interpolate: {name} must have one entry per spatial dimension (2 for (N, C, H, W) input), "
                f"got {value!r}"
            )
        values = tuple(value)
    else:
        values = (value, value)
    if not all(accept(v) for v in values):
        raise TypeError(f"interpolate: {name} must be {expected} or a pair of them, got {value!r}")
    return values


def interpolate(
    input: Tensor,
    size=None,
    scale_factor=None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Tensor:
    """Resize ``(N, C, H, W)`` input to ``size`` or by ``scale_factor``, as ``torch.nn.functional.interpolate``.

    Modes: ``"nearest"`` (torch's legacy ``src = floor(dst * in / out)``), ``"nearest-exact"`` (pixel centres),
    ``"bilinear"`` (``align_corners`` False: half-pixel centres; True: corner pixels aligned) and ``"area"``
    (adaptive average pooling). With ``scale_factor`` the output size is ``floor(in * scale)`` and, unless
    ``recompute_scale_factor`` is True, source coordinates use ``1 / scale`` (torch's rule).
    """
    op = "interpolate"
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim != 4:
        raise ValueError(
            f"{op}: input must be 4-D (N, C, H, W) for 2-D resizing, got shape {input.shape} "
            "(1-D and 3-D resizing are not supported)"
        )
    if mode not in _MODES:
        if mode in _OTHER_TORCH_MODES:
            raise NotImplementedError(
                f"{op}: mode={mode!r} is not implemented for 4-D input; supported modes: {', '.join(_MODES)}"
            )
        raise ValueError(f"{op}: mode must be one of {', '.join(map(repr, _MODES))}, got {mode!r}")
    if mode == "bilinear":
        if align_corners is None:
            align_corners = False
        elif not isinstance(align_corners, (bool, np.bool_)):
            raise TypeError(f"{op}: align_corners must be a bool or None, got {align_corners!r}")
    elif align_corners is not None:
        raise ValueError(
            f"{op}: align_corners option can only be set with the interpolating modes "
            f"(linear | bilinear | bicubic | trilinear), got align_corners={align_corners!r} with mode={mode!r}"
        )
    if antialias:
        raise NotImplementedError(f"{op}: antialias=True is not implemented")
    if recompute_scale_factor is not None and not isinstance(recompute_scale_factor, (bool, np.bool_)):
        raise TypeError(f"{op}: recompute_scale_factor must be a bool or None, got {recompute_scale_factor!r}")

    in_size = input.shape[-2:]
    if size is not None and scale_factor is not None:
        raise ValueError(f"{op}: only one of size or scale_factor should be defined, got both")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError(f"{op}: recompute_scale_factor=True is not meaningful with an explicit size")
        output_size = tuple(int(v) for v in _pair_of(size, "size", _is_int, "an int"))
        scales = (None, None)
    elif scale_factor is not None:
        factors = tuple(float(v) for v in _pair_of(scale_factor, "scale_factor", _is_real, "a number"))
        if not all(math.isfinite(f) and f > 0 for f in factors):
            raise ValueError(f"{op}: scale_factor must be positive and finite, got {scale_factor!r}")
        output_size = tuple(math.floor(n * f) for n, f in zip(in_size, factors))
        # torch resizes "area" to the computed size and, when asked, forgets the user's scale likewise.
        scales = (None, None) if recompute_scale_factor or mode == "area" else factors
    else:
        raise ValueError(f"{op}: either size or scale_factor should be defined")
    if min(in_size) < 1 or min(output_size) < 1:
        raise ValueError(
            f"{op}: input and output sizes should be greater than 0, got input {tuple(in_size)} "
            f"and output {output_size}"
        )

    if mode == "area":
        return adaptive_avg_pool2d(input, output_size)
    if mode == "bilinear":
        if np.dtype(input.dtype).kind != "f":
            raise TypeError(f"{op}: mode='bilinear' needs a floating-point input, got dtype {input.dtype}")
        return InterpolateBilinear.apply(
            input, output_size=output_size, align_corners=bool(align_corners), scales=scales
        )
    return InterpolateNearest.apply(input, output_size=output_size, scales=scales, exact=mode == "nearest-exact")
