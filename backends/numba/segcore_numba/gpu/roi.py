"""RoIAlign and RoIPool on the GPU with torchvision's semantics (the reference kernels' docstrings state them).

Coordinates are computed in the input's scalar type, every integer converted explicitly, in torchvision's
operation order, so that sample positions and the floor/ceil/round decisions match the reference.

* RoIAlign forward: one thread per output bin, as torchvision's CUDA kernel.
* RoIAlign backward, default: one thread per output bin scatters each sample's gradient to its four bilinear
  neighbours with ``cuda.atomic.add`` (torchvision's CUDA kernel; fast, but the float sums run in a different
  order from run to run).
* RoIAlign backward, ``deterministic=True``: no atomics. RoIAlign is separable: the weight of input pixel
  ``(y, x)`` in bin ``(p, q)`` of RoI ``k`` is ``Ay[k, p, y] * Ax[k, q, x]``, both averaged 1-D bilinear weights.
  One thread per RoI builds ``Ay`` and ``Ax`` (sequentially, so deterministically) and the row/column range it
  touches; then one thread per input pixel gathers, over the RoIs of its image in a fixed order (sorted by
  batch index, stable), ``sum_p Ay[k, p, y] * sum_q Ax[k, q, x] * grad[k, c, p, q]``. The result is bitwise the
  same on every run.
* RoIPool: one thread per output bin scans its bin (first strict maximum above ``-FLT_MAX`` wins); the
  backward adds each bin's gradient to its argmax with atomics.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import numpy as np
from numba import cuda

from segcore.kernels import roi as reference

from . import _launch

__all__ = [
    "roi_align",
    "roi_align_backward",
    "roi_align_backward_deterministic",
    "roi_pool",
    "roi_pool_backward",
    "KERNELS",
]

# torchvision starts every RoIPool bin's running maximum at -FLT_MAX, for double input too.
_FLT_MAX = float(np.finfo(np.float32).max)
# RoIPool box corners beyond +-2^31 are clipped before the integer conversion (torchvision's int would overflow).
_INT_LIMIT = float(2**31)


@lru_cache(maxsize=None)
def _align_kernels(t: type):
    """RoIAlign kernels computing coordinates and sums in ``t``: (forward, atomic backward, axis weights,
    gather backward)."""

    @cuda.jit(device=True)
    def axis_geometry(lo, hi, scale, offset, aligned, pooled, sampling_ratio):
        """Start, bin size and samples per bin of one RoI along one axis (torchvision's roi_bin_grid)."""
        start = t(lo) * scale - offset
        size = (t(hi) * scale - offset) - start
        if not aligned and size < t(1):
            size = t(1)  # legacy mode: malformed RoIs are at least 1x1
        bin_size = size / t(pooled)
        if sampling_ratio > 0:
            grid = sampling_ratio
        else:
            grid = int(math.ceil(size / t(pooled)))  # numba-cuda's math.ceil returns a float
            if grid < 0:
                grid = 0  # possible with aligned=True: no samples at all
        return start, bin_size, grid

    @cuda.jit(device=True)
    def axis_sample(start, bin_size, grid, p, i, size):
        """``(inside, low, high, w_low, w_high)`` of sample ``i`` of bin ``p`` on an axis of ``size`` pixels."""
        coord = start + t(p) * bin_size + (t(i) + t(0.5)) * bin_size / t(grid)
        if not (coord >= t(-1) and coord <= t(size)):  # also false for NaN
            return False, 0, 0, t(0), t(0)
        if coord <= t(0):
            coord = t(0)
        low = int(math.floor(coord))
        if low >= size - 1:
            low = size - 1
            high = size - 1
            coord = t(low)
        else:
            high = low + 1
        frac = coord - t(low)
        return True, low, high, t(1) - frac, frac

    @cuda.jit
    def forward(data, rois, out, spatial_scale, aligned, sampling_ratio):
        c_, h, w = data.shape[1], data.shape[2], data.shape[3]
        ph, pw = out.shape[2], out.shape[3]
        total = out.shape[0] * c_ * ph * pw
        scale = t(spatial_scale)
        offset = t(0.5) if aligned else t(0)
        item = cuda.grid(1)
        step = cuda.gridsize(1)
        while item < total:
            q = item % pw
            p = (item // pw) % ph
            c = (item // (pw * ph)) % c_
            k = item // (pw * ph * c_)
            b = int(rois[k, 0])
            sh, bh, gh = axis_geometry(rois[k, 2], rois[k, 4], scale, offset, aligned, ph, sampling_ratio)
            sw, bw, gw = axis_geometry(rois[k, 1], rois[k, 3], scale, offset, aligned, pw, sampling_ratio)
            acc = t(0)
            for iy in range(gh):
                y_in, y0, y1, hy, ly = axis_sample(sh, bh, gh, p, iy, h)
                if not y_in:
                    continue
                for ix in range(gw):
                    x_in, x0, x1, hx, lx = axis_sample(sw, bw, gw, q, ix, w)
                    if not x_in:
                        continue
                    acc += (
                        hy * hx * data[b, c, y0, x0]
                        + hy * lx * data[b, c, y0, x1]
                        + ly * hx * data[b, c, y1, x0]
                        + ly * lx * data[b, c, y1, x1]
                    )
            count = gh * gw
            out[k, c, p, q] = acc / t(count) if count > 0 else t(0)
            item += step

    @cuda.jit
    def backward_atomic(grad, rois, dx, c_, h, w, spatial_scale, aligned, sampling_ratio):
        """``dx`` is the flat ``(N * C * H * W,)`` input gradient, zero-initialised."""
        ph, pw = grad.shape[2], grad.shape[3]
        total = grad.shape[0] * c_ * ph * pw
        scale = t(spatial_scale)
        offset = t(0.5) if aligned else t(0)
        item = cuda.grid(1)
        step = cuda.gridsize(1)
        while item < total:
            q = item % pw
            p = (item // pw) % ph
            c = (item // (pw * ph)) % c_
            k = item // (pw * ph * c_)
            sh, bh, gh = axis_geometry(rois[k, 2], rois[k, 4], scale, offset, aligned, ph, sampling_ratio)
            sw, bw, gw = axis_geometry(rois[k, 1], rois[k, 3], scale, offset, aligned, pw, sampling_ratio)
            count = gh * gw
            if count > 0:
                g = grad[k, c, p, q]
                base = (int(rois[k, 0]) * c_ + c) * h * w
                for iy in range(gh):
                    y_in, y0, y1, hy, ly = axis_sample(sh, bh, gh, p, iy, h)
                    if not y_in:
                        continue
                    for ix in range(gw):
                        x_in, x0, x1, hx, lx = axis_sample(sw, bw, gw, q, ix, w)
                        if not x_in:
                            continue
                        cuda.atomic.add(dx, base + y0 * w + x0, g * (hy * hx) / t(count))
                        cuda.atomic.add(dx, base + y0 * w + x1, g * (hy * lx) / t(count))
                        cuda.atomic.add(dx, base + y1 * w + x0, g * (ly * hx) / t(count))
                        cuda.atomic.add(dx, base + y1 * w + x1, g * (ly * lx) / t(count))
            item += step

    @cuda.jit
    def axis_weights(rois, lo_col, hi_col, spatial_scale, aligned, sampling_ratio, weights, support):
        """``weights[k, p, i]`` (zero-initialised): averaged 1-D bilinear weight of pixel ``i`` in bin ``p`` of
        RoI ``k``; ``support[k] = (first, last)`` pixel any sample touches (``(size, -1)`` if none)."""
        rois_, pooled, size = weights.shape
        scale = t(spatial_scale)
        offset = t(0.5) if aligned else t(0)
        k = cuda.grid(1)
        step = cuda.gridsize(1)
        while k < rois_:
            start, bin_size, grid = axis_geometry(
                rois[k, lo_col], rois[k, hi_col], scale, offset, aligned, pooled, sampling_ratio
            )
            first = size
            last = -1
            if grid > 0:
                norm = t(1) / t(grid)
                for p in range(pooled):
                    for i in range(grid):
                        inside, low, high, w_low, w_high = axis_sample(start, bin_size, grid, p, i, size)
                        if inside:
                            weights[k, p, low] += w_low * norm
                            weights[k, p, high] += w_high * norm
                            first = min(first, low)
                            last = max(last, high)
            support[k, 0] = first
            support[k, 1] = last
            k += step

    @cuda.jit
    def backward_gather(grad, order, image_start, ay, ax, y_support, x_support, dx):
        """One thread per input pixel; RoIs of its image in ``order[image_start[n]:image_start[n + 1]]``."""
        c_, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
        ph, pw = grad.shape[2], grad.shape[3]
        total = dx.shape[0] * c_ * h * w
        item = cuda.grid(1)
        step = cuda.gridsize(1)
        while item < total:
            x = item % w
            y = (item // w) % h
            c = (item // (w * h)) % c_
            n = item // (w * h * c_)
            acc = t(0)
            for s in range(image_start[n], image_start[n + 1]):
                k = order[s]
                if y < y_support[k, 0] or y > y_support[k, 1] or x < x_support[k, 0] or x > x_support[k, 1]:
                    continue
                for p in range(ph):
                    a = ay[k, p, y]
                    if a == 0:
                        continue
                    row = t(0)
                    for q in range(pw):
                        b = ax[k, q, x]
                        if b != 0:
                            row += b * grad[k, c, p, q]
                    acc += a * row
            dx[n, c, y, x] = acc
            item += step

    return forward, backward_atomic, axis_weights, backward_gather


@lru_cache(maxsize=None)
def _pool_kernels(t: type):
    """RoIPool forward computing box coordinates in ``t``."""

    @cuda.jit(device=True)
    def corner(coordinate, scale):
        """C's ``round(coordinate * scale)`` (halves away from zero), clipped to +-2^31, as an integer."""
        v = t(coordinate) * scale
        if v > t(_INT_LIMIT):
            v = t(_INT_LIMIT)
        elif v < t(-_INT_LIMIT):
            v = t(-_INT_LIMIT)
        whole = int(v)  # truncation towards zero
        frac = v - t(whole)
        if frac >= t(0.5):
            whole += 1
        elif frac <= t(-0.5):
            whole -= 1
        return whole

    @cuda.jit(device=True)
    def bin_range(start, end, p, pooled, size):
        """``[lo, hi)`` of bin ``p`` of the RoI rows (or columns) ``start..end`` inclusive, clamped to the map."""
        length = max(end - start + 1, 1)
        bin_size = t(length) / t(pooled)
        lo = int(math.floor(t(p) * bin_size)) + start
        hi = int(math.ceil((t(p) + t(1)) * bin_size)) + start
        return min(max(lo, 0), size), min(max(hi, 0), size)

    @cuda.jit
    def forward(data, rois, out, argmax, spatial_scale):
        c_, h, w = data.shape[1], data.shape[2], data.shape[3]
        ph, pw = out.shape[2], out.shape[3]
        total = out.shape[0] * c_ * ph * pw
        scale = t(spatial_scale)
        item = cuda.grid(1)
        step = cuda.gridsize(1)
        while item < total:
            q = item % pw
            p = (item // pw) % ph
            c = (item // (pw * ph)) % c_
            k = item // (pw * ph * c_)
            b = int(rois[k, 0])
            hs, he = bin_range(corner(rois[k, 2], scale), corner(rois[k, 4], scale), p, ph, h)
            ws, we = bin_range(corner(rois[k, 1], scale), corner(rois[k, 3], scale), q, pw, w)
            best = t(0) if (he <= hs or we <= ws) else t(-_FLT_MAX)
            best_index = -1
            for r in range(hs, he):
                for s in range(ws, we):
                    v = data[b, c, r, s]
                    if v > best:
                        best = v
                        best_index = r * w + s
            out[k, c, p, q] = best
            argmax[k, c, p, q] = best_index
            item += step

    return forward


@cuda.jit
def _roi_pool_scatter(grad, rois, argmax, dx, c_, plane):
    """``dx[(b_k * C + c) * H * W + argmax] += grad`` for every bin with an argmax (flat, zero-initialised dx)."""
    ph, pw = grad.shape[2], grad.shape[3]
    total = grad.shape[0] * c_ * ph * pw
    item = cuda.grid(1)
    step = cuda.gridsize(1)
    while item < total:
        q = item % pw
        p = (item // pw) % ph
        c = (item // (pw * ph)) % c_
        k = item // (pw * ph * c_)
        target = argmax[k, c, p, q]
        if target >= 0:
            cuda.atomic.add(dx, (int(rois[k, 0]) * c_ + c) * plane + target, grad[k, c, p, q])
        item += step


def roi_align(xp, input, rois, spatial_scale: float, output_size, sampling_ratio: int, aligned: bool):
    """RoIAlign forward: ``(N, C, H, W)`` input, ``(K, 5)`` rois -> ``(K, C, Ph, Pw)`` (torchvision semantics)."""
    if not _launch.supported(input):
        return reference.roi_align(xp, input, rois, spatial_scale, output_size, sampling_ratio, aligned)
    ph, pw = output_size
    out = xp.empty((rois.shape[0], input.shape[1], ph, pw), dtype=input.dtype)
    forward = _align_kernels(_launch.scalar_type(input.dtype))[0]
    args = (float(spatial_scale), bool(aligned), int(sampling_ratio))
    _launch.launch(forward, out.size, xp.ascontiguousarray(input), xp.ascontiguousarray(rois), out, *args)
    return out


def roi_align_backward(
    xp,
    grad,
    rois,
    input_shape,
    spatial_scale: float,
    output_size,
    sampling_ratio: int,
    aligned: bool,
    *,
    deterministic: bool = False,
):
    """Gradient of :func:`roi_align` with respect to its input, an array of ``input_shape``.

    By default atomic adds (run-to-run differences in the last bits); ``deterministic=True`` runs
    :func:`roi_align_backward_deterministic`, bitwise reproducible.
    """
    if deterministic:
        return roi_align_backward_deterministic(
            xp, grad, rois, input_shape, spatial_scale, output_size, sampling_ratio, aligned
        )
    if not _launch.supported(grad):
        return reference.roi_align_backward(
            xp, grad, rois, input_shape, spatial_scale, output_size, sampling_ratio, aligned
        )
    n, c, h, w = (int(v) for v in input_shape)
    dx = xp.zeros((n * c * h * w,), dtype=grad.dtype)
    backward = _align_kernels(_launch.scalar_type(grad.dtype))[1]
    args = (c, h, w, float(spatial_scale), bool(aligned), int(sampling_ratio))
    _launch.launch(backward, grad.size, xp.ascontiguousarray(grad), xp.ascontiguousarray(rois), dx, *args)
    return xp.reshape(dx, (n, c, h, w))


def roi_align_backward_deterministic(
    xp, grad, rois, input_shape, spatial_scale: float, output_size, sampling_ratio: int, aligned: bool
):
    """Gradient of :func:`roi_align` without atomics: the same inputs give bitwise the same result."""
    if not _launch.supported(grad):
        return reference.roi_align_backward(
            xp, grad, rois, input_shape, spatial_scale, output_size, sampling_ratio, aligned
        )
    n, c, h, w = (int(v) for v in input_shape)
    ph, pw = output_size
    k = int(rois.shape[0])
    _, _, axis_weights, gather = _align_kernels(_launch.scalar_type(grad.dtype))
    rois = xp.ascontiguousarray(rois)
    args = (float(spatial_scale), bool(aligned), int(sampling_ratio))
    ay = xp.zeros((k, ph, h), dtype=grad.dtype)
    ax = xp.zeros((k, pw, w), dtype=grad.dtype)
    y_support = xp.empty((k, 2), dtype=xp.int64)
    x_support = xp.empty((k, 2), dtype=xp.int64)
    _launch.launch(axis_weights, k, rois, 2, 4, *args, ay, y_support)
    _launch.launch(axis_weights, k, rois, 1, 3, *args, ax, x_support)
    batch = xp.astype(rois[:, 0], xp.int64)
    order = xp.argsort(batch, stable=True)
    image_start = xp.searchsorted(batch[order], xp.arange(n + 1, dtype=xp.int64))
    dx = xp.empty((n, c, h, w), dtype=grad.dtype)
    _launch.launch(
        gather, dx.size, xp.ascontiguousarray(grad), order, image_start, ay, ax, y_support, x_support, dx
    )
    return dx


def roi_pool(xp, input, rois, spatial_scale: float, output_size):
    """RoIPool forward: ``(output (K, C, Ph, Pw), argmax (K, C, Ph, Pw) int64)`` (torchvision semantics)."""
    if not _launch.supported(input):
        return reference.roi_pool(xp, input, rois, spatial_scale, output_size)
    ph, pw = output_size
    shape = (rois.shape[0], input.shape[1], ph, pw)
    out = xp.empty(shape, dtype=input.dtype)
    argmax = xp.empty(shape, dtype=xp.int64)
    forward = _pool_kernels(_launch.scalar_type(input.dtype))
    rois = xp.ascontiguousarray(rois)
    _launch.launch(forward, out.size, xp.ascontiguousarray(input), rois, out, argmax, float(spatial_scale))
    return out, argmax


def roi_pool_backward(xp, grad, rois, argmax, input_shape):
    """Gradient of :func:`roi_pool`: each bin's gradient is added to its argmax pixel (none for argmax -1)."""
    if not _launch.supported(grad):
        return reference.roi_pool_backward(xp, grad, rois, argmax, input_shape)
    n, c, h, w = (int(v) for v in input_shape)
    dx = xp.zeros((n * c * h * w,), dtype=grad.dtype)
    args = (xp.ascontiguousarray(grad), xp.ascontiguousarray(rois), xp.ascontiguousarray(argmax), dx, c, h * w)
    _launch.launch(_roi_pool_scatter, grad.size, *args)
    return xp.reshape(dx, (n, c, h, w))


KERNELS: dict[str, Callable] = {
    "roi_align": roi_align,
    "roi_align_backward": roi_align_backward,
    "roi_pool": roi_pool,
    "roi_pool_backward": roi_pool_backward,
}
