"""Numba CPU max pooling with indices and its backward (NCHW), with torch's semantics.

Same contracts as :mod:`segcore.kernels.pool`: the scan starts at the first window tap that is not left
padding, a value wins when it is larger than the running maximum or NaN, ties keep the first maximum in
row-major window order, and an index is ``h * W + w`` inside the input plane. Both kernels are parallel over
the ``N * C`` planes; the backward's scatter-add stays inside one plane, so it has no races and runs in a
fixed order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from segcore.kernels.pool import pool_output_size

__all__ = ["max_pool2d", "max_pool2d_backward", "KERNELS"]


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _max_pool(x, kh, kw, sh, sw, ph, pw, dh, dw, out, idx):
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for t in prange(n * c):
        b = t // c
        ch = t % c
        for i in range(oh):
            h0 = i * sh - ph
            h1 = min(h0 + (kh - 1) * dh + 1, h)
            while h0 < 0:
                h0 += dh
            for j in range(ow):
                w0 = j * sw - pw
                w1 = min(w0 + (kw - 1) * dw + 1, w)
                while w0 < 0:
                    w0 += dw
                best = -math.inf
                where = h0 * w + w0
                for ih in range(h0, h1, dh):
                    for iw in range(w0, w1, dw):
                        v = x[b, ch, ih, iw]
                        if v > best or math.isnan(v):
                            best = v
                            where = ih * w + iw
                out[b, ch, i, j] = best
                idx[b, ch, i, j] = where


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _scatter_planes(grad, indices, out):
    n, c, h, w = out.shape
    plane = h * w
    oh, ow = grad.shape[2], grad.shape[3]
    for t in prange(n * c):
        b = t // c
        ch = t % c
        # Sums in float64, as the reference's bincount, then one rounding per pixel.
        acc = np.zeros(plane, dtype=np.float64)
        for i in range(oh):
            for j in range(ow):
                k = indices[b, ch, i, j]
                # Windows lying entirely in padding carry an index outside the plane: they have no input.
                if 0 <= k < plane:
                    acc[k] += grad[b, ch, i, j]
        for k in range(plane):
            out[b, ch, k // w, k % w] = acc[k]


def max_pool2d(xp, x, kernel_size, stride, padding, dilation, ceil_mode):
    """Max pooling of ``x (N, C, H, W)``; returns ``(output, int64 indices)``."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    oh = pool_output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = pool_output_size(w, kw, sw, pw, dw, ceil_mode)
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    idx = np.empty((n, c, oh, ow), dtype=np.int64)
    _max_pool(x, int(kh), int(kw), int(sh), int(sw), int(ph), int(pw), int(dh), int(dw), out, idx)
    return out, idx


def max_pool2d_backward(xp, grad, indices, input_shape):
    """Gradient of :func:`max_pool2d`: each output's gradient goes to its argmax."""
    out = np.empty(tuple(int(v) for v in input_shape), dtype=grad.dtype)
    _scatter_planes(np.ascontiguousarray(grad), np.ascontiguousarray(indices, dtype=np.int64), out)
    return out


KERNELS = {"max_pool2d": max_pool2d, "max_pool2d_backward": max_pool2d_backward}
