"""Numba CPU RoIAlign and RoIPool, forward and backward, with torchvision's semantics.

Same contracts as :mod:`segcore.kernels.roi`; ``rois`` is ``(K, 5)`` ``(batch_index, x1, y1, x2, y2)``. Sample
positions, bins, clamping and rounding are computed per RoI in the input's scalar type with torchvision's
operation order (:func:`_align_box`, :func:`_axis_taps`). The average of a RoIAlign bin's bilinear samples
factorises into a short list of rows and one of columns with summed weights ("taps", usually 2-4 of each), so
a bin is a weighted sum of the few pixels it touches, each read once: its "terms", 4-16 of them.

Where the time goes, and what the kernels do about it:

* Arithmetic. Every inner loop runs over channels, contiguous: the feature map and the input gradient are held
  channels-last, one C-vector per pixel or bin, rows padded to whole 64-byte vectors. :func:`_weighted_rows`
  adds up to eight terms to a C-vector in one pass (one load per term, one store). It is written in LLVM IR:
  numba's own loops over 256 channels spent as long on runtime alias checks and remainder loops as on the sums.
* Layout changes. The callers' arrays are channels-first: the kernels transpose in 8x8 register tiles
  (:func:`_transpose_tile`), several times faster than element by element.
* Main memory. A RoI's output (forward) or gradient (backward) block, ``C * Ph * Pw`` elements, is not in any
  cache: the kernels ask for its lines (:func:`_prefetch`) while they compute the bins before, rather than wait
  for the lines one by one when they get to it.

* RoIAlign forward: parallel over chunks of RoIs, each RoI written by one task. Its taps are computed in the
  task, its bins summed channels-last in a cache-resident block (the division by the sample count folded into
  the weights when exact, see :func:`_count_scale`) and the block transposed into the RoI's ``(C, Ph, Pw)``.
* RoIAlign backward: the scatter is turned into a gather. Per RoI and axis the taps are inverted (for each
  pixel, the bins that read it: :func:`_invert_taps`), so every pixel a RoI touches receives all of that RoI's
  terms in one read-modify-write of its C-vector. A task owns a band of rows of one image of a channels-last
  gradient (whole images when there are at least as many as threads): it visits the image's RoIs in the given
  order, transposes each one's gradient into bins and adds the terms of the pixels in its band, then transposes
  its band into the ``(N, C, H, W)`` result. No two tasks write the same element, and every element sums the
  same terms in the same order (RoI, then bin) however the rows are banded, so the result is bit-identical from
  run to run and for any number of threads: deterministic by construction (there is no atomic mode on the CPU).
* RoIPool backward: parallel over channels, each adding its bins' gradients at their argmax in RoI order.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["roi_align", "roi_align_backward", "roi_pool", "roi_pool_backward", "KERNELS"]

# RoIs per forward task: enough to amortise the task's scratch, few enough to balance the threads.
_CHUNK = 8
# Pixels per task of the channels-last copy of the input: each channel's run of pixels is read in order, and
# runs of 2 KiB (float32) are long enough for the hardware prefetcher (runs of 64 pixels took 2-3x longer).
_CHANNELS_LAST_PIXELS = 512
# Side of the register tiles of the transposes: 8 float32 (a 256-bit row) or 8 float64 (512-bit).
_TILE = 8
# _weighted_rows works on 64-byte vectors (16 float32, 8 float64); channels-last rows are padded to a multiple.
_VECTOR_BYTES = 64
# Terms one pass of _weighted_rows adds at most (a bin has 4-16 with sampling_ratio=2, a pixel 1-4 in the
# backward); a pass per term count is compiled.
_MAX_TERMS = 8
_CACHE_LINE = 64
_FLT_MAX = float(np.finfo(np.float32).max)


def _coord_dtype(dtype) -> type:
    # torchvision computes in the input's scalar type; float16 input is computed in float32 (as the reference).
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def _padded(channels: int, t) -> int:
    """``channels`` rounded up to whole _VECTOR_BYTES vectors of ``t``: a channels-last row's length."""
    lanes = _VECTOR_BYTES // np.dtype(t).itemsize
    return -(-channels // lanes) * lanes


# -- LLVM building blocks -----------------------------------------------------------------------------------
# Three intrinsics for what numba's loops do slowly here. They take C-contiguous arrays and flat element
# offsets, and check no bounds: the kernels pass offsets that lie inside the arrays.


def _vector_pointer(builder, data, start, lanes):
    """``data + start`` as a pointer to ``lanes`` elements."""
    return builder.bitcast(builder.gep(data, [start]), ir.VectorType(data.type.pointee, lanes).as_pointer())


def _mask(values):
    return ir.Constant(ir.VectorType(ir.IntType(32), len(values)), list(values))


@intrinsic
def _transpose_tile(typingctx, src, src_start, src_stride, dst, dst_start, dst_stride):
    """``dst[dst_start + j * dst_stride + i] = src[src_start + i * src_stride + j]`` for ``i, j < 8``.

    Eight row loads, 24 shuffles (the classic unpack / shuffle / swap-halves network) and eight row stores:
    neither loop order of an element-wise transpose vectorises, one side is always strided.
    """
    if not all(isinstance(a, types.Array) and a.layout == "C" and a.dtype == src.dtype for a in (src, dst)):
        return None
    if src.dtype not in (types.float32, types.float64):
        return None
    sig = types.void(src, types.intp, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        src_array, s0, ss, dst_array, d0, ds = args
        align = context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))
        s_data = context.make_array(signature.args[0])(context, builder, src_array).data
        d_data = context.make_array(signature.args[3])(context, builder, dst_array).data

        def row(data, start, stride, i):
            offset = builder.add(start, builder.mul(stride, ir.Constant(start.type, i)))
            return _vector_pointer(builder, data, offset, _TILE)

        r = [builder.load(row(s_data, s0, ss, i), align=align) for i in range(_TILE)]
        # t: pairs of rows interleaved; u: 4x4 transposes within each 128-bit half; then the halves swapped.
        t = []
        for i in range(0, _TILE, 2):
            t.append(builder.shuffle_vector(r[i], r[i + 1], _mask([0, 8, 1, 9, 4, 12, 5, 13])))
            t.append(builder.shuffle_vector(r[i], r[i + 1], _mask([2, 10, 3, 11, 6, 14, 7, 15])))
        low, high = _mask([0, 1, 8, 9, 4, 5, 12, 13]), _mask([2, 3, 10, 11, 6, 7, 14, 15])
        u = [builder.shuffle_vector(t[a], t[b], m) for a, b in ((0, 2), (1, 3), (4, 6), (5, 7)) for m in (low, high)]
        halves = (_mask([0, 1, 2, 3, 8, 9, 10, 11]), _mask([4, 5, 6, 7, 12, 13, 14, 15]))
        for j in range(4):
            for half, mask in enumerate(halves):
                column = builder.shuffle_vector(u[j], u[4 + j], mask)
                builder.store(column, row(d_data, d0, ds, j + 4 * half), align=align)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _weighted_rows(typingctx, dst, dst_start, src, starts, weights, first, n, width, accumulate):
    """``dst[dst_start + i] = (dst[dst_start + i] if accumulate else 0) + sum_j weights[j] * src[starts[j] + i]``
    for ``i < width``, over the ``n`` terms ``j`` in ``[first, first + n)``, ``1 <= n <= _MAX_TERMS``.

    ``starts`` (int64) and ``weights`` (the arrays' float type) are 1-D term lists; ``width`` is a positive
    multiple of a _VECTOR_BYTES vector. The terms are added left to right, then to ``dst``: a fixed order.

    One vector of channels per iteration, every term loaded once. Compiled as a loop per term count and mode
    (``switch`` on ``n``), with no alias checks or remainder loops: numba's loops compiled from the same Python
    spent as long on those as on the arithmetic (a pass is only 256 channels), and a helper taking arrays would
    add atomic reference-count updates to every call.
    """
    arrays = (dst, src, weights)
    if not all(isinstance(a, types.Array) and a.layout == "C" and a.dtype == dst.dtype for a in arrays):
        return None
    if dst.dtype not in (types.float32, types.float64) or starts != types.Array(types.int64, 1, "C"):
        return None
    sig = types.void(dst, types.intp, src, starts, weights, types.intp, types.intp, types.intp, types.boolean)

    def codegen(context, builder, signature, args):
        _, d0, _, _, _, j0, n, width, accumulate = args
        size = context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))
        lanes = _VECTOR_BYTES // size
        intp = d0.type
        d_data, s_data, starts_data, weights_data = (
            context.make_array(signature.args[i])(context, builder, args[i]).data for i in (0, 2, 3, 4)
        )
        undefined = ir.Constant(ir.VectorType(d_data.type.pointee, lanes), ir.Undefined)

        def splat(x):
            one = builder.insert_element(undefined, x, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, undefined, _mask([0] * lanes))

        function = builder.function
        done = function.append_basic_block("done")
        switch = builder.switch(n, done)
        for count in range(1, _MAX_TERMS + 1):
            case = function.append_basic_block(f"terms{count}")
            switch.add_case(ir.Constant(n.type, count), case)
            builder.position_at_end(case)
            terms = [builder.add(j0, ir.Constant(intp, j)) for j in range(count)]
            offsets = [builder.load(builder.gep(starts_data, [j])) for j in terms]
            factors = [splat(builder.load(builder.gep(weights_data, [j]))) for j in terms]
            loops = [function.append_basic_block(f"terms{count}_{mode}") for mode in ("set", "add")]
            builder.cbranch(accumulate, loops[1], loops[0])
            for add, loop in zip((False, True), loops):
                builder.position_at_end(loop)
                i = builder.phi(intp)
                i.add_incoming(ir.Constant(intp, 0), case)
                total = None
                for offset, factor in zip(offsets, factors):
                    term = builder.load(_vector_pointer(builder, s_data, builder.add(offset, i), lanes), align=size)
                    term = builder.fmul(factor, term)
                    total = term if total is None else builder.fadd(total, term)
                target = _vector_pointer(builder, d_data, builder.add(d0, i), lanes)
                if add:
                    total = builder.fadd(builder.load(target, align=size), total)
                builder.store(total, target, align=size)
                following = builder.add(i, ir.Constant(intp, lanes))
                i.add_incoming(following, loop)
                builder.cbranch(builder.icmp_signed("<", following, width), loop, done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


def _prefetcher(write: bool):
    """An intrinsic ``(array, start, lines)``: ask the caches for ``lines`` cache lines of ``array`` from
    element ``start`` on, to read or (``write``) to overwrite them. A hint: it neither faults nor waits."""

    @intrinsic
    def prefetch(typingctx, array, start, lines):
        if not (isinstance(array, types.Array) and array.layout == "C"):
            return None
        sig = types.void(array, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            array_value, start_value, lines_value = args
            data = context.make_array(signature.args[0])(context, builder, array_value).data
            byte, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            hint = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]), "llvm.prefetch.p0"
            )
            base = builder.bitcast(builder.gep(data, [start_value]), byte)
            with cgutils.for_range(builder, lines_value) as loop:
                line = builder.gep(base, [builder.mul(loop.index, ir.Constant(loop.index.type, _CACHE_LINE))])
                # (address, read 0 / write 1, locality 3 = keep in every level, data cache)
                builder.call(hint, [line, ir.Constant(i32, int(write)), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen

    return prefetch


_prefetch = _prefetcher(write=False)
_prefetch_for_write = _prefetcher(write=True)


# -- transposes ---------------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _transpose(src, src_start, src_stride, rows, cols, dst, dst_start, dst_stride, by_source_rows):
    """``dst[dst_start + j * dst_stride + i] = src[src_start + i * src_stride + j]`` for ``i < rows, j < cols``.

    ``src`` and ``dst`` are flat (1-D): whole tiles go through :func:`_transpose_tile`, the ragged edges element
    by element. The side in main memory should be walked in order: ``by_source_rows`` visits the source block
    of rows by block of rows, otherwise the destination is filled so (the other side's partial cache lines are
    then re-read from cache).
    """
    full_rows = rows - rows % _TILE
    full_cols = cols - cols % _TILE
    if by_source_rows:
        for i in range(0, full_rows, _TILE):
            for j in range(0, full_cols, _TILE):
                _transpose_tile(
                    src, src_start + i * src_stride + j, src_stride, dst, dst_start + j * dst_stride + i, dst_stride
                )
    else:
        for j in range(0, full_cols, _TILE):
            for i in range(0, full_rows, _TILE):
                _transpose_tile(
                    src, src_start + i * src_stride + j, src_stride, dst, dst_start + j * dst_stride + i, dst_stride
                )
    for i in range(full_rows, rows):
        for j in range(cols):
            dst[dst_start + j * dst_stride + i] = src[src_start + i * src_stride + j]
    for i in range(full_rows):
        for j in range(full_cols, cols):
            dst[dst_start + j * dst_stride + i] = src[src_start + i * src_stride + j]


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _to_channels_last(x, xt):
    """``xt[(b * H + y) * W + x, :C] = x[b, :, y, x]`` (``xt``'s rows may be longer than C), in tasks of
    _CHANNELS_LAST_PIXELS pixels that each write one contiguous block."""
    n, c, h, w = x.shape
    pixels = h * w
    blocks = (pixels + _CHANNELS_LAST_PIXELS - 1) // _CHANNELS_LAST_PIXELS
    src, dst = x.reshape(-1), xt.reshape(-1)
    stride = xt.shape[1]
    for task in prange(n * blocks):
        b = task // blocks
        p0 = (task % blocks) * _CHANNELS_LAST_PIXELS
        count = min(_CHANNELS_LAST_PIXELS, pixels - p0)
        _transpose(src, b * c * pixels + p0, pixels, c, count, dst, (b * pixels + p0) * stride, stride, False)


def _channels_last(x, t):
    """``x`` ``(N, C, H, W)`` as a new ``(N, H, W, C)`` array of type ``t``."""
    n, c, h, w = x.shape
    xt = np.empty((n, h, w, c), dtype=t)
    _to_channels_last(np.ascontiguousarray(x, dtype=t), xt.reshape(n * h * w, c))
    return xt


# -- RoIAlign geometry --------------------------------------------------------------------------------------


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
def _count_scale(samples, count):
    """``(inverse, exact)`` for a bin's sample count (``samples`` as an integer, ``count`` as a float >= 1).

    torchvision divides each bin's sum by the count. When it is a power of two (``exact``), multiplying by its
    inverse is exact and commutes with the rounding of every product and sum (barring subnormals): the kernels
    fold it into the terms' weights, where it costs nothing. Other counts (adaptive sampling) get a division.
    """
    t = type(count)
    exact = samples & (samples - 1) == 0
    return (t(1.0) / count if exact else t(1.0)), exact


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
def _add_tap(index, weight, p, n, pixel, w):
    """Add weight ``w`` on ``pixel`` to bin ``p``'s list of ``n`` taps; returns the new length."""
    for a in range(n):
        if index[p, a] == pixel:
            weight[p, a] += w
            return n
    index[p, n] = pixel
    weight[p, n] = w
    return n + 1


@njit(cache=True, error_model="numpy")
def _axis_taps(start, bin_size, grid, pooled, size, index, weight, count):
    """One RoI's bins along one axis as pixel taps: each bin's samples' bilinear weights, merged per pixel.

    ``index`` and ``weight`` are ``(pooled, >= _tap_room(grid, size))``, ``count`` ``(pooled,)``: bin ``p``
    reads pixels ``index[p, :count[p]]`` (distinct) with summed weights ``weight[p, :count[p]]``.
    """
    t = type(start)
    for p in range(pooled):
        n = 0
        for i in range(grid):
            # torchvision's operation order: start + p * bin + (i + .5) * bin / grid.
            coord = start + t(p) * bin_size + t(i + 0.5) * bin_size / t(grid)
            low, high, w_low, w_high, inside = _sample(coord, size)
            if inside:
                n = _add_tap(index, weight, p, n, low, w_low)
                n = _add_tap(index, weight, p, n, high, w_high)
        count[p] = n


@njit(cache=True, error_model="numpy")
def _tap_room(grid, size):
    """Taps one bin has at most along an axis: two pixels per sample, all distinct pixels of the map."""
    return min(2 * grid, size)


@njit(cache=True, error_model="numpy")
def _invert_taps(index, weight, count, pixels, first, bins, weights):
    """One RoI's taps along one axis grouped by pixel: returns the number ``d`` of distinct pixels;
    ``pixels[:d]`` lists them in increasing order, and the ``i``-th is read by the bins
    ``bins[first[i]:first[i + 1]]`` (in increasing order) with weights ``weights[first[i]:first[i + 1]]``."""
    m = 0
    for p in range(count.shape[0]):
        for a in range(count[p]):
            # Insertion sort by pixel: a bin's pixels are distinct and bins arrive in order, so ties keep bin order.
            i = m
            while i > 0 and pixels[i - 1] > index[p, a]:
                pixels[i], bins[i], weights[i] = pixels[i - 1], bins[i - 1], weights[i - 1]
                i -= 1
            pixels[i], bins[i], weights[i] = index[p, a], p, weight[p, a]
            m += 1
    # Collapse the sorted entries' pixels into the distinct pixels and where each one's entries start.
    distinct = 0
    for i in range(m):
        if i == 0 or pixels[i] != pixels[distinct - 1]:
            pixels[distinct] = pixels[i]
            first[distinct] = i
            distinct += 1
    first[distinct] = m
    return distinct


@njit(cache=True, error_model="numpy")
def _pass_size(remaining):
    """Terms in the next pass of :func:`_weighted_rows`: as few passes as possible, of near-equal size (9 terms:
    5 + 4, not 8 + 1)."""
    passes = -(-remaining // _MAX_TERMS)
    return -(-remaining // passes)


@njit(cache=True, error_model="numpy")
def _prefetch_steps(lines, passes):
    """Cache lines to ask for per pass so that ``lines`` are asked for over ``passes`` passes."""
    return -(-lines // max(1, passes))


# -- RoIAlign -----------------------------------------------------------------------------------------------


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _roi_align_forward(pixels, h, w, rois, scale, aligned, sampling_ratio, out):
    """``pixels``: the input channels-last, ``(N * H * W, C')`` with rows padded to whole vectors."""
    stride = pixels.shape[1]
    k_total, c, ph, pw = out.shape
    bins = ph * pw
    t = rois.dtype.type
    flat_out = out.reshape(-1)
    line = _CACHE_LINE // out.itemsize
    for task in prange((k_total + _CHUNK - 1) // _CHUNK):
        # Scratch reused by the chunk's RoIs: tap and term lists (grown when an adaptive grid needs longer
        # ones) and one RoI's bins channels-last (bins * C' elements: stays in cache).
        room_h = room_w = 0
        y_index, y_weight = np.empty((ph, room_h), np.int64), np.empty((ph, room_h), t)
        x_index, x_weight = np.empty((pw, room_w), np.int64), np.empty((pw, room_w), t)
        term_start, term_weight = np.empty(0, np.int64), np.empty(0, t)
        y_count, x_count = np.empty(ph, np.int64), np.empty(pw, np.int64)
        block = np.empty((bins, stride), pixels.dtype)
        for k in range(task * _CHUNK, min(k_total, (task + 1) * _CHUNK)):
            start_h, start_w, bin_h, bin_w, grid_h, grid_w, count = _align_box(
                rois, k, scale, aligned, ph, pw, sampling_ratio
            )
            if _tap_room(grid_h, h) > room_h or _tap_room(grid_w, w) > room_w:
                room_h, room_w = max(room_h, _tap_room(grid_h, h)), max(room_w, _tap_room(grid_w, w))
                y_index, y_weight = np.empty((ph, room_h), np.int64), np.empty((ph, room_h), t)
                x_index, x_weight = np.empty((pw, room_w), np.int64), np.empty((pw, room_w), t)
                term_start, term_weight = np.empty(room_h * room_w, np.int64), np.empty(room_h * room_w, t)
            _axis_taps(start_h, bin_h, grid_h, ph, h, y_index, y_weight, y_count)
            _axis_taps(start_w, bin_w, grid_w, pw, w, x_index, x_weight, x_count)
            inverse, exact = _count_scale(grid_h * grid_w, count)
            image = int(rois[k, 0]) * h * w
            # The RoI's output block is written once its bins are done: ask for its cache lines a few per bin
            # meanwhile, so that the transpose's stores do not each wait for a line to come from memory.
            ahead, left = k * c * bins, -(-c * bins // line)
            step = _prefetch_steps(left, bins)
            for py in range(ph):
                for px in range(pw):
                    q = py * pw + px
                    if left > 0:
                        _prefetch_for_write(flat_out, ahead, min(step, left))
                        ahead, left = ahead + step * line, left - step
                    # The bin's terms: every (row tap, column tap) pair, in that order.
                    m = 0
                    for a in range(y_count[py]):
                        row = image + y_index[py, a] * w
                        for e in range(x_count[px]):
                            term_start[m] = (row + x_index[px, e]) * stride
                            term_weight[m] = y_weight[py, a] * x_weight[px, e] * inverse
                            m += 1
                    if m == 0:  # every sample outside the map
                        block[q, :] = 0
                    done = 0
                    while done < m:
                        size = _pass_size(m - done)
                        _weighted_rows(block, q * stride, pixels, term_start, term_weight, done, size, stride, done > 0)
                        done += size
                    if not exact:
                        for ch in range(c):
                            block[q, ch] = block[q, ch] / count
            # (bins, C) -> this RoI's (C, Ph, Pw) block of the output.
            _transpose(block.reshape(-1), 0, stride, bins, c, flat_out, k * c * bins, bins, False)


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _roi_align_backward(grad, rois, scale, aligned, sampling_ratio, order, first_roi, band, acc, dx):
    """``acc``: scratch for the input gradient channels-last, ``(N * H * W, C')`` with rows padded to whole
    vectors; image ``b``'s RoIs are ``order[first_roi[b]:first_roi[b + 1]]`` in their given order; a task owns
    ``band`` rows of one image."""
    k_total, c, ph, pw = grad.shape
    n, _, h, w = dx.shape
    stride = acc.shape[1]
    bins, pixels = ph * pw, h * w
    bands = -(-h // band)
    t = grad.dtype.type
    flat_grad, flat_acc, flat_dx = grad.reshape(-1), acc.reshape(-1), dx.reshape(-1)
    line = _CACHE_LINE // grad.itemsize
    for task in prange(n * bands):
        b = task // bands
        y0 = (task % bands) * band
        y1 = min(h, y0 + band)
        acc[(b * h + y0) * w : (b * h + y1) * w] = 0
        # Scratch, grown when an adaptive grid needs more: the RoI's taps, and the same grouped by pixel per
        # axis (:func:`_invert_taps`); its gradient one row per bin (zero past C: never written); one pixel's
        # terms (at most one per bin).
        room_h = room_w = 0
        y_index, y_weight = np.empty((ph, room_h), np.int64), np.empty((ph, room_h), t)
        x_index, x_weight = np.empty((pw, room_w), np.int64), np.empty((pw, room_w), t)
        y_pixels, y_bins, y_weights = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, t)
        x_pixels, x_bins, x_weights = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, t)
        y_first, x_first = np.empty(1, np.int64), np.empty(1, np.int64)
        y_count, x_count = np.empty(ph, np.int64), np.empty(pw, np.int64)
        local = np.zeros((bins, stride), t)
        flat_local = local.reshape(-1)
        term_start, term_weight = np.empty(bins, np.int64), np.empty(bins, t)
        for position in range(first_roi[b], first_roi[b + 1]):
            k = order[position]
            start_h, start_w, bin_h, bin_w, grid_h, grid_w, count = _align_box(
                rois, k, scale, aligned, ph, pw, sampling_ratio
            )
            if _tap_room(grid_h, h) > room_h:
                room_h = _tap_room(grid_h, h)
                y_index, y_weight = np.empty((ph, room_h), np.int64), np.empty((ph, room_h), t)
                y_pixels, y_bins = np.empty(ph * room_h, np.int64), np.empty(ph * room_h, np.int64)
                y_weights, y_first = np.empty(ph * room_h, t), np.empty(ph * room_h + 1, np.int64)
            if _tap_room(grid_w, w) > room_w:
                room_w = _tap_room(grid_w, w)
                x_index, x_weight = np.empty((pw, room_w), np.int64), np.empty((pw, room_w), t)
                x_pixels, x_bins = np.empty(pw * room_w, np.int64), np.empty(pw * room_w, np.int64)
                x_weights, x_first = np.empty(pw * room_w, t), np.empty(pw * room_w + 1, np.int64)
            _axis_taps(start_h, bin_h, grid_h, ph, h, y_index, y_weight, y_count)
            rows = _invert_taps(y_index, y_weight, y_count, y_pixels, y_first, y_bins, y_weights)
            # The RoI's rows in this band (its distinct rows are sorted); none: nothing to do here.
            low, high = 0, rows
            while low < high and y_pixels[low] < y0:
                low += 1
            while high > low and y_pixels[high - 1] >= y1:
                high -= 1
            if low == high:
                continue
            _axis_taps(start_w, bin_w, grid_w, pw, w, x_index, x_weight, x_count)
            cols = _invert_taps(x_index, x_weight, x_count, x_pixels, x_first, x_bins, x_weights)
            _transpose(flat_grad, k * c * bins, bins, c, bins, flat_local, 0, stride, True)
            inverse, exact = _count_scale(grid_h * grid_w, count)
            if not exact:
                # torchvision divides each bin's gradient by the sample count (see _count_scale).
                for q in range(bins):
                    for ch in range(c):
                        local[q, ch] = local[q, ch] / count
            # The image's next RoI's gradient is in main memory: ask for its lines a few per pixel, so that it
            # arrives while this RoI is added (its transpose would otherwise wait for every line).
            ahead, left = 0, 0
            if position + 1 < first_roi[b + 1]:
                ahead, left = order[position + 1] * c * bins, -(-c * bins // line)
            step = _prefetch_steps(left, (high - low) * cols)
            for i in range(low, high):
                row = b * pixels + y_pixels[i] * w
                for j in range(cols):
                    if left > 0:
                        _prefetch(flat_grad, ahead, min(step, left))
                        ahead, left = ahead + step * line, left - step
                    # Every bin that reads pixel (y, x), in bin order, with the product of its tap weights.
                    m = 0
                    for a in range(y_first[i], y_first[i + 1]):
                        for e in range(x_first[j], x_first[j + 1]):
                            term_start[m] = (y_bins[a] * pw + x_bins[e]) * stride
                            term_weight[m] = y_weights[a] * x_weights[e] * inverse
                            m += 1
                    target = (row + x_pixels[j]) * stride
                    done = 0
                    while done < m:
                        size = _pass_size(m - done)
                        _weighted_rows(acc, target, local, term_start, term_weight, done, size, stride, True)
                        done += size
        # The band, (rows * W, C) channels-last, into the (N, C, H, W) result.
        first_pixel, band_pixels = (b * h + y0) * w, (y1 - y0) * w
        plane = b * c * pixels + y0 * w
        _transpose(flat_acc, first_pixel * stride, stride, band_pixels, c, flat_dx, plane, pixels, False)


def _align_setting(rois, t, spatial_scale, output_size, sampling_ratio, aligned):
    ph, pw = (int(v) for v in output_size)
    return np.ascontiguousarray(rois, dtype=t), t(spatial_scale), int(sampling_ratio), bool(aligned), ph, pw


def roi_align(xp, input, rois, spatial_scale: float, output_size, sampling_ratio: int, aligned: bool):
    """RoIAlign forward: ``(N, C, H, W)`` input, ``(K, 5)`` rois -> ``(K, C, Ph, Pw)``."""
    n, c, h, w = input.shape
    t = _coord_dtype(input.dtype)
    r, scale, sampling_ratio, aligned, ph, pw = _align_setting(
        rois, t, spatial_scale, output_size, sampling_ratio, aligned
    )
    k = r.shape[0]
    if not (k and n and c and h and w):
        return np.zeros((k, c, ph, pw), dtype=input.dtype)
    # The input channels-last, one row per pixel, the channels padded with zeros to whole vectors.
    pixels = np.empty((n * h * w, _padded(c, t)), dtype=t)
    pixels[:, c:] = 0
    _to_channels_last(np.ascontiguousarray(input, dtype=t), pixels)
    out = np.empty((k, c, ph, pw), dtype=t)  # every element is written
    _roi_align_forward(pixels, h, w, r, scale, aligned, sampling_ratio, out)
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
    r, scale, sampling_ratio, aligned, ph, pw = _align_setting(
        rois, t, spatial_scale, output_size, sampling_ratio, aligned
    )
    k = r.shape[0]
    if not (k and n and c and h and w):
        return np.zeros((n, c, h, w), dtype=grad.dtype)
    # Each image's RoIs, in the given order. A task owns a band of rows of one image: whole images if there
    # are enough for the threads, else equal bands. Banding changes no bit; what it costs is that a RoI across
    # a band border is prepared (taps, gradient transpose) by both tasks.
    batch = r[:, 0].astype(np.int64)
    order = np.argsort(batch, kind="stable")
    first_roi = np.searchsorted(batch[order], np.arange(n + 1))
    band = -(-h // -(-numba.get_num_threads() // n))
    acc = np.empty((n * h * w, _padded(c, t)), dtype=t)  # each task zeroes its band
    dx = np.empty((n, c, h, w), dtype=t)  # every element is written
    g = np.ascontiguousarray(grad, dtype=t)
    _roi_align_backward(g, r, scale, aligned, sampling_ratio, order, first_roi, band, acc, dx)
    return dx.astype(grad.dtype, copy=False)


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
