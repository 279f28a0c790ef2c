"""Bilinear resizing on the GPU, forward and backward.

The per-axis source maps (two indices and two weights per output row, and per output column) come from the
reference's :func:`~segcore.kernels.resample.bilinear_source_weights`, which reproduces torch's coordinate
arithmetic; they are O(H + W) numbers, computed on the host and copied over. The forward is one thread per
output pixel. The backward gathers instead of scattering: the maps are inverted on the host into a CSR list per
input row (and per input column) of the outputs that read it, and one thread per input pixel sums those
outputs' gradients, in a fixed order: deterministic, no atomics.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from numba import cuda

from segcore.kernels import resample as reference

from . import _launch

__all__ = ["interpolate_bilinear", "interpolate_bilinear_backward", "KERNELS"]


@cuda.jit
def _bilinear(x, out, r0, r1, rw0, rw1, c0, c1, cw0, cw1):
    """``out[.., y, z] = rw0[y] (cw0[z] x[r0, c0] + cw1[z] x[r0, c1]) + rw1[y] (cw0[z] x[r1, c0] + ...)``."""
    planes = out.shape[0]
    oh, ow = out.shape[1], out.shape[2]
    total = planes * oh * ow
    item = cuda.grid(1)
    step = cuda.gridsize(1)
    while item < total:
        z = item % ow
        y = (item // ow) % oh
        p = item // (ow * oh)
        top = cw0[z] * x[p, r0[y], c0[z]] + cw1[z] * x[p, r0[y], c1[z]]
        bottom = cw0[z] * x[p, r1[y], c0[z]] + cw1[z] * x[p, r1[y], c1[z]]
        out[p, y, z] = rw0[y] * top + rw1[y] * bottom
        item += step


@lru_cache(maxsize=None)
def _bilinear_backward(t: type):
    """The gather backward accumulating in ``t``."""

    @cuda.jit
    def bilinear_backward(grad, dx, row_start, row_out, row_weight, col_start, col_out, col_weight):
        """``dx[.., r, s] = sum_{rows of r} a * sum_{cols of s} b * grad[.., y, z]`` (separable adjoint)."""
        planes = dx.shape[0]
        h, w = dx.shape[1], dx.shape[2]
        total = planes * h * w
        item = cuda.grid(1)
        step = cuda.gridsize(1)
        while item < total:
            s = item % w
            r = (item // w) % h
            p = item // (w * h)
            acc = t(0)
            for e in range(row_start[r], row_start[r + 1]):
                y = row_out[e]
                partial = t(0)
                for f in range(col_start[s], col_start[s + 1]):
                    partial += col_weight[f] * grad[p, y, col_out[f]]
                acc += row_weight[e] * partial
            dx[p, r, s] = acc
            item += step

    return bilinear_backward


def _maps(in_size: int, out_size: int, align_corners: bool, scale, dtype):
    """torch's per-axis map: ``out[k] = w0[k] in[i0[k]] + w1[k] in[i1[k]]`` (NumPy arrays)."""
    i0, i1, w0, w1 = reference.bilinear_source_weights(in_size, out_size, align_corners, scale, dtype)
    return np.asarray(i0, dtype=np.int64), np.asarray(i1, dtype=np.int64), w0.astype(dtype), w1.astype(dtype)


def _inverse_map(in_size: int, out_size: int, align_corners: bool, scale, dtype):
    """CSR transpose of an axis map: for input ``i``, the outputs ``out[start[i]:start[i+1]]`` that read it and
    with which weights. Zero weights are left out; the two terms of an output that reads one pixel twice (the
    last pixel, or equal sizes) stay separate entries."""
    i0, i1, w0, w1 = _maps(in_size, out_size, align_corners, scale, dtype)
    source = np.concatenate([i0, i1])
    output = np.concatenate([np.arange(out_size), np.arange(out_size)]).astype(np.int64)
    weight = np.concatenate([w0, w1])
    keep = weight != 0
    source, output, weight = source[keep], output[keep], weight[keep]
    order = np.lexsort((output, source))  # by input, then by output: a fixed summation order
    start = np.searchsorted(source[order], np.arange(in_size + 1)).astype(np.int64)
    return start, output[order], weight[order]


def interpolate_bilinear(xp, x, output_size, align_corners, scales):
    """torch's ``mode="bilinear"`` resize of a floating ``x (N, C, H, W)`` to ``output_size``."""
    if not _launch.supported(x):
        return reference.interpolate_bilinear(xp, x, output_size, align_corners, scales)
    n, c, h, w = x.shape
    oh, ow = (int(v) for v in output_size)
    rows = [xp.asarray(a) for a in _maps(h, oh, align_corners, scales[0], x.dtype)]
    cols = [xp.asarray(a) for a in _maps(w, ow, align_corners, scales[1], x.dtype)]
    out = xp.empty((n * c, oh, ow), dtype=x.dtype)
    planes = xp.reshape(xp.ascontiguousarray(x), (n * c, h, w))
    _launch.launch(_bilinear, out.size, planes, out, *rows, *cols)
    return xp.reshape(out, (n, c, oh, ow))


def interpolate_bilinear_backward(xp, grad, input_size, align_corners, scales):
    """Gradient of :func:`interpolate_bilinear` for an input of spatial size ``input_size``."""
    if not _launch.supported(grad):
        return reference.interpolate_bilinear_backward(xp, grad, input_size, align_corners, scales)
    n, c, oh, ow = grad.shape
    h, w = (int(v) for v in input_size)
    rows = [xp.asarray(a) for a in _inverse_map(h, oh, align_corners, scales[0], grad.dtype)]
    cols = [xp.asarray(a) for a in _inverse_map(w, ow, align_corners, scales[1], grad.dtype)]
    dx = xp.empty((n * c, h, w), dtype=grad.dtype)
    planes = xp.reshape(xp.ascontiguousarray(grad), (n * c, oh, ow))
    kernel = _bilinear_backward(_launch.scalar_type(grad.dtype))
    _launch.launch(kernel, dx.size, planes, dx, *rows, *cols)
    return xp.reshape(dx, (n, c, h, w))


KERNELS: dict[str, Callable] = {
    "interpolate_bilinear": interpolate_bilinear,
    "interpolate_bilinear_backward": interpolate_bilinear_backward,
}
