"""Bilinear interpolation and its backward on CuPy arrays (``kernels/resample.cu``).

Source indices and weights per output row and column come from the reference's
:func:`segcore.kernels.resample.bilinear_source_weights` (torch's coordinate rules, computed on the host once per
call), so that the device and the reference pick the same pixels. Nearest modes are not overridden.
"""

from __future__ import annotations

import numpy as np

from segcore.kernels import resample as reference

from ._cuda import i64, launch, supported

__all__ = ["interpolate_bilinear", "interpolate_bilinear_backward", "KERNELS"]


def _tables(in_hw, out_hw, align_corners: bool, scales, dtype) -> tuple:
    import cupy

    tables = []
    for axis in range(2):
        i0, i1, w0, w1 = reference.bilinear_source_weights(
            in_hw[axis], out_hw[axis], align_corners, scales[axis], dtype
        )
        tables.append(
            (
                cupy.asarray(i0, dtype=cupy.int64),
                cupy.asarray(i1, dtype=cupy.int64),
                cupy.asarray(np.asarray(w0), dtype=dtype),
                cupy.asarray(np.asarray(w1), dtype=dtype),
            )
        )
    (r0, r1, wr0, wr1), (c0, c1, wc0, wc1) = tables
    return r0, r1, wr0, wr1, c0, c1, wc0, wc1


def interpolate_bilinear(xp, x, output_size, align_corners, scales):
    """torch's ``mode="bilinear"`` resize of ``x (..., H, W)`` to ``output_size``."""
    if not supported(x):
        return reference.interpolate_bilinear(xp, x, output_size, align_corners, scales)
    import cupy

    x = cupy.ascontiguousarray(x)
    h, w = (int(v) for v in x.shape[-2:])
    oh, ow = (int(v) for v in output_size)
    planes = int(np.prod(x.shape[:-2], dtype=np.int64))
    if h * w == 0 or oh * ow == 0 or planes == 0:
        # Nothing to gather from or into: the reference's (empty) matrix products give zeros.
        return cupy.zeros((*x.shape[:-2], oh, ow), dtype=x.dtype)
    out = cupy.empty((*x.shape[:-2], oh, ow), dtype=x.dtype)
    tables = _tables((h, w), (oh, ow), align_corners, scales, x.dtype)
    launch("resample", "bilinear_forward", x.dtype, out.size, (x, out, *tables, *i64(planes, h, w, oh, ow)))
    return out


def interpolate_bilinear_backward(xp, grad, input_size, align_corners, scales):
    """Gradient of :func:`interpolate_bilinear` for an input of spatial size ``input_size`` (atomic adds)."""
    if not supported(grad):
        return reference.interpolate_bilinear_backward(xp, grad, input_size, align_corners, scales)
    import cupy

    grad = cupy.ascontiguousarray(grad)
    h, w = (int(v) for v in input_size)
    oh, ow = (int(v) for v in grad.shape[-2:])
    planes = int(np.prod(grad.shape[:-2], dtype=np.int64))
    dx = cupy.zeros((*grad.shape[:-2], h, w), dtype=grad.dtype)
    if grad.size == 0 or dx.size == 0:
        return dx
    tables = _tables((h, w), (oh, ow), align_corners, scales, grad.dtype)
    launch("resample", "bilinear_backward", grad.dtype, grad.size, (grad, dx, *tables, *i64(planes, h, w, oh, ow)))
    return dx


KERNELS = {"interpolate_bilinear": interpolate_bilinear, "interpolate_bilinear_backward": interpolate_bilinear_backward}
