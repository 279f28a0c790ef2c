"""Numba CPU RoIAlign and RoIPool, forward and backward, with torchvision's semantics.

Same contracts as :mod:`segcore.kernels.roi`; ``rois`` is ``(K, 5)`` ``(batch_index, x1, y1, x2, y2)``. Sample
positions, bins, clamping and rounding are computed per RoI in the input's scalar type with torchvision's
operation order. The feature map is read channels-last (``(N, H, W, C)``), so each bilinear sample or pooled
pixel is one contiguous C-vector and the innermost loops run over channels, where the compiler vectorises.

* forward kernels: parallel over RoIs; each RoI writes only its own output block;
* RoIAlign backward: parallel over bands of input rows of each image. A task visits the RoIs of its image in
  the given order and adds only the taps that land in its band, so there are no races and every sum runs in
  a fixed order: the result is bit-identical from run to run, whatever the number of threads (deterministic
  by construction; there is no atomic mode on the CPU);
* RoIPool backward: parallel over channels, each adding its bins' gradients at their argmax in RoI order.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["roi_align", "roi_align_backward", "roi_pool", "roi_pool_backward", "KERNELS"]

# Input-gradient rows one backward task owns. Any value gives the same bits (every element sums its RoIs in RoI
# order); 2 rows make enough tasks to balance the threads on small feature maps.
_BAND_ROWS = 2
_FLT_MAX = float(np.finfo(np.float32).max)


def _coord_dtype(dtype) -> type:
    # torchvision computes in the input's scalar type; float16 input is computed in float32 (as the reference).
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


@njit(cache=True, error_model="numpy")
def _align_box(rois, k, scale, aligned, ph, pw, sampling_ratio):
    """torchvision's per-RoI geometry: (start_h, start_w, bin_h, bin_w, grid_h, grid_w, count)."""
    t = rois.dtype.type
    offset = t(0.5) if aligned else t(0.0)
    start_w = rois[k, 1] * scale - offset
    start_h = rois[k, 2] * scale - offset
    roi_w = (rois[k, 3] * scale - offset) - start_w
    roi_h = (rois[k, 4] * scale - offset) - start_h
    if not aligned:
        # Legacy mode forces malformed RoIs to be at least 1x1.
        roi_w = max(roi_w, t(1.0))
        roi_h = max(roi_h, t(1.0))
    bin_h = roi_h / t(ph)
    bin_w = roi_w / t(pw)
    if sampling_ratio > 0:
        grid_h = sampling_ratio
        grid_w = sampling_ratio
    else:
        # ceil(size / pooled); zero or negative (possible with aligned=True) means "no samples".
        grid_h = max(int(np.ceil(roi_h / t(ph))), 0)
        grid_w = max(int(np.ceil(roi_w / t(pw))), 0)
    count = t(max(grid_h * grid_w, 1))
    return start_h, start_w, bin_h, bin_w, grid_h, grid_w, count


@njit(cache=True, error_model="numpy")
def _sample(coord, size):
    """Bilinear neighbours of one sample along one axis: (low, high, weight_low, weight_high, inside)."""
    t = type(coord)
    # Outside [-1, size] a sample weighs nothing; written so that NaN is outside too.
    if not (coord >= t(-1.0) and coord <= t(size)):
        return 0, 0, t(0.0), t(0.0), False
    if coord <= t(0.0):
        coord = t(0.0)
    low = int(coord)
    if low >= size - 1:
        low = size - 1
        high = size - 1
        coord = t(low)
    else:
        high = low + 1
    frac = coord - t(low)
    return low, high, t(1.0) - frac, frac, True


@njit(cache=True, error_model="numpy")
def _add_tap(index, weight, k, p, n, pixel, w):
    """Add weight ``w`` on ``pixel`` to bin ``p`` of RoI ``k``'s list of ``n`` taps; returns the new length."""
    for a in range(n):
        if index[k, p, a] == pixel:
            weight[k, p, a] += w
            return n
    index[k, p, n] = pixel
    weight[k, p, n] = w
    return n + 1


@njit(cache=True, error_model="numpy")
def _axis_taps(start, bin_size, grid, pooled, size, k, index, weight, count):
    """One RoI's bins along one axis as pixel taps: each bin's samples' bilinear weights, merged per pixel."""
    t = type(start)
    for p in range(pooled):
        n = 0
        for i in range(grid):
            # torchvision's operation order: start + p * bin + (i + .5) * bin / grid.
            coord = start + t(p) * bin_size + t(i + 0.5) * bin_size / t(grid)
            low, high, w_low, w_high, inside = _sample(coord, size)
            if inside:
                n = _add_tap(index, weight, k, p, n, low, w_low)
                n = _add_tap(index, weight, k, p, n, high, w_high)
        count[k, p] = n


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _align_taps(rois, scale, aligned, ph, pw, sampling_ratio, h, w, taps_h, taps_w):
    """Per RoI and bin, the rows and columns a RoIAlign bin reads and their summed sample weights.

    A bin's output is ``sum_(r, c) wy[r] * wx[c] * x[r, c] / count``: the average of its bilinear samples
    factorises into one list of rows and one of columns (each at most ``2 * grid`` long, usually 2-4
    pixels), so a bin reads each pixel it touches once instead of four times per sample.
    """
    y_index, y_weight, y_count, norm = taps_h
    x_index, x_weight, x_count = taps_w
    for k in prange(rois.shape[0]):
        start_h, start_w, bin_h, bin_w, grid_h, grid_w, count = _align_box(
            rois, k, scale, aligned, ph, pw, sampling_ratio
        )
        norm[k] = count
        _axis_taps(start_h, bin_h, grid_h, ph, h, k, y_index, y_weight, y_count)
        _axis_taps(start_w, bin_w, grid_w, pw, w, k, x_index, x_weight, x_count)


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _align_grids(rois, scale, aligned, ph, pw, sampling_ratio, grids):
    for k in prange(rois.shape[0]):
        _, _, _, _, grid_h, grid_w, _ = _align_box(rois, k, scale, aligned, ph, pw, sampling_ratio)
        grids[k, 0] = grid_h
        grids[k, 1] = grid_w


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _roi_align_forward(xt, rois, taps_h, taps_w, out):
    n, h, w, c = xt.shape
    y_index, y_weight, y_count, norm = taps_h
    x_index, x_weight, x_count = taps_w
    k_total, _, ph, pw = out.shape
    for k in prange(k_total):
        b = int(rois[k, 0])
        # Bins accumulate channels-last in a small block (cache-resident), which is then written out channel
        # by channel: storing each bin's channels straight into (C, Ph, Pw) strides through memory and was
        # measured 2-3x slower overall.
        block = np.empty((ph * pw, c), dtype=xt.dtype)
        for py in range(ph):
            for px in range(pw):
                acc = block[py * pw + px]
                acc[:] = 0
                for a in range(y_count[k, py]):
                    wy = y_weight[k, py, a]
                    row = xt[b, y_index[k, py, a]]
                    for e in range(x_count[k, px]):
                        tap = wy * x_weight[k, px, e]
                        pixel = row[x_index[k, px, e]]
                        for ch in range(c):
                            acc[ch] += tap * pixel[ch]
        dst = out[k].reshape(c, ph * pw)
        for ch in range(c):
            for q in range(ph * pw):
                dst[ch, q] = block[q, ch] / norm[k]


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _bins_channels_last(grad, norm, out):
    """``out[k, bin, :] = grad[k, :, bin] / count_k``: each bin's gradient as one contiguous C-vector."""
    k_total, c, ph, pw = grad.shape
    for k in prange(k_total):
        src = grad[k].reshape(c, ph * pw)
        for ch in range(c):
            for q in range(ph * pw):
                out[k, q, ch] = src[ch, q] / norm[k]


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _roi_align_backward(gt, rois, taps_h, taps_w, pw, band, dxt):
    n, h, w, c = dxt.shape
    y_index, y_weight, y_count, norm = taps_h
    x_index, x_weight, x_count = taps_w
    k_total, bins, _ = gt.shape
    ph = bins // pw
    bands = (h + band - 1) // band
    for task in prange(n * bands):
        b = task // bands
        y0 = (task % bands) * band
        y1 = min(h, y0 + band)
        for k in range(k_total):
            if int(rois[k, 0]) != b:
                continue
            for py in range(ph):
                for a in range(y_count[k, py]):
                    yy = y_index[k, py, a]
                    if yy < y0 or yy >= y1:
                        continue
                    wy = y_weight[k, py, a]
                    row = dxt[b, yy]
                    for px in range(pw):
                        g = gt[k, py * pw + px]
                        for e in range(x_count[k, px]):
                            tap = wy * x_weight[k, px, e]
                            pixel = row[x_index[k, px, e]]
                            for ch in range(c):
                                pixel[ch] += tap * g[ch]


def _channels_last(x, dtype):
    return np.ascontiguousarray(np.transpose(np.asarray(x, dtype=dtype), (0, 2, 3, 1)))


def _align_plan(rois, t, spatial_scale, output_size, sampling_ratio, aligned, h, w):
    """The RoIs in the coordinate type and the row / column taps of every bin (see :func:`_align_taps`)."""
    ph, pw = (int(v) for v in output_size)
    r = np.ascontiguousarray(rois, dtype=t)
    scale, sampling_ratio, aligned = t(spatial_scale), int(sampling_ratio), bool(aligned)
    k = r.shape[0]
    grids = np.empty((k, 2), dtype=np.int64)
    _align_grids(r, scale, aligned, ph, pw, sampling_ratio, grids)
    most = 2 * max(1, int(grids.max(initial=0)))
    # (pixel, weight, taps per bin) for rows and columns; the rows also carry each RoI's sample count.
    taps_h = (
        np.zeros((k, ph, most), np.int64), np.zeros((k, ph, most), t), np.zeros((k, ph), np.int64), np.empty(k, t)
    )
    taps_w = (np.zeros((k, pw, most), np.int64), np.zeros((k, pw, most), t), np.zeros((k, pw), np.int64))
    _align_taps(r, scale, aligned, ph, pw, sampling_ratio, h, w, taps_h, taps_w)
    return r, taps_h, taps_w


def roi_align(xp, input, rois, spatial_scale: float, output_size, sampling_ratio: int, aligned: bool):
    """RoIAlign forward: ``(N, C, H, W)`` input, ``(K, 5)`` rois -> ``(K, C, Ph, Pw)``."""
    n, c, h, w = input.shape
    ph, pw = (int(v) for v in output_size)
    t = _coord_dtype(input.dtype)
    k = rois.shape[0]
    if not (k and c and h and w):
        return np.zeros((k, c, ph, pw), dtype=input.dtype)
    r, taps_h, taps_w = _align_plan(rois, t, spatial_scale, output_size, sampling_ratio, aligned, h, w)
    out = np.empty((k, c, ph, pw), dtype=t)  # every element is written
    _roi_align_forward(_channels_last(input, t), r, taps_h, taps_w, out)
    return out.astype(input.dtype, copy=False)


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
    deterministic: bool = True,
):
    """Gradient of :func:`roi_align` with respect to its input, an array of ``input_shape``.

    Always deterministic: the same inputs give bitwise the same result on every run and thread count. The
    ``deterministic`` switch of the GPU backend is accepted so that one call works on both; this kernel has
    no atomic path for ``False`` to select.
    """
    n, c, h, w = (int(v) for v in input_shape)
    t = _coord_dtype(grad.dtype)
    dxt = np.zeros((n, h, w, c), dtype=t)
    if rois.shape[0] and c and h and w:
        r, taps_h, taps_w = _align_plan(rois, t, spatial_scale, output_size, sampling_ratio, aligned, h, w)
        k, _, ph, pw = grad.shape
        gt = np.empty((k, ph * pw, c), dtype=t)
        _bins_channels_last(np.ascontiguousarray(grad, dtype=t), taps_h[3], gt)
        _roi_align_backward(gt, r, taps_h, taps_w, pw, _BAND_ROWS, dxt)
    return np.ascontiguousarray(np.transpose(dxt, (0, 3, 1, 2))).astype(grad.dtype, copy=False)


# -- RoIPool ------------------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _round_half_away(v):
    """C's ``round``: halves go away from zero (NumPy's ``round`` goes to even)."""
    t = type(v)
    whole = np.trunc(v)
    frac = v - whole
    if abs(frac) >= t(0.5):
        return whole + (t(1.0) if v > 0 else t(-1.0))
    return whole


@njit(cache=True, error_model="numpy")
def _clip_int(v):
    # Values far outside any map are clipped before the int conversion (torchvision's int would overflow).
    t = type(v)
    return int(min(max(v, t(-(2.0**31))), t(2.0**31)))


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _roi_pool_forward(xt, rois, scale, ph, pw, floor_value, out, argmax):
    n, h, w, c = xt.shape
    k_total = rois.shape[0]
    t = rois.dtype.type
    for k in prange(k_total):
        b = int(rois[k, 0])
        x1 = _clip_int(_round_half_away(rois[k, 1] * scale))
        y1 = _clip_int(_round_half_away(rois[k, 2] * scale))
        x2 = _clip_int(_round_half_away(rois[k, 3] * scale))
        y2 = _clip_int(_round_half_away(rois[k, 4] * scale))
        bin_h = t(max(y2 - y1 + 1, 1)) / t(ph)
        bin_w = t(max(x2 - x1 + 1, 1)) / t(pw)
        best = np.empty(c, dtype=xt.dtype)
        where = np.empty(c, dtype=np.int64)
        for py in range(ph):
            hs = min(max(int(np.floor(t(py) * bin_h)) + y1, 0), h)
            he = min(max(int(np.ceil(t(py + 1) * bin_h)) + y1, 0), h)
            for px in range(pw):
                ws = min(max(int(np.floor(t(px) * bin_w)) + x1, 0), w)
                we = min(max(int(np.ceil(t(px + 1) * bin_w)) + x1, 0), w)
                if he <= hs or we <= ws:
                    for ch in range(c):
                        out[k, ch, py, px] = 0
                        argmax[k, ch, py, px] = -1
                    continue
                # torchvision's running max starts at -FLT_MAX: NaN and values <= -FLT_MAX are never picked.
                best[:] = floor_value
                where[:] = -1
                for yy in range(hs, he):
                    for xx in range(ws, we):
                        index = yy * w + xx
                        for ch in range(c):
                            v = xt[b, yy, xx, ch]
                            if v > best[ch]:
                                best[ch] = v
                                where[ch] = index
                for ch in range(c):
                    out[k, ch, py, px] = best[ch]
                    argmax[k, ch, py, px] = where[ch]


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _roi_pool_backward(grad, rois, argmax, dx):
    n, c, h, w = dx.shape
    k_total, _, ph, pw = grad.shape
    for ch in prange(c):
        for k in range(k_total):
            b = int(rois[k, 0])
            for py in range(ph):
                for px in range(pw):
                    a = argmax[k, ch, py, px]
                    if a >= 0:
                        dx[b, ch, a // w, a % w] += grad[k, ch, py, px]


def roi_pool(xp, input, rois, spatial_scale: float, output_size):
    """RoIPool forward: ``(output (K, C, Ph, Pw), argmax (K, C, Ph, Pw) int64)``; argmax ``h * W + w``, -1 if empty."""
    n, c, h, w = input.shape
    ph, pw = (int(v) for v in output_size)
    t = _coord_dtype(input.dtype)
    k = rois.shape[0]
    out = np.zeros((k, c, ph, pw), dtype=t)
    argmax = np.full((k, c, ph, pw), -1, dtype=np.int64)
    if k and c:
        r = np.ascontiguousarray(rois, dtype=t)
        _roi_pool_forward(_channels_last(input, t), r, t(spatial_scale), ph, pw, t(-_FLT_MAX), out, argmax)
    return out.astype(input.dtype, copy=False), argmax


def roi_pool_backward(xp, grad, rois, argmax, input_shape):
    """Gradient of :func:`roi_pool`: each bin's gradient goes to its argmax pixel (none for argmax -1)."""
    n, c, h, w = (int(v) for v in input_shape)
    # Summed in float64 like the reference's bincount; one rounding per pixel at the end.
    dx = np.zeros((n, c, h, w), dtype=np.float64)
    if grad.size:
        _roi_pool_backward(
            np.ascontiguousarray(grad), np.ascontiguousarray(rois), np.ascontiguousarray(argmax, dtype=np.int64), dx
        )
    return dx.astype(grad.dtype)


KERNELS = {
    "roi_align": roi_align,
    "roi_align_backward": roi_align_backward,
    "roi_pool": roi_pool,
    "roi_pool_backward": roi_pool_backward,
}
