"""Reference RoI kernels with torchvision's semantics: RoIAlign and RoIPool, forward and backward.

``rois`` is always ``(K, 5)``: ``(batch_index, x1, y1, x2, y2)`` in input-image coordinates, multiplied by
``spatial_scale`` to reach feature-map coordinates. Coordinates are computed in the input's scalar type (float32
for float32 input, as torchvision's ``T``), in the same operation order, so that sample positions, the clamping
rules and the floor/ceil/round decisions are bit-for-bit torchvision's.

RoIAlign is separable. A sample's four bilinear weights are products of a row weight and a column weight, the
"outside ``[-1, H] x [-1, W]``" rule is a product of a row test and a column test, and the average over the
``gh x gw`` sample grid is the product of an average over ``gh`` rows and one over ``gw`` columns. So each RoI
is described by two small dense matrices, ``Ay (Ph, H)`` and ``Ax (Pw, W)``, and

    output[k] = Ay[k] @ input[b_k] @ Ax[k].T        (per channel)

which the kernels evaluate with matrix products (BLAS) instead of gathering ``4 * gh * gw`` pixels per bin.
The forward gathers each RoI's window of touched pixels and applies the two products to it, so its cost hardly
grows with the map. The backward is the transposed product; windows of different RoIs overlap, so it sums
them with banded GEMMs rather than a scatter: sorted by top row, chunks of RoIs of one image add
``Ay.T @ (G @ Ax)`` to the band of rows they touch, in a fixed order, so the result is deterministic.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "roi_align",
    "roi_align_backward",
    "roi_pool",
    "roi_pool_backward",
    "KERNELS",
]

# At most this many RoIs share one chunk: more makes the products larger but the padding / band wider.
_ALIGN_CHUNK_ROIS = 16
# Upper bound on the elements of one chunk's intermediate arrays (keeps memory flat for any number of RoIs).
_CHUNK_ELEMENTS = 1 << 22
# OpenBLAS runs a GEMM with m * n * k <= 4 * 65536 on one thread; products are kept below that where cheap to,
# because waking the thread pool for many small products costs more than they do (far more on a loaded machine).
_SINGLE_THREAD_MNK = 1 << 17
# torchvision starts each RoIPool bin's max at -FLT_MAX (for double too): values <= -FLT_MAX are never picked.
_FLT_MAX = float(np.finfo(np.float32).max)


def _coord_dtype(dtype) -> type:
    # torchvision's kernels compute in the input's scalar type; float16 is computed in float32 here.
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def _host_list(array) -> list:
    # Chunk planning needs a few numbers per RoI on the host; .tolist() works for NumPy and CuPy arrays alike.
    return array.tolist()


# -- RoIAlign -----------------------------------------------------------------------------------------------


def _align_geometry(xp, rois, spatial_scale: float, output_size, sampling_ratio: int, aligned: bool, t):
    """Per RoI and axis: start, bin size and number of samples per bin (torchvision's roi_bin_grid)."""
    ph, pw = output_size
    scale = t(spatial_scale)
    offset = t(0.5) if aligned else t(0.0)
    r = xp.astype(rois, t)
    start_w = r[:, 1] * scale - offset
    start_h = r[:, 2] * scale - offset
    roi_w = (r[:, 3] * scale - offset) - start_w
    roi_h = (r[:, 4] * scale - offset) - start_h
    if not aligned:
        # Legacy mode forces malformed RoIs to be at least 1x1.
        roi_w = xp.maximum(roi_w, t(1.0))
        roi_h = xp.maximum(roi_h, t(1.0))
    bin_h = roi_h / t(ph)
    bin_w = roi_w / t(pw)
    k = rois.shape[0]
    if sampling_ratio > 0:
        grid_h = xp.full((k,), sampling_ratio, dtype=xp.int64)
        grid_w = xp.full((k,), sampling_ratio, dtype=xp.int64)
    else:
        # ceil(size / pooled); a zero or negative grid (possible with aligned=True) means "no samples".
        grid_h = xp.astype(xp.maximum(xp.ceil(roi_h / t(ph)), t(0)), xp.int64)
        grid_w = xp.astype(xp.maximum(xp.ceil(roi_w / t(pw)), t(0)), xp.int64)
    return (start_h, bin_h, grid_h), (start_w, bin_w, grid_w)


def _axis_weights(xp, start, bin_size, grid, pooled: int, size: int, t):
    """``A (K, pooled, size)``: the averaged 1-D bilinear weights of every bin along one axis.

    ``A[k, p, i]`` is the sum over the bin's ``grid[k]`` samples of each sample's weight on pixel ``i``,
    divided by ``grid[k]``; samples outside ``[-1, size]`` weigh nothing (torchvision's "empty" rule).
    """
    k = start.shape[0]
    per_roi = grid * pooled
    total = int(xp.sum(per_roi)) if k else 0
    if total == 0:
        return xp.zeros((k, pooled, size), dtype=t)
    # Flatten every (RoI, bin, sample) triple without padding to the largest grid: sample n belongs to the RoI
    # whose cumulative sample range contains it.
    ends = xp.cumsum(per_roi)
    n = xp.arange(total, dtype=xp.int64)
    roi = xp.searchsorted(ends, n, side="right")
    local = n - (ends[roi] - per_roi[roi])
    g = grid[roi]
    p = local // g
    i = local - p * g
    b = bin_size[roi]
    # Same operation order as torchvision: start + p * bin + (i + .5) * bin / grid.
    coord = start[roi] + xp.astype(p, t) * b + (xp.astype(i, t) + t(0.5)) * b / xp.astype(g, t)
    inside = (coord >= t(-1.0)) & (coord <= t(size))  # false for NaN, as torchvision's !(in range) test
    c = xp.where(inside & (coord > t(0)), coord, t(0))
    low = xp.astype(xp.floor(c), xp.int64)
    edge = low >= size - 1
    low = xp.where(edge, size - 1, low)
    high = xp.where(edge, size - 1, low + 1)
    c = xp.where(edge, xp.astype(low, t), c)
    frac = c - xp.astype(low, t)
    norm = xp.where(inside, t(1.0) / xp.astype(g, t), t(0.0))
    w_low = (t(1.0) - frac) * norm
    w_high = frac * norm
    row = (roi * pooled + p) * size
    # Segment sum of the weights per (RoI, bin, pixel): bincount is deterministic and exists in CuPy.
    weights = xp.bincount(
        xp.concat([row + low, row + high]), weights=xp.concat([w_low, w_high]), minlength=k * pooled * size
    )
    return xp.reshape(xp.astype(weights, t), (k, pooled, size))


def _support(xp, a):
    """First and last pixel with a non-zero weight in any bin, per RoI (host arrays), and whether there is one."""
    touched = xp.any(a != 0, axis=1)
    size = a.shape[2]
    first = np.asarray(_host_list(xp.argmax(touched, axis=1)), dtype=np.int64)
    last = size - 1 - np.asarray(_host_list(xp.argmax(touched[:, ::-1], axis=1)), dtype=np.int64)
    return first, last, np.asarray(_host_list(xp.any(touched, axis=1)), dtype=bool)


def _align_weights(xp, rois, input_shape, spatial_scale, output_size, sampling_ratio, aligned, t):
    """``Ay (K, Ph, H)``, ``Ax (K, Pw, W)`` and, on the host, each RoI's row and column support.

    Returns ``(ay, ax, (y_first, y_last), (x_first, x_last), active)``; ``active`` lists the RoIs that touch
    the map at all (the others: entirely outside it, or without samples, have a zero output).
    """
    _, _, h, w = input_shape
    ph, pw = output_size
    (sh, bh, gh), (sw, bw, gw) = _align_geometry(xp, rois, spatial_scale, output_size, sampling_ratio, aligned, t)
    ay = _axis_weights(xp, sh, bh, gh, ph, h, t)
    ax = _axis_weights(xp, sw, bw, gw, pw, w, t)
    y_first, y_last, y_any = _support(xp, ay)
    x_first, x_last, x_any = _support(xp, ax)
    return ay, ax, (y_first, y_last), (x_first, x_last), np.flatnonzero(y_any & x_any)


def _sorted_positions(xp, order: np.ndarray, count: int):
    """For every RoI its position in ``order``, or ``order.size`` (a zero row) if it is not in it."""
    position = np.full(count, order.size, dtype=np.int64)
    position[order] = np.arange(order.size)
    return xp.asarray(position)


def _window_chunks(span_h: np.ndarray, span_w: np.ndarray, order: np.ndarray, unit: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of ``order`` (sorted by window size) that share one padded window size."""
    chunks, s = [], 0
    while s < order.size:
        rest = order[s : s + _ALIGN_CHUNK_ROIS]
        # Largest prefix whose windows, padded to the prefix's largest height and width, fit the budget.
        padded = np.maximum.accumulate(span_h[rest]) * np.maximum.accumulate(span_w[rest])
        cost = np.arange(1, rest.size + 1) * unit * padded
        m = max(1, int(np.searchsorted(cost, _CHUNK_ELEMENTS, side="right")))
        chunks.append((s, s + m))
        s += m
    return chunks


def roi_align(xp, input, rois, spatial_scale: float, output_size, sampling_ratio: int, aligned: bool):
    """RoIAlign forward: ``(N, C, H, W)`` input, ``(K, 5)`` rois -> ``(K, C, Ph, Pw)``.

    torchvision semantics: ``aligned`` shifts boxes by -0.5 pixel, otherwise RoIs are at least 1x1;
    ``sampling_ratio <= 0`` samples ``ceil(roi_size / pooled)`` points per bin and axis; samples outside
    ``[-1, H] x [-1, W]`` count as 0 and the others are clamped into the map. Batch indices must be valid
    (checked by the caller).

    Each RoI reads only the window of pixels its samples touch: windows are gathered (channels last) and
    pooled with two small products, ``Ax`` over columns, then ``Ay`` over rows. A non-finite pixel inside a
    RoI's window reaches the whole RoI (it is multiplied by zero weights, not skipped).
    """
    n, c, h, w = input.shape
    ph, pw = output_size
    t = _coord_dtype(input.dtype)
    k = rois.shape[0]
    if k == 0 or c == 0:
        return xp.zeros((k, c, ph, pw), dtype=input.dtype)
    ay, ax, (y_first, y_last), (x_first, x_last), active = _align_weights(
        xp, rois, input.shape, spatial_scale, output_size, sampling_ratio, aligned, t
    )
    span_h, span_w = y_last - y_first + 1, x_last - x_first + 1
    # Sorted by window height, then width: consecutive RoIs pad their windows to similar sizes.
    order = active[np.lexsort((span_w[active], span_h[active]))]
    batch = xp.astype(rois[:, 0], xp.int64)
    if n * h * w <= int(np.sum(span_h[order] * span_w[order])):
        # The windows cover more pixels than the map has: one channels-last copy makes every gather contiguous.
        pixels = xp.ascontiguousarray(xp.transpose(input, (0, 2, 3, 1)))

        def gather(images, rows, cols):
            return pixels[images, rows, cols]

    else:
        # Small RoIs on a large map: gather their C-vectors straight from NCHW rather than copy the whole map.
        def gather(images, rows, cols):
            return input[images, :, rows, cols]

    # Results in sorted order, (RoI, Ph, Pw, C) as the products leave them, plus one zero row for RoIs that
    # touch nothing; a single gather at the end restores the caller's order and the (K, C, Ph, Pw) layout.
    pooled = xp.empty((order.size + 1, ph, pw, c), dtype=input.dtype)
    pooled[order.size] = 0
    for start, stop in _window_chunks(span_h, span_w, order, c):
        idx = order[start:stop]
        m, hb, wb = idx.size, int(span_h[idx].max()), int(span_w[idx].max())
        sel = xp.asarray(idx)
        # Window coordinates (clamped into the map; weights are zero past a RoI's own window).
        rows = xp.minimum(xp.asarray(y_first[idx])[:, None] + xp.arange(hb), h - 1)
        cols = xp.minimum(xp.asarray(x_first[idx])[:, None] + xp.arange(wb), w - 1)
        in_rows = (xp.arange(hb) < xp.asarray(span_h[idx])[:, None])[:, None, :]
        in_cols = (xp.arange(wb) < xp.asarray(span_w[idx])[:, None])[:, None, :]
        a_y = xp.where(in_rows, xp.take_along_axis(ay[sel], rows[:, None, :], axis=2), t(0))
        a_x = xp.where(in_cols, xp.take_along_axis(ax[sel], cols[:, None, :], axis=2), t(0))
        window = gather(batch[sel][:, None, None], rows[:, :, None], cols[:, None, :])  # (m, hb, wb, C)
        # Columns first, one (Pw, wb) @ (wb, C) product per window row, then rows, one (Ph, hb) @ (hb, Pw * C)
        # product per RoI: each is small enough for BLAS to run on one thread, where waking its thread pool
        # once per RoI costs more than the product (and much more when other processes hold the cores).
        by_col = xp.matmul(xp.astype(a_x, input.dtype)[:, None], window)  # (m, hb, Pw, C)
        pooled[start:stop] = xp.reshape(
            xp.matmul(xp.astype(a_y, input.dtype), xp.reshape(by_col, (m, hb, pw * c))), (m, ph, pw, c)
        )
    return xp.transpose(pooled, (0, 3, 1, 2))[_sorted_positions(xp, order, k)]


def roi_align_backward(
    xp, grad, rois, input_shape, spatial_scale: float, output_size, sampling_ratio: int, aligned: bool
):
    """Gradient of :func:`roi_align` with respect to its input, an array of ``input_shape``.

    Every sample's gradient goes to its four bilinear neighbours, as torchvision's backward. Windows of
    different RoIs overlap, so instead of scattering them (atomics, or a slow segment sum) the RoIs of one
    image are sorted by top row and chunked, and each chunk adds ``Ay.T @ (G @ Ax)`` to the band of rows it
    touches, the overlaps summed inside the products. Deterministic: the same inputs give bitwise the same
    result (fixed summation order, no atomics). Backends overriding this kernel with atomic scatters should
    keep a deterministic path.
    """
    n, c, h, w = (int(v) for v in input_shape)
    ph, pw = output_size
    t = _coord_dtype(grad.dtype)
    if rois.shape[0] == 0 or c == 0:
        return xp.zeros((n, c, h, w), dtype=grad.dtype)
    ay, ax, (y_first, y_last), (x_first, x_last), active = _align_weights(
        xp, rois, (n, c, h, w), spatial_scale, output_size, sampling_ratio, aligned, t
    )
    batch = np.asarray(_host_list(xp.astype(rois[:, 0], xp.int64)), dtype=np.int64)
    order, chunks = _band_chunks(batch, (y_first, y_last), (x_first, x_last), active, c, output_size)
    gx = xp.zeros((n, c, h, w), dtype=grad.dtype)
    sel = xp.asarray(order)
    # One gather puts the gradients in sorted order and (RoI, Ph, C, Pw) layout; chunks are then slices.
    sorted_grad = xp.transpose(grad, (0, 2, 1, 3))[sel]
    sorted_ay = xp.astype(ay[sel], grad.dtype, copy=False)
    sorted_ax = xp.astype(ax[sel], grad.dtype, copy=False)
    for start, stop, image, (y0, y1), (x0, x1) in chunks:
        m = stop - start
        # G @ Ax per (RoI, bin row), then Ay.T @ that per channel, which sums the chunk's RoIs and bin rows
        # inside BLAS. Every product is small enough for BLAS to run on one thread: waking its pool for each
        # of them costs more than the product (much more when other processes hold the cores).
        cols = xp.matmul(sorted_grad[start:stop], sorted_ax[start:stop, None, :, x0:x1])  # (m, Ph, C, band w)
        a_y = xp.reshape(sorted_ay[start:stop, :, y0:y1], (m * ph, y1 - y0))
        by_channel = xp.swapaxes(xp.reshape(cols, (m * ph, c, x1 - x0)), 0, 1)  # (C, m * Ph, band w)
        gx[image, :, y0:y1, x0:x1] += xp.matmul(xp.swapaxes(a_y, 0, 1), by_channel)
    return gx


def _band_chunks(batch, rows, cols, active, channels: int, pooled: tuple[int, int]):
    """Order RoIs for the backward and cut them into chunks of nearby RoIs of one image.

    RoIs are sorted by image, by a row tile (the typical RoI height) and by left column, so that a chunk of
    consecutive RoIs covers a compact rectangle of the map. Returns ``(order, chunks)`` with chunks
    ``(start, stop, image, (y0, y1), (x0, x1))``: positions ``order[start:stop]`` and the rectangle they touch.
    A chunk stops growing when its products would leave BLAS's single-thread range or its intermediate
    ``(RoIs, Ph, C, columns)`` array the element budget.
    """
    (y_first, y_last), (x_first, x_last) = rows, cols
    ph, pw = pooled
    tile = max(1, int(np.median(y_last[active] - y_first[active] + 1))) if active.size else 1
    band = y_first // tile
    order = active[np.lexsort((x_first[active], band[active], batch[active]))]
    chunks = []
    groups = np.flatnonzero(np.diff(batch[order]) | np.diff(band[order])) + 1
    for group in np.split(np.arange(order.size), groups):
        s = 0
        while s < group.size:
            members = order[group[s : s + _ALIGN_CHUNK_ROIS]]
            count = np.arange(1, members.size + 1)
            width = np.maximum.accumulate(x_last[members]) - np.minimum.accumulate(x_first[members]) + 1
            height = np.maximum.accumulate(y_last[members]) - np.minimum.accumulate(y_first[members]) + 1
            fits = (
                (count * ph * channels * width <= _CHUNK_ELEMENTS)
                & (channels * pw * width <= _SINGLE_THREAD_MNK)  # G @ Ax, per (RoI, bin row)
                & (height * count * ph * width <= _SINGLE_THREAD_MNK)  # Ay.T @ (G @ Ax), per channel
            )
            # The longest prefix that fits (at least one RoI, whatever its size).
            m = max(1, int(np.argmin(fits)) if not fits.all() else members.size)
            members = members[:m]
            start = int(group[s])
            rows_touched = (int(y_first[members].min()), int(y_last[members].max()) + 1)
            cols_touched = (int(x_first[members].min()), int(x_last[members].max()) + 1)
            chunks.append((start, start + m, int(batch[members[0]]), rows_touched, cols_touched))
            s += m
    return order, chunks


# -- RoIPool ------------------------------------------------------------------------------------------------


def _round_half_away(xp, v, t):
    """C's ``round``: halves go away from zero (NumPy's ``round`` goes to even)."""
    whole = xp.trunc(v)
    frac = v - whole
    return whole + xp.where(xp.abs(frac) >= t(0.5), xp.sign(v), t(0))


def _pool_bins(xp, start, end, pooled: int, size: int, t):
    """torchvision's RoIPool bins along one axis: ``[start, end)`` per (RoI, bin), clamped to the map."""
    # Values far outside any map are clipped before the int conversion (torchvision's int would overflow).
    start = xp.astype(xp.clip(start, t(-(2.0**31)), t(2.0**31)), xp.int64)
    end = xp.astype(xp.clip(end, t(-(2.0**31)), t(2.0**31)), xp.int64)
    length = xp.maximum(end - start + 1, 1)
    bin_size = xp.astype(length, t) / t(pooled)
    p = xp.astype(xp.arange(pooled), t)
    lo = xp.astype(xp.floor(p[None, :] * bin_size[:, None]), xp.int64) + start[:, None]
    hi = xp.astype(xp.ceil((p[None, :] + t(1)) * bin_size[:, None]), xp.int64) + start[:, None]
    return xp.clip(lo, 0, size), xp.clip(hi, 0, size)


def _pool_chunks(len_h: np.ndarray, len_w: np.ndarray, unit: int) -> list[np.ndarray]:
    """Group RoIs whose largest bins have the same size, so a chunk visits no window offset in vain.

    ``unit`` is the number of elements one RoI adds to each per-offset array; chunks stay under the budget.
    """
    key = len_h * (int(len_w.max(initial=0)) + 1) + len_w
    order = np.argsort(key, kind="stable")
    per_chunk = max(1, _CHUNK_ELEMENTS // max(1, unit))
    chunks = []
    for group in np.split(order, np.flatnonzero(np.diff(key[order])) + 1):
        chunks.extend(group[s : s + per_chunk] for s in range(0, group.size, per_chunk))
    return chunks


def roi_pool(xp, input, rois, spatial_scale: float, output_size):
    """RoIPool forward: ``(output (K, C, Ph, Pw), argmax (K, C, Ph, Pw) int64)``.

    torchvision semantics: box corners are ``round(coord * spatial_scale)`` (halves away from zero), the RoI
    is at least 1x1 pixel (inclusive corners), bin ``p`` spans ``[floor(p * s), ceil((p + 1) * s))`` offset
    by the RoI start and clamped to the map. An empty bin gives 0 and argmax -1; otherwise the first maximum
    in row-major order wins (NaN and values <= -FLT_MAX are never picked). ``argmax`` is ``h * W + w``.
    """
    n, c, h, w = input.shape
    ph, pw = output_size
    t = _coord_dtype(input.dtype)
    k = rois.shape[0]
    out = xp.zeros((k, c, ph, pw), dtype=input.dtype)
    argmax = xp.full((k, c, ph, pw), -1, dtype=xp.int64)
    if k == 0 or c == 0:
        return out, argmax
    r = xp.astype(rois, t)
    scale = t(spatial_scale)
    x1, y1, x2, y2 = (_round_half_away(xp, r[:, j] * scale, t) for j in range(1, 5))
    hs, he = _pool_bins(xp, y1, y2, ph, h, t)
    ws, we = _pool_bins(xp, x1, x2, pw, w, t)
    len_h, len_w = he - hs, we - ws
    empty = (len_h[:, :, None] <= 0) | (len_w[:, None, :] <= 0)
    batch = xp.astype(rois[:, 0], xp.int64)
    # Channels last, so that each gathered pixel is one contiguous C-vector, with an extra row and column of
    # -inf that window positions past a bin's end read instead of being masked.
    pixels = xp.full((n, h + 1, w + 1, c), -np.inf, dtype=t)
    pixels[:, :h, :w] = xp.transpose(input, (0, 2, 3, 1))
    host_lh = np.asarray(_host_list(xp.max(len_h, axis=1)), dtype=np.int64)
    host_lw = np.asarray(_host_list(xp.max(len_w, axis=1)), dtype=np.int64)
    # The running max starts at torchvision's -FLT_MAX: a value must beat it strictly to be picked, so NaN
    # and values <= -FLT_MAX never are.
    floor_value = t(-_FLT_MAX)
    for idx in _pool_chunks(host_lh, host_lw, ph * pw * c):
        sel = xp.asarray(idx)
        m = idx.size
        lh, lw = max(1, int(host_lh[idx].max())), max(1, int(host_lw[idx].max()))
        images = batch[sel][:, None, None]
        row0, col0 = hs[sel], ws[sel]
        rows_in, cols_in = len_h[sel], len_w[sel]
        best = xp.full((m, ph, pw, c), floor_value, dtype=t)
        # 1 + the window offset of the current max (0: none yet); the narrowest integer type that fits.
        code_type = xp.int16 if lh * lw < 2**15 - 1 else xp.int32
        code = xp.zeros((m, ph, pw, c), dtype=code_type)
        better = xp.zeros((m, ph, pw, c), dtype=xp.bool)
        # Visit window offsets in row-major order (a small constant: the chunk's largest bin), one pixel per
        # bin and a C-vector per pixel. Only a strictly larger value is an improvement, so the max's code is
        # that of its first occurrence; offsets grow, so the latest improvement is also the largest code.
        for i in range(lh):
            rows = xp.where(i < rows_in, row0 + i, h)[:, :, None]
            for j in range(lw):
                cols = xp.where(j < cols_in, col0 + j, w)[:, None, :]
                v = pixels[images, rows, cols]
                xp.greater(v, best, out=better)
                xp.fmax(best, v, out=best)  # fmax ignores NaN, which torchvision never picks either
                xp.maximum(code, better * code_type(i * lw + j + 1), out=code)
        offset = xp.astype(code, xp.int64) - 1
        flat = (row0[:, :, None, None] + offset // lw) * w + col0[:, None, :, None] + offset % lw
        value = xp.where(empty[sel][..., None], t(0), best)
        out[sel] = xp.transpose(xp.astype(value, input.dtype), (0, 3, 1, 2))
        argmax[sel] = xp.transpose(xp.where(offset >= 0, flat, -1), (0, 3, 1, 2))
    return out, argmax


def roi_pool_backward(xp, grad, rois, argmax, input_shape):
    """Gradient of :func:`roi_pool`: each bin's gradient goes to its argmax pixel (none for argmax -1)."""
    n, c, h, w = (int(v) for v in input_shape)
    k = grad.shape[0]
    if k == 0 or c == 0 or grad.size == 0:
        return xp.zeros((n, c, h, w), dtype=grad.dtype)
    batch = xp.astype(rois[:, 0], xp.int64)
    planes = (batch[:, None] * c + xp.arange(c, dtype=xp.int64)[None, :]) * (h * w)
    picked = argmax >= 0
    target = xp.where(picked, planes[:, :, None, None] + argmax, 0)
    weights = xp.where(picked, grad, xp.zeros_like(grad))
    # Several bins (of one or several RoIs) may share an argmax pixel: a segment sum, deterministic.
    summed = xp.bincount(xp.reshape(target, (-1,)), weights=xp.reshape(weights, (-1,)), minlength=n * c * h * w)
    return xp.reshape(xp.astype(summed, grad.dtype), (n, c, h, w))


KERNELS = {
    "roi_align": roi_align,
    "roi_align_backward": roi_align_backward,
    "roi_pool": roi_pool,
    "roi_pool_backward": roi_pool_backward,
}
