"""Max pooling on the GPU: one thread per output scans its window; the backward scatters with atomics.

Semantics are the reference's (torch's): ties go to the first maximum in row-major window order, a NaN wins
over numbers (the last NaN in window order), padding never wins, and the index of a window that never finds a
value above -inf is its first tap outside the top/left padding. Indices are flat ``h * W + w`` per plane, int64.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

from numba import cuda

from segcore.kernels import pool as reference

from . import _launch

__all__ = ["max_pool2d", "max_pool2d_backward", "KERNELS"]


@lru_cache(maxsize=None)
def _max_pool(t: type):
    """The max-pool kernel comparing in ``t``, the data's own type."""

    @cuda.jit
    def max_pool(x, out, indices, kh, kw, sh, sw, ph, pw, dh, dw):
        c_, h, w = x.shape[1], x.shape[2], x.shape[3]
        oh, ow = out.shape[2], out.shape[3]
        total = out.shape[0] * c_ * oh * ow
        item = cuda.grid(1)
        step = cuda.gridsize(1)
        while item < total:
            oz = item % ow
            oy = (item // ow) % oh
            c = (item // (ow * oh)) % c_
            n = item // (ow * oh * c_)
            r0 = oy * sh - ph
            c0 = oz * sw - pw
            # torch's scan starts at the first tap that is not left/top padding.
            first_r = r0
            if first_r < 0:
                first_r += ((-first_r + dh - 1) // dh) * dh
            first_c = c0
            if first_c < 0:
                first_c += ((-first_c + dw - 1) // dw) * dw
            best = t(-math.inf)
            best_index = first_r * w + first_c
            for i in range(kh):
                r = r0 + i * dh
                if r < 0 or r >= h:
                    continue  # padding (-inf) never beats the running maximum
                for j in range(kw):
                    q = c0 + j * dw
                    if q < 0 or q >= w:
                        continue
                    v = x[n, c, r, q]
                    if v > best or v != v:
                        best = v
                        best_index = r * w + q
            out[n, c, oy, oz] = best
            indices[n, c, oy, oz] = best_index
            item += step

    return max_pool


@cuda.jit
def _scatter_planes(grad, indices, dx, plane):
    """``dx[p * plane + indices[p, e]] += grad[p, e]`` for in-plane indices (windows all padding are dropped)."""
    planes, per_plane = grad.shape
    total = planes * per_plane
    item = cuda.grid(1)
    step = cuda.gridsize(1)
    while item < total:
        p = item // per_plane
        e = item - p * per_plane
        target = indices[p, e]
        if 0 <= target < plane:
            cuda.atomic.add(dx, p * plane + target, grad[p, e])
        item += step


def max_pool2d(xp, x, kernel_size, stride, padding, dilation, ceil_mode):
    """Max pooling of ``x (N, C, H, W)``; returns ``(output, indices)`` (see the module docstring)."""
    if not _launch.supported(x):
        return reference.max_pool2d(xp, x, kernel_size, stride, padding, dilation, ceil_mode)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    n, c, h, w = x.shape
    oh = reference.pool_output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = reference.pool_output_size(w, kw, sw, pw, dw, ceil_mode)
    out = xp.empty((n, c, oh, ow), dtype=x.dtype)
    indices = xp.empty((n, c, oh, ow), dtype=xp.int64)
    kernel = _max_pool(_launch.scalar_type(x.dtype))
    _launch.launch(kernel, out.size, xp.ascontiguousarray(x), out, indices, kh, kw, sh, sw, ph, pw, dh, dw)
    return out, indices


def max_pool2d_backward(xp, grad, indices, input_shape):
    """Gradient of :func:`max_pool2d`: each output's gradient is added to its argmax.

    Atomic adds: a pixel that is the argmax of three or more windows may get its sum in a different order
    from run to run (two addends commute exactly).
    """
    if not _launch.supported(grad):
        return reference.max_pool2d_backward(xp, grad, indices, input_shape)
    n, c, h, w = (int(v) for v in input_shape)
    per_plane = int(grad.shape[2]) * int(grad.shape[3])
    dx = xp.zeros((n * c * h * w,), dtype=grad.dtype)
    flat_grad = xp.reshape(xp.ascontiguousarray(grad), (n * c, per_plane))
    flat_indices = xp.reshape(xp.ascontiguousarray(indices), (n * c, per_plane))
    _launch.launch(_scatter_planes, n * c * per_plane, flat_grad, flat_indices, dx, h * w)
    return xp.reshape(dx, (n, c, h, w))


KERNELS: dict[str, Callable] = {
    "max_pool2d": max_pool2d,
    "max_pool2d_backward": max_pool2d_backward,
}
