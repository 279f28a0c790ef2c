"""Numba CPU convolution kernels (NCHW): forward, input gradient and weight gradient.

Same contracts as :mod:`segcore.kernels.conv` (the gradients take the output geometry from ``grad_out``, so
``conv_transpose2d``, which is the input gradient, is covered too). Three strategies:

* grouped and dense convolutions: the input is copied once into a zero-padded channels-last buffer (the
  reference kernels' own), every kernel tap of a window then being one contiguous run of channels. For
  float32/float64 the forward is an implicit GEMM (:mod:`.implicit`): this backend's register tile reads each
  window in place in that buffer, and one parallel scatter puts the channels-last result into the NCHW output.
  The weight gradient does the same with the pixels as the reduction (when each group has at least a tile of
  output channels and of input channels per run). Other dtypes and narrower layers go through im2col: a
  parallel gather of a block of output pixels into a ``(pixels, kh*kw*Cg)`` matrix, and one matrix product
  per (block, group) (:mod:`.gemm`, or NumPy's for other dtypes), several small images sharing one product.
  Where the outer taps of a dilated kernel fall in the padding for whole bands of rows and columns (ASPP rates
  on small maps), the output is cut into regions that each leave out the taps reading only zeros (see
  :func:`_regions`); the implicit products then read an unpadded channels-last copy. The stride-1 input gradient is the
  same correlation, of ``grad_out`` with the flipped kernel; a strided one is split by phase of the input into
  stride-1 correlations of ``grad_out`` (:func:`.implicit.transposed`) for float32/float64 when a group has at
  least half a tile of input channels, else it is the transposed product followed by a parallel col2im that
  gives each thread whole channels, so the scatter-add has no races and a fixed order;
* one input channel per group (depthwise): direct loops, parallel over (image, channel) planes, one
  multiply-add sweep per kernel tap so the innermost loop runs along contiguous rows;
* dense 3x3, stride 1, dilation 1, float32/float64 (the bulk of a ResNet): Winograd F(2x2, 3x3) in
  :mod:`.winograd`, 2.25x fewer multiplications than im2col, for the forward and both gradients; im2col
  serves every other dense or grouped convolution.

Temporaries (the padded input, im2col columns, the implicit GEMM's channels-last result) are per-thread scratch buffers
(:mod:`segcore.kernels.workspace`), so repeated calls do not fault in fresh pages; results are new arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from segcore.kernels.conv import padded
from segcore.kernels.workspace import scratch

from . import gemm, implicit, winograd
from .relayout import copy_rows

__all__ = ["conv2d", "conv2d_grad_input", "conv2d_grad_weight", "KERNELS"]

Pair = tuple[int, int]

# Elements of one im2col band. 2**20 (4 MiB of float32) keeps the band in cache between the im2col that
# writes it and the GEMM that reads it, while each GEMM stays large enough to run near peak.
_BAND_ELEMENTS = 1 << 20
# An output piece leaves out the kernel taps that read only zero padding for all of its pixels once that saves
# at least this fraction of the multiply-adds: dilated convolutions, whose outer taps fall outside small maps
# (a rate-6 3x3 on 28x28 skips 27%, rate 18 on 32x32 61%). Below it the pieces' narrower GEMMs are not worth
# it: an ordinary padded 3x3 skips only a row and a column of taps.
_MIN_SKIPPED = 0.1


@njit(cache=True)
def _valid_columns(off: int, stride: int, width: int, wo: int) -> tuple[int, int]:
    """Output columns ``z`` in ``[lo, hi)`` whose input column ``z * stride + off`` lies in ``[0, width)``."""
    lo = max(0, -(off // stride))
    hi = min(wo, (width - 1 - off) // stride + 1)
    return lo, max(lo, hi)


# error_model="numpy": float division by zero gives inf/nan instead of raising, and loops stay vectorisable.
@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _im2col(buf, b0, b1, c0, cg, taps, sh, sw, dh, dw, y0, y1, z0, z1, cols):
    """``cols[((b - b0) * (y1 - y0) + y - y0) * (z1 - z0) + z - z0, (i - i0, j - j0, c)]
    = buf[b, y*sh + i*dh, z*sw + j*dw, c0 + c]`` for images ``b0 <= b < b1`` and the kernel taps
    ``i0 <= i < i1``, ``j0 <= j < j1`` of ``taps = (i0, i1, j0, j1)``.

    ``buf`` is the zero-padded channels-last input, so every tap is one contiguous run of ``cg`` channels.
    """
    i0, i1, j0, j1 = taps
    c = buf.shape[3]
    nj, height, width = j1 - j0, y1 - y0, z1 - z0
    # Adjacent taps of all channels are one contiguous run of nj * C values: copied at once.
    merged = dw == 1 and cg == c
    for p in prange((b1 - b0) * height * width):
        b = b0 + p // (height * width)
        y = y0 + p // width % height
        z = z0 + p % width
        dst = cols[p]
        for i in range(i0, i1):
            src = buf[b, y * sh + i * dh]
            base = (i - i0) * nj * cg
            if merged:
                run = src.reshape(src.size)
                start = (z * sw + j0) * c
                dst[base : base + nj * c] = run[start : start + nj * c]
                continue
            for j in range(j0, j1):
                start = base + (j - j0) * cg
                dst[start : start + cg] = src[z * sw + j * dw, c0 : c0 + cg]


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _col2im(cols, b, c0, cg, kh, kw, sh, sw, ph, pw, dh, dw, y0, y1, wo, dx):
    """Add ``cols[(c, i, j), (y - y0) * wo + z]`` to ``dx[b, c0 + c, y*sh - ph + i*dh, z*sw - pw + j*dw]`` (the
    adjoint of im2col in the ``(c, i, j)`` order of the weight's own layout), skipping positions outside ``dx``."""
    h, w = dx.shape[2], dx.shape[3]
    taps = kh * kw
    # One thread per input channel: the rows of cols that a channel owns touch only that channel's plane.
    for c in prange(cg):
        for i in range(kh):
            for j in range(kw):
                r = c * taps + i * kw + j
                off = j * dw - pw
                lo, hi = _valid_columns(off, sw, w, wo)
                for y in range(y0, y1):
                    iy = y * sh - ph + i * dh
                    if iy < 0 or iy >= h:
                        continue
                    base = (y - y0) * wo
                    if sw == 1:
                        dx[b, c0 + c, iy, lo + off : hi + off] += cols[r, base + lo : base + hi]
                    else:
                        for z in range(lo, hi):
                            dx[b, c0 + c, iy, z * sw + off] += cols[r, base + z]


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _depthwise_forward(x, w, sh, sw, ph, pw, dh, dw, out):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    m = o // c
    for t in prange(n * o):
        b = t // o
        oc = t % o
        ic = oc // m
        plane = out[b, oc]
        plane[:, :] = 0
        for i in range(kh):
            for j in range(kw):
                wij = w[oc, 0, i, j]
                off = j * dw - pw
                lo, hi = _valid_columns(off, sw, wd, wo)
                for y in range(ho):
                    iy = y * sh - ph + i * dh
                    if iy < 0 or iy >= h:
                        continue
                    if sw == 1:
                        # Unit stride: contiguous indices, which the compiler vectorises.
                        for z in range(lo, hi):
                            plane[y, z] += wij * x[b, ic, iy, z + off]
                    else:
                        for z in range(lo, hi):
                            plane[y, z] += wij * x[b, ic, iy, z * sw + off]


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _depthwise_grad_input(g, w, sh, sw, ph, pw, dh, dw, dx):
    n, c, h, wd = dx.shape
    o, _, kh, kw = w.shape
    ho, wo = g.shape[2], g.shape[3]
    m = o // c
    # One thread per input plane: its m output channels scatter only into it.
    for t in prange(n * c):
        b = t // c
        ic = t % c
        plane = dx[b, ic]
        plane[:, :] = 0
        for q in range(m):
            oc = ic * m + q
            for i in range(kh):
                for j in range(kw):
                    wij = w[oc, 0, i, j]
                    off = j * dw - pw
                    lo, hi = _valid_columns(off, sw, wd, wo)
                    for y in range(ho):
                        iy = y * sh - ph + i * dh
                        if iy < 0 or iy >= h:
                            continue
                        if sw == 1:
                            for z in range(lo, hi):
                                plane[iy, z + off] += wij * g[b, oc, y, z]
                        else:
                            for z in range(lo, hi):
                                plane[iy, z * sw + off] += wij * g[b, oc, y, z]


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _depthwise_grad_weight(x, g, sh, sw, ph, pw, dh, dw, dwt):
    n, c, h, wd = x.shape
    o, _, kh, kw = dwt.shape
    ho, wo = g.shape[2], g.shape[3]
    m = o // c
    for oc in prange(o):
        ic = oc // m
        for i in range(kh):
            for j in range(kw):
                off = j * dw - pw
                lo, hi = _valid_columns(off, sw, wd, wo)
                # A float64 accumulator: the sum runs over every pixel of the batch.
                acc = 0.0
                for b in range(n):
                    for y in range(ho):
                        iy = y * sh - ph + i * dh
                        if iy < 0 or iy >= h:
                            continue
                        for z in range(lo, hi):
                            acc += g[b, oc, y, z] * x[b, ic, iy, z * sw + off]
                dwt[oc, 0, i, j] = acc


def _matmul(a, b, out, accumulate: bool = False):
    """``out (+)= a @ b``: this backend's GEMM (:mod:`.gemm`, AVX-512 where the CPU has it) for float32 and
    float64, NumPy's (OpenBLAS) for any other dtype."""
    if a.dtype == b.dtype == out.dtype and a.dtype in (np.float32, np.float64):
        gemm.matmul(a, b, out=out, accumulate=accumulate)
    elif accumulate:
        out += np.matmul(a, b)
    else:
        np.matmul(a, b, out=out)


def _output_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _blocks(n: int, ho: int, wo: int, k: int):
    """``(images, rows)`` slices of output pixels whose ``(pixels, k)`` im2col matrix fits :data:`_BAND_ELEMENTS`.

    Several whole images when one image is small (one longer GEMM runs faster than one short GEMM per image),
    else bands of rows of one image.
    """
    per_image = k * ho * wo
    if per_image <= _BAND_ELEMENTS:
        images = max(1, min(n, _BAND_ELEMENTS // per_image))
        for b0 in range(0, n, images):
            yield slice(b0, min(n, b0 + images)), slice(0, ho)
        return
    rows = max(1, min(ho, _BAND_ELEMENTS // max(1, k * wo)))
    for b in range(n):
        for y0 in range(0, ho, rows):
            yield slice(b, b + 1), slice(y0, min(ho, y0 + rows))


def _block_capacity(n: int, ho: int, wo: int, k: int) -> int:
    """Elements of the largest im2col block :func:`_blocks` yields."""
    return max((i.stop - i.start) * (r.stop - r.start) * wo * k for i, r in _blocks(n, ho, wo, k))


class _Region(NamedTuple):
    """Output rows and columns whose windows all see the same kernel taps inside the input: ``taps`` is
    ``(i0, i1, j0, j1)``, the taps ``i0 <= i < i1``, ``j0 <= j < j1`` (possibly none)."""

    rows: slice
    cols: slice
    taps: tuple[int, int, int, int]


def _tap_range(size: int, k: int, stride: int, pad: int, dilation: int, y: int) -> tuple[int, int]:
    """Taps ``[lo, hi)`` of one kernel axis whose input index ``y*stride - pad + i*dilation`` lies in ``[0, size)``."""
    start = y * stride - pad
    lo = max(0, -(start // dilation))
    hi = min(k, (size - 1 - start) // dilation + 1)
    return lo, max(lo, hi)


def _axis_runs(out: int, size: int, k: int, stride: int, pad: int, dilation: int) -> list[list[int]]:
    """``[first, stop, tap_lo, tap_hi]`` runs of output positions along one axis with the same taps inside."""
    runs: list[list[int]] = []
    for y in range(out):
        lo, hi = _tap_range(size, k, stride, pad, dilation, y)
        if runs and runs[-1][2:] == [lo, hi]:
            runs[-1][1] = y + 1
        else:
            runs.append([y, y + 1, lo, hi])
    return runs


def _regions(in_hw: Pair, kernel: Pair, out_hw: Pair, geo: tuple) -> list[_Region]:
    """The output split into :class:`_Region` s that leave out taps reading only padding, when that saves
    :data:`_MIN_SKIPPED` of the work; else one region with every tap (padding taps then read the zeros)."""
    (h, w), (kh, kw), (ho, wo), (sh, sw, ph, pw, dh, dw) = in_hw, kernel, out_hw, geo
    whole = [_Region(slice(0, ho), slice(0, wo), (0, kh, 0, kw))]
    if ho == 0 or wo == 0:
        return whole
    rows, cols = _axis_runs(ho, h, kh, sh, ph, dh), _axis_runs(wo, w, kw, sw, pw, dw)
    # The fraction of multiply-adds kept factorises over the two axes.
    kept = sum((r1 - r0) * (i1 - i0) for r0, r1, i0, i1 in rows) / (ho * kh)
    kept *= sum((z1 - z0) * (j1 - j0) for z0, z1, j0, j1 in cols) / (wo * kw)
    if 1 - kept < _MIN_SKIPPED:
        return whole
    return [
        _Region(slice(r0, r1), slice(z0, z1), (i0, i1, j0, j1)) for r0, r1, i0, i1 in rows for z0, z1, j0, j1 in cols
    ]


def _has_every_tap(region: _Region, kernel: Pair) -> bool:
    return region.taps == (0, kernel[0], 0, kernel[1])


def _region_depth(region: _Region, cg: int) -> int:
    """Columns of a region's im2col matrix: its taps times the group's channels."""
    i0, i1, j0, j1 = region.taps
    return (i1 - i0) * (j1 - j0) * cg


def _cols_capacity(n: int, regions: list[_Region], cg: int) -> int:
    """Elements of the largest im2col block of any of ``regions``."""
    sizes = [
        _block_capacity(n, r.rows.stop - r.rows.start, r.cols.stop - r.cols.start, _region_depth(r, cg))
        for r in regions
        if _region_depth(r, cg)
    ]
    return max(sizes, default=0)


def _padded_input(x, kernel: Pair, out_hw: Pair, geo: tuple):
    """The channels-last input, zero-padded to exactly the rows and columns the output windows read: the
    reference kernels' scratch copy (:func:`segcore.kernels.conv.padded`), valid until the next call on this
    thread.

    Offsets may be negative (the input gradient's correlation crops). The transposing copy is compiled and
    parallel over rows (:func:`.relayout.copy_rows`).
    """
    (kh, kw), (ho, wo), (sh, sw, ph, pw, dh, dw) = kernel, out_hw, geo
    extent = ((ho - 1) * sh + dh * (kh - 1) + 1, (wo - 1) * sw + dw * (kw - 1) + 1)
    return padded(np, x, (ph, pw), extent, channels_last=True, copy=copy_rows)


def _implicit_input(x, kernel: Pair, out_hw: Pair, geo: tuple, regions: list[_Region], groups: int):
    """``(buffer, start)`` for the implicit products (:func:`.implicit.correlate`, ``weight_gradient``): when
    they read only taps inside the input (:func:`.implicit.reads_inside`), the channels-last input as it is and
    the window start ``(-ph, -pw)``; else the padded input (:func:`_padded_input`) and ``(0, 0)``.

    Without padding a rate-6 layer's buffer is half the size (28x28 against 40x40 positions): half the values
    to write, and no border to zero.
    """
    if implicit.reads_inside(regions, kernel, geo, groups):
        h, w = x.shape[2], x.shape[3]
        return padded(np, x, (0, 0), (h, w), channels_last=True, copy=copy_rows), (-geo[2], -geo[3])
    return _padded_input(x, kernel, out_hw, geo), (0, 0)


def _gather_block(buf, images: slice, rows: slice, region: _Region, c0: int, cg: int, geo: tuple, cols):
    """im2col of ``rows`` (absolute output rows) of ``region`` into the front of ``cols``: an image-major
    ``(images * rows * region columns, region taps * cg)`` matrix."""
    sh, sw, _, _, dh, dw = geo
    z0, z1 = region.cols.start, region.cols.stop
    pixels, depth = (rows.stop - rows.start) * (z1 - z0), _region_depth(region, cg)
    band = cols[: (images.stop - images.start) * pixels * depth].reshape(-1, depth)
    _im2col(buf, images.start, images.stop, c0, cg, region.taps, sh, sw, dh, dw, rows.start, rows.stop, z0, z1, band)
    return band


def _region_blocks(n: int, region: _Region, depth: int):
    """:func:`_blocks` of one region, the rows given as absolute output rows."""
    first = region.rows.start
    height, width = region.rows.stop - first, region.cols.stop - region.cols.start
    for images, rows in _blocks(n, height, width, depth):
        yield images, slice(first + rows.start, first + rows.stop)


def _region_weights(wt, region: _Region, kernel: Pair, cg: int):
    """Rows of ``wt`` ``(G, kh*kw*cg, Og)`` (``(i, j, c)`` order) for the region's taps, contiguous."""
    if _has_every_tap(region, kernel):
        return wt
    (kh, kw), (i0, i1, j0, j1) = kernel, region.taps
    g, _, og = wt.shape
    return np.ascontiguousarray(wt.reshape(g, kh, kw, cg, og)[:, i0:i1, j0:j1]).reshape(g, -1, og)


def _taps_last(weights):
    """``(G, O', Cg, kh, kw)`` -> ``(G, O', kh*kw*Cg)`` in ``(i, j, c)`` order, the order of the im2col columns."""
    g, o = weights.shape[:2]
    return np.ascontiguousarray(np.transpose(weights, (0, 1, 3, 4, 2))).reshape(g, o, -1)


def _weight_order(dwm, weight_shape):
    """The weight gradient ``dwm`` ``(G, Og, kh*kw*Cg)``, its columns in ``(i, j, c)`` order, as a new
    ``(O, Cg, kh, kw)`` array. One copy parallel over rows (:func:`.relayout.copy_rows`): NumPy's transposing
    copy took 0.33 ms for a 256x256 3x3 layer, on one core."""
    o, cg, kh, kw = weight_shape
    result = np.empty(weight_shape, dtype=dwm.dtype)
    copy_rows(result, np.transpose(dwm.reshape(o, kh, kw, cg), (0, 3, 1, 2)))
    return result


def _is_pointwise(kernel: Pair, stride: Pair, padding: Pair, x_hw: Pair, out_hw: Pair) -> bool:
    """1x1, stride 1, unpadded, same size: the input planes are the im2col matrix already."""
    return kernel == (1, 1) and stride == (1, 1) and padding == (0, 0) and x_hw == out_hw


def _geometry(stride, padding, dilation) -> tuple[int, ...]:
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    return int(sh), int(sw), int(ph), int(pw), int(dh), int(dw)


def _correlate(x, weights, kernel: Pair, out_hw: Pair, geo: tuple[int, ...], groups: int):
    """Grouped correlation: an implicit GEMM for float32/float64 (:mod:`.implicit`), else im2col + GEMM, one
    per (block of output pixels, group):

    ``out[n, g*Og + o, y, z] = sum_(c, i, j) weights[g, o, c, i, j] * x[n, g*Cg + c, y*sh - ph + i*dh,
    z*sw - pw + j*dw]`` with ``weights`` ``(G, Og, Cg, kh, kw)`` (any view) and zeros outside ``x``; the
    padding in ``geo`` may be negative (the input gradient's correlation crops). Returns ``(N, G*Og, Ho, Wo)``
    for ``out_hw``.
    """
    n, c, h, wd = x.shape
    og = weights.shape[1]
    cg = c // groups
    kh, kw = kernel
    ho, wo = out_hw
    sh, sw, ph, pw, dh, dw = geo
    out = np.empty((n, groups * og, ho, wo), dtype=x.dtype)
    if _is_pointwise(kernel, (sh, sw), (ph, pw), (h, wd), out_hw):
        # 1x1 convolutions stay with NumPy's BLAS: the input planes are the operand as they are, and with the
        # pixels along their rows this backend's GEMM measured no faster (weight gradient: 1.9-2.5x slower).
        for b in range(n):
            for g in range(groups):
                target = out[b, g * og : (g + 1) * og].reshape(og, ho * wo)
                np.matmul(weights[g, :, :, 0, 0], x[b, g * cg : (g + 1) * cg].reshape(cg, h * wd), out=target)
        return out
    if n == 0:
        return out
    regions = _regions((h, wd), kernel, out_hw, geo)
    if x.dtype in (np.float32, np.float64):  # the register tile's dtypes
        buf, start = _implicit_input(x, kernel, out_hw, geo, regions, groups)
        return implicit.correlate(buf, weights, regions, n, kernel, out_hw, geo, groups, out, start)
    buf = _padded_input(x, kernel, out_hw, geo)
    # (G, K, Og): the weight matrix transposed, so that each block's product is (pixels, K) @ (K, Og), the long
    # pixel axis as the rows. With the pixels as columns instead, the GEMM had to copy the im2col block into
    # panels (its rows are the pixels) and ran 4-12% slower than OpenBLAS; this way nothing is copied.
    wt = np.ascontiguousarray(np.swapaxes(_taps_last(weights), 1, 2))
    cols = scratch(np, "numba.conv.cols", (_cols_capacity(n, regions, cg),), x.dtype)
    for region in regions:
        depth, width = _region_depth(region, cg), region.cols.stop - region.cols.start
        if depth == 0:  # every window of the region lies in the padding
            out[:, :, region.rows, region.cols] = 0
            continue
        weights = _region_weights(wt, region, kernel, cg)
        for images, rows in _region_blocks(n, region, depth):
            count, nr = images.stop - images.start, rows.stop - rows.start
            staging = scratch(np, "numba.conv.staging", (count * nr * width, og), x.dtype)
            for g in range(groups):
                band = _gather_block(buf, images, rows, region, g * cg, cg, geo, cols)
                _matmul(band, weights[g], staging)
                # Channels-last (images, rows, columns, Og) into the NCHW output: one transposing copy, in cache.
                block = staging.reshape(count, nr, width, og)
                out[images, g * og : (g + 1) * og, rows, region.cols] = np.transpose(block, (0, 3, 1, 2))
    return out


def conv2d(xp, x, w, stride: Pair, padding: Pair, dilation: Pair, groups: int):
    """Cross-correlation of ``x`` ``(N, C, H, W)`` with ``w`` ``(O, C/groups, kh, kw)``; no bias."""
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw, ph, pw, dh, dw = geo = _geometry(stride, padding, dilation)
    ho, wo = _output_size(h, kh, sh, ph, dh), _output_size(wd, kw, sw, pw, dw)
    if cg == 1:
        out = np.empty((n, o, ho, wo), dtype=x.dtype)
        _depthwise_forward(x, w, *geo, out)
        return out
    if winograd.applies(w.shape, (sh, sw), (dh, dw), groups, x.dtype):
        return winograd.conv2d(x, w, (ph, pw))
    return _correlate(x, w.reshape(groups, o // groups, cg, kh, kw), (kh, kw), (ho, wo), geo, groups)


def conv2d_grad_input(xp, grad_out, w, input_shape, stride: Pair, padding: Pair, dilation: Pair, groups: int):
    """Gradient of :func:`conv2d` with respect to its input (the transposed convolution), of ``input_shape``."""
    g_out = np.ascontiguousarray(grad_out)
    w = np.ascontiguousarray(w, dtype=g_out.dtype)
    n, c, h, wd = (int(v) for v in input_shape)
    o, cg, kh, kw = w.shape
    ho, wo = g_out.shape[2], g_out.shape[3]
    sh, sw, ph, pw, dh, dw = geo = _geometry(stride, padding, dilation)
    if cg == 1:
        dx = np.empty((n, c, h, wd), dtype=g_out.dtype)
        _depthwise_grad_input(g_out, w, *geo, dx)
        return dx
    if winograd.applies(w.shape, (sh, sw), (dh, dw), groups, g_out.dtype):
        return winograd.conv2d_grad_input(g_out, w, (h, wd), (ph, pw))
    og, k = o // groups, cg * kh * kw
    if (sh, sw) == (1, 1):
        # dx[y] = sum_i g[y + p - i d] w[i] = sum_i' g[y - (d (k-1) - p) + i' d] w[k-1-i']: a stride-1 correlation
        # of grad_out with the flipped kernel, channels swapped within each group (the GEMM then has the long
        # Og*kh*kw inner dimension and no col2im pass is needed). Its padding may be negative.
        flipped = w.reshape(groups, og, cg, kh, kw)[:, :, :, ::-1, ::-1]
        geo_t = (1, 1, dh * (kh - 1) - ph, dw * (kw - 1) - pw, dh, dw)
        return _correlate(g_out, np.swapaxes(flipped, 1, 2), (kh, kw), (h, wd), geo_t, groups)
    if implicit.transposed_applies(g_out.dtype, cg):
        return implicit.transposed(g_out, w, (h, wd), geo, groups)
    wt = np.ascontiguousarray(np.swapaxes(w.reshape(groups, og, k), 1, 2))  # (G, K, Og)
    dx = np.zeros((n, c, h, wd), dtype=g_out.dtype)
    # One image per block here: col2im adds one image's patches back into its own planes.
    bands = list(_blocks(1, ho, wo, k))
    cols = scratch(np, "numba.conv.cols", (_block_capacity(1, ho, wo, k),), g_out.dtype)
    for b in range(n):
        for g in range(groups):
            for _, rows in bands:
                y0, y1 = rows.start, rows.stop
                band = cols[: k * (y1 - y0) * wo].reshape(k, (y1 - y0) * wo)
                _matmul(wt[g], g_out[b, g * og : (g + 1) * og, y0:y1].reshape(og, (y1 - y0) * wo), band)
                _col2im(band, b, g * cg, cg, kh, kw, sh, sw, ph, pw, dh, dw, y0, y1, wo, dx)
    return dx


def conv2d_grad_weight(xp, x, grad_out, weight_shape, stride: Pair, padding: Pair, dilation: Pair, groups: int):
    """Gradient of :func:`conv2d` with respect to its weight, of ``weight_shape`` ``(O, C/groups, kh, kw)``."""
    x = np.ascontiguousarray(x)
    g_out = np.ascontiguousarray(grad_out, dtype=x.dtype)
    n, c, h, wd = x.shape
    o, cg, kh, kw = (int(v) for v in weight_shape)
    ho, wo = g_out.shape[2], g_out.shape[3]
    sh, sw, ph, pw, dh, dw = geo = _geometry(stride, padding, dilation)
    if cg == 1:
        dwt = np.empty((o, 1, kh, kw), dtype=x.dtype)
        _depthwise_grad_weight(x, g_out, *geo, dwt)
        return dwt
    if winograd.applies((o, cg, kh, kw), (sh, sw), (dh, dw), groups, x.dtype):
        return winograd.conv2d_grad_weight(x, g_out, (ph, pw))
    og, k = o // groups, cg * kh * kw
    dwm = np.zeros((groups, og, k), dtype=x.dtype)
    if n == 0:
        return dwm.reshape(o, cg, kh, kw)
    if _is_pointwise((kh, kw), (sh, sw), (ph, pw), (h, wd), (ho, wo)):
        for b in range(n):
            for g in range(groups):
                src = g_out[b, g * og : (g + 1) * og].reshape(og, ho * wo)
                dwm[g] += np.matmul(src, x[b, g * cg : (g + 1) * cg].reshape(cg, h * wd).T)
        return dwm.reshape(o, cg, kh, kw)
    regions = _regions((h, wd), (kh, kw), (ho, wo), geo)
    buf, start = _implicit_input(x, (kh, kw), (ho, wo), geo, regions, groups)
    if implicit.weight_gradient_applies(buf, (kh, kw), geo, og, groups):
        implicit.weight_gradient(buf, g_out, regions, (kh, kw), geo, groups, dwm, start)
        return _weight_order(dwm, (o, cg, kh, kw))
    if start != (0, 0):  # im2col reads every tap of its windows: it needs the padded buffer
        buf = _padded_input(x, (kh, kw), (ho, wo), geo)
    cols = scratch(np, "numba.conv.cols", (_cols_capacity(n, regions, cg),), x.dtype)
    for region in regions:
        depth = _region_depth(region, cg)
        if depth == 0:
            continue
        i0, i1, j0, j1 = region.taps
        whole = _has_every_tap(region, (kh, kw))
        # A region with fewer taps sums into its own (G, Og, depth) matrix, added to those taps' columns after.
        target = dwm if whole else np.zeros((groups, og, depth), dtype=x.dtype)
        for images, rows in _region_blocks(n, region, depth):
            for g in range(groups):
                band = _gather_block(buf, images, rows, region, g * cg, cg, geo, cols)
                # The block's grad_out as one (Og, images * pixels) matrix, image-major like the columns
                # (a view when the block is one image's full-width rows, else a copy).
                src = np.swapaxes(g_out[images, g * og : (g + 1) * og, rows, region.cols], 0, 1)
                src = np.ascontiguousarray(src).reshape(og, band.shape[0])
                # dW_g += grad_out block (Og, P) @ cols (P, K), with K in (i, j, c) order.
                _matmul(src, band, target[g], accumulate=True)
        if not whole:
            taps = dwm.reshape(groups, og, kh, kw, cg)[:, :, i0:i1, j0:j1]
            taps += target.reshape(groups, og, i1 - i0, j1 - j0, cg)
    return _weight_order(dwm, (o, cg, kh, kw))


KERNELS = {
    "conv2d": conv2d,
    "conv2d_grad_input": conv2d_grad_input,
    "conv2d_grad_weight": conv2d_grad_weight,
}
