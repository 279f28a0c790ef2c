"""Numba CPU convolution kernels (NCHW): forward, input gradient and weight gradient.

Same contracts as :mod:`segcore.kernels.conv` (the gradients take the output geometry from ``grad_out``, so
``conv_transpose2d``, which is the input gradient, is covered too). Three strategies:

* grouped and dense convolutions: the input is copied once into a zero-padded channels-last buffer (the
  reference kernels' own), then a parallel im2col gathers a block of output pixels into a
  ``(pixels, kh*kw*Cg)`` matrix, every kernel tap one contiguous run of channels, and one matrix product per
  (block, group) (this backend's :mod:`.gemm` for float32/float64) gives a channels-last block that one
  transposing copy puts into the NCHW output (several small images share one product). The weight gradient
  contracts the same matrices with ``grad_out``. The stride-1 input gradient is the same correlation, of
  ``grad_out`` with the flipped kernel; a strided one is the transposed product followed by a parallel col2im that gives
  each thread whole channels, so the scatter-add has no races and a fixed order;
* one input channel per group (depthwise): direct loops, parallel over (image, channel) planes, one
  multiply-add sweep per kernel tap so the innermost loop runs along contiguous rows;
* dense 3x3, stride 1, dilation 1, float32/float64 (the bulk of a ResNet): Winograd F(2x2, 3x3) in
  :mod:`.winograd`, 2.25x fewer multiplications than im2col, for the forward and both gradients; im2col
  serves every other dense or grouped convolution.

Temporaries (the padded input, im2col columns) are per-thread scratch buffers
(:mod:`segcore.kernels.workspace`), so repeated calls do not fault in fresh pages; results are new arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from segcore.kernels.conv import padded
from segcore.kernels.workspace import scratch

from . import gemm, winograd

__all__ = ["conv2d", "conv2d_grad_input", "conv2d_grad_weight", "KERNELS"]

Pair = tuple[int, int]

# Elements of one im2col band. 2**20 (4 MiB of float32) keeps the band in cache between the im2col that
# writes it and the GEMM that reads it, while each GEMM stays large enough to run near peak.
_BAND_ELEMENTS = 1 << 20


@njit(cache=True)
def _valid_columns(off: int, stride: int, width: int, wo: int) -> tuple[int, int]:
    """Output columns ``z`` in ``[lo, hi)`` whose input column ``z * stride + off`` lies in ``[0, width)``."""
    lo = max(0, -(off // stride))
    hi = min(wo, (width - 1 - off) // stride + 1)
    return lo, max(lo, hi)


# error_model="numpy": float division by zero gives inf/nan instead of raising, and loops stay vectorisable.
@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _im2col(buf, b, c0, cg, kh, kw, sh, sw, dh, dw, y0, y1, wo, cols, row0):
    """``cols[row0 + (y - y0) * wo + z, (i, j, c)] = buf[b, y*sh + i*dh, z*sw + j*dw, c0 + c]``.

    ``buf`` is the zero-padded channels-last input, so every tap is one contiguous run of ``cg`` channels.
    """
    c = buf.shape[3]
    # Adjacent taps of all channels are one contiguous run of kw * C values: copied at once.
    merged = dw == 1 and cg == c
    for p in prange((y1 - y0) * wo):
        y = y0 + p // wo
        z = p % wo
        dst = cols[row0 + p]
        for i in range(kh):
            src = buf[b, y * sh + i * dh]
            if merged:
                run = src.reshape(src.size)
                dst[i * kw * c : (i + 1) * kw * c] = run[z * sw * c : (z * sw + kw) * c]
                continue
            for j in range(kw):
                start = (i * kw + j) * cg
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


def _padded_input(x, kernel: Pair, out_hw: Pair, geo: tuple):
    """The channels-last input, zero-padded to exactly the rows and columns the output windows read: the
    reference kernels' scratch copy (:func:`segcore.kernels.conv.padded`), valid until the next call on this
    thread.

    Offsets may be negative (the input gradient's correlation crops). The transposing copy runs in NumPy,
    whose blocked copy loop measured 2.5-3.5x faster than a compiled element loop.
    """
    (kh, kw), (ho, wo), (sh, sw, ph, pw, dh, dw) = kernel, out_hw, geo
    extent = ((ho - 1) * sh + dh * (kh - 1) + 1, (wo - 1) * sw + dw * (kw - 1) + 1)
    return padded(np, x, (ph, pw), extent, channels_last=True)


def _gather_block(buf, images: slice, rows: slice, c0: int, cg: int, kernel: Pair, geo: tuple, wo: int, cols):
    """im2col of one block into the front of ``cols``: a ``(images * rows * wo, kh*kw*cg)`` matrix, image-major."""
    (kh, kw), (sh, sw, _, _, dh, dw) = kernel, geo
    pixels = (rows.stop - rows.start) * wo
    band = cols[: (images.stop - images.start) * pixels * kh * kw * cg].reshape(-1, kh * kw * cg)
    for i, b in enumerate(range(images.start, images.stop)):
        _im2col(buf, b, c0, cg, kh, kw, sh, sw, dh, dw, rows.start, rows.stop, wo, band, i * pixels)
    return band


def _taps_last(wm, cg: int, kernel: Pair):
    """``(G, O', cg*kh*kw)`` in ``(c, i, j)`` order -> ``(i, j, c)`` order, the order of the im2col columns."""
    g, o = wm.shape[:2]
    return np.ascontiguousarray(np.transpose(wm.reshape(g, o, cg, *kernel), (0, 1, 3, 4, 2))).reshape(g, o, -1)


def _is_pointwise(kernel: Pair, stride: Pair, padding: Pair, x_hw: Pair, out_hw: Pair) -> bool:
    """1x1, stride 1, unpadded, same size: the input planes are the im2col matrix already."""
    return kernel == (1, 1) and stride == (1, 1) and padding == (0, 0) and x_hw == out_hw


def _geometry(stride, padding, dilation) -> tuple[int, ...]:
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    return int(sh), int(sw), int(ph), int(pw), int(dh), int(dw)


def _correlate(x, wm, kernel: Pair, out_hw: Pair, geo: tuple[int, ...], groups: int):
    """Grouped correlation through im2col + GEMM, one per (image, group, band of output rows):

    ``out[n, g*Og + o, y, z] = sum_(c, i, j) wm[g, o, (c, i, j)] * x[n, g*Cg + c, y*sh - ph + i*dh, z*sw - pw + j*dw]``
    with ``wm`` the ``(G, Og, Cg*kh*kw)`` weight matrix and zeros outside ``x``; the padding in ``geo`` may be
    negative (the input gradient's correlation crops). Returns ``(N, G*Og, Ho, Wo)`` for ``out_hw``.
    """
    n, c, h, wd = x.shape
    groups_, og, k = wm.shape
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
                np.matmul(wm[g], x[b, g * cg : (g + 1) * cg].reshape(cg, h * wd), out=target)
        return out
    if n == 0:
        return out
    buf = _padded_input(x, kernel, out_hw, geo)
    # (G, K, Og): the weight matrix transposed, so that each block's product is (pixels, K) @ (K, Og), the long
    # pixel axis as the rows. With the pixels as columns instead, the GEMM had to copy the im2col block into
    # panels (its rows are the pixels) and ran 4-12% slower than OpenBLAS; this way nothing is copied.
    wt = np.ascontiguousarray(np.swapaxes(_taps_last(wm, cg, kernel), 1, 2))
    cols = scratch(np, "numba.conv.cols", (_block_capacity(n, ho, wo, k),), x.dtype)
    for images, rows in _blocks(n, ho, wo, k):
        count, nr = images.stop - images.start, rows.stop - rows.start
        staging = scratch(np, "numba.conv.staging", (count * nr * wo, og), x.dtype)
        for g in range(groups):
            band = _gather_block(buf, images, rows, g * cg, cg, kernel, geo, wo, cols)
            _matmul(band, wt[g], staging)
            # Channels-last (images, rows, Wo, Og) into the NCHW output: one transposing copy, in cache.
            block = staging.reshape(count, nr, wo, og)
            out[images, g * og : (g + 1) * og, rows] = np.transpose(block, (0, 3, 1, 2))
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
    return _correlate(x, w.reshape(groups, o // groups, cg * kh * kw), (kh, kw), (ho, wo), geo, groups)


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
        wm = np.ascontiguousarray(np.transpose(flipped, (0, 2, 1, 3, 4))).reshape(groups, cg, og * kh * kw)
        geo_t = (1, 1, dh * (kh - 1) - ph, dw * (kw - 1) - pw, dh, dw)
        return _correlate(g_out, wm, (kh, kw), (h, wd), geo_t, groups)
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
    buf = _padded_input(x, (kh, kw), (ho, wo), geo)
    cols = scratch(np, "numba.conv.cols", (_block_capacity(n, ho, wo, k),), x.dtype)
    for images, rows in _blocks(n, ho, wo, k):
        count, pixels = images.stop - images.start, (rows.stop - rows.start) * wo
        for g in range(groups):
            band = _gather_block(buf, images, rows, g * cg, cg, (kh, kw), geo, wo, cols)
            if count == 1:
                src = g_out[images.start, g * og : (g + 1) * og, rows].reshape(og, pixels)
            else:
                # The block's grad_out as one (Og, images * pixels) matrix, image-major like the columns.
                src = np.swapaxes(g_out[images, g * og : (g + 1) * og], 0, 1).reshape(og, count * pixels)
            # dW_g += grad_out block (Og, P) @ cols (P, K), with K in (i, j, c) order.
            _matmul(src, band, dwm[g], accumulate=True)
    # Back from the columns' (i, j, c) order to the weight's (c, i, j).
    return np.ascontiguousarray(np.transpose(dwm.reshape(o, kh, kw, cg), (0, 3, 1, 2)))


KERNELS = {
    "conv2d": conv2d,
    "conv2d_grad_input": conv2d_grad_input,
    "conv2d_grad_weight": conv2d_grad_weight,
}
