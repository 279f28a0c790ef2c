"""Numba CPU bilinear resizing (NCHW), forward and backward, with torch's semantics.

The 1-D source indices and weights come from the reference's :func:`~segcore.kernels.resample.bilinear_source_weights`
(torch's coordinate rules, computed in torch's precision); the kernels then do the per-pixel work:

* forward: a gather of four neighbours per output pixel, parallel over (plane, output row);
* backward: the adjoint, as two separable passes so that each stays race-free in parallel: spread every
  gradient row over input columns (parallel over (plane, output row)), then spread the resulting rows over
  input rows (parallel over planes).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from segcore.kernels.resample import bilinear_source_weights

__all__ = ["interpolate_bilinear", "interpolate_bilinear_backward", "KERNELS"]


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _bilinear(x, y0, y1, wy0, wy1, x0, x1, wx0, wx1, out):
    planes, oh, ow = out.shape
    for t in prange(planes * oh):
        p = t // oh
        i = t % oh
        a = y0[i]
        b = y1[i]
        for j in range(ow):
            top = wx0[j] * x[p, a, x0[j]] + wx1[j] * x[p, a, x1[j]]
            bottom = wx0[j] * x[p, b, x0[j]] + wx1[j] * x[p, b, x1[j]]
            out[p, i, j] = wy0[i] * top + wy1[i] * bottom


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _spread_columns(g, x0, x1, wx0, wx1, rows):
    planes, oh, ow = g.shape
    for t in prange(planes * oh):
        p = t // oh
        i = t % oh
        rows[p, i, :] = 0
        for j in range(ow):
            v = g[p, i, j]
            rows[p, i, x0[j]] += wx0[j] * v
            rows[p, i, x1[j]] += wx1[j] * v


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _spread_rows(rows, y0, y1, wy0, wy1, dx):
    planes, oh, w = rows.shape
    for p in prange(planes):
        dx[p, :, :] = 0
        for i in range(oh):
            a = y0[i]
            b = y1[i]
            for k in range(w):
                dx[p, a, k] += wy0[i] * rows[p, i, k]
                dx[p, b, k] += wy1[i] * rows[p, i, k]


def _axis(in_size: int, out_size: int, align_corners: bool, scale, dtype):
    i0, i1, w0, w1 = bilinear_source_weights(in_size, out_size, align_corners, scale, dtype)
    # Weights in the array's dtype: the products then run in it, as the reference's interpolation matrices.
    return i0.astype(np.int64), i1.astype(np.int64), w0.astype(dtype), w1.astype(dtype)


def interpolate_bilinear(xp, x, output_size, align_corners, scales):
    """torch's ``mode="bilinear"`` resize of a floating ``x (N, C, H, W)`` to ``output_size``."""
    x = np.ascontiguousarray(x)
    *batch, h, w = x.shape
    oh, ow = (int(v) for v in output_size)
    rows = _axis(h, oh, align_corners, scales[0], x.dtype)
    cols = _axis(w, ow, align_corners, scales[1], x.dtype)
    out = np.empty((int(np.prod(batch)), oh, ow), dtype=x.dtype)
    _bilinear(x.reshape(-1, h, w), *rows, *cols, out)
    return out.reshape(tuple(batch) + (oh, ow))


def interpolate_bilinear_backward(xp, grad, input_size, align_corners, scales):
    """Gradient of :func:`interpolate_bilinear` for an input of spatial size ``input_size``."""
    grad = np.ascontiguousarray(grad)
    *batch, oh, ow = grad.shape
    h, w = (int(v) for v in input_size)
    rows = _axis(h, oh, align_corners, scales[0], grad.dtype)
    cols = _axis(w, ow, align_corners, scales[1], grad.dtype)
    planes = int(np.prod(batch))
    spread = np.empty((planes, oh, w), dtype=grad.dtype)
    _spread_columns(grad.reshape(planes, oh, ow), *cols, spread)
    dx = np.empty((planes, h, w), dtype=grad.dtype)
    _spread_rows(spread, *rows, dx)
    return dx.reshape(tuple(batch) + (h, w))


KERNELS = {"interpolate_bilinear": interpolate_bilinear, "interpolate_bilinear_backward": interpolate_bilinear_backward}
