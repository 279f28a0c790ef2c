"""Implicit-GEMM correlation: the convolution's matrix product with its windows read in place, no im2col.

The product ``out[pixel, o] = sum_(i, j, c) buf[window(pixel) + tap(i, j) + c] * w[(i, j, c), o]`` is the
GEMM of :mod:`.gemm` whose rows of ``a`` are not a matrix in memory but each pixel's window in the padded
channels-last input ``buf``: the register tile (:func:`.gemm._tile_rows`) finds its rows through a table of
window origins, and the reduction runs over one kernel tap (one contiguous run of channels) at a time, the
tap's offset added to every origin. Against im2col + GEMM this skips writing and re-reading the
``(pixels, kh*kw*C)`` patch matrix (at 28x28, 256 channels, rate 6: 2.3 ms of a 20 ms forward).

Rows are ordered by output region (:func:`.conv._regions`): every 12-row panel of the table lies in one region,
so it runs over that region's runs only and skips taps that read padding alone (dilated convolutions on small
maps). Each region's rows are padded to whole panels by repeating its last pixel; those rows are computed and
dropped. The weights are packed once per call into 32-column tiles whose rows are contiguous, so a tile visit
streams them in order (read in place from the ``(K, O)`` matrix, rows 1 KiB apart, the product ran 10% slower).
Each thread sums a chunk of panels in its own staging rows and scatters them into the NCHW output at once, while
they are still in its level-2 cache (a separate scatter pass over the whole result cost 1.1 ms of a 15 ms
forward at rate 6).

A strided convolution's input gradient (:func:`transposed`) goes through the same product, split by phase: the
input positions with the same ``(y + ph) % sh, (z + pw) % sw`` are reached by the same taps, so each phase is a
stride-1 correlation of ``grad_out`` with its taps, read in place in one padded channels-last copy; the pieces go
band by band of rows through the phases so that a chunk's scatter writes whole lines of the result. This
replaces a transposed GEMM and a col2im scatter-add.

The weight gradient (:func:`weight_gradient`) is the same product with the pixels as its reduction: the rows
of ``grad_out``, copied channels-last in region order, times the windows, whose offsets a second tile variant
(:func:`.gemm._tile_gathered_b`) reads from a table; each region's pixels add only to the taps it sees.

Parallel over chunks of panels, each with an equal share of the multiply-adds (:func:`_chunk_bounds`); within
a chunk the loop nest is the GEMM's: a run of taps (the weight rows it uses, in the level-2 cache), then panels
(the 12 windows' channels, in level 1), then 32-column tiles.
Accumulation order per output: taps in ``(i, j)`` order, channels increasing, independent of the threads.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from segcore.kernels.conv import padded
from segcore.kernels.workspace import scratch

from . import gemm
from .relayout import copy_rows, copy_to_rows, transpose_block
from .shares import SHARED_COPY_BYTES

__all__ = ["correlate", "transposed", "transposed_applies", "weight_gradient", "weight_gradient_applies"]

# Channels per tile visit: the GEMM's reduction block.
_KC = gemm._KC
# Panels per chunk of work: 32 panels (384 windows) of a 256-channel result are 384 KiB, which stay in the
# level-2 cache with the weight rows of one tap while every tap is added in.
_CHUNK_PANELS = 32


@njit(nogil=True, cache=True)
def _scatter(rows, o_pad, og, targets, first, count, out, channel_step):
    """``out[targets[first + r] + o*channel_step] = rows[r*o_pad + o]`` for ``r < count``, ``o < og`` and every
    target that is not negative: channels-last rows into the flattened NCHW output (``channel_step`` its plane
    size, ``targets`` each row's ``(b, 0, y, z)`` offset).

    Blocks of 32 rows: a block's rows (32 KiB at 256 channels) stay in the level-1 cache while each channel's
    values are read down a column and written along an output row. Where a block's targets run on in steps of
    one (a region's pixels along an output row), each run goes as one loop of contiguous stores per channel;
    else (the input gradient's phases, a stride apart) the block goes channel by channel. Indices are
    unsigned, so that Numba adds no wraparound test for negative ones: with both, the scatter of a rate-6
    layer's result ran in 0.57 against 1.52 ms on one core (stride 2: 0.20 against 0.67 ms). Runs of at least
    a vector's lanes of rows, with at least as many channels, go by square blocks transposed in registers
    (:func:`.relayout.transpose_block`), the last ones moved back to end at the run's and the channels' ends
    (writing some values twice, the same values).
    """
    block = 32
    lanes = gemm.VECTOR_BYTES // rows.itemsize
    step, width = np.uint64(channel_step), np.uint64(o_pad)
    for r0 in range(0, count, block):
        r1 = min(count, r0 + block)
        breaks = 0  # rows whose target does not follow the previous row's
        for r in range(r0 + 1, r1):
            breaks += targets[first + r] != targets[first + r - 1] + 1
        if 4 * breaks > r1 - r0:  # short runs: one channel at a time over the whole block
            for o in range(og):
                channel = np.uint64(o)
                for r in range(r0, r1):
                    target = targets[first + r]
                    if target >= 0:
                        out[np.uint64(target) + channel * step] = rows[np.uint64(r) * width + channel]
            continue
        r = r0
        while r < r1:
            target = targets[first + r]
            stop = r + 1
            if target >= 0:
                while stop < r1 and targets[first + stop] == target + (stop - r):
                    stop += 1
                if stop - r >= lanes and og >= lanes:
                    for k0 in range(r, stop, lanes):
                        k = min(k0, stop - lanes)
                        for o0 in range(0, og, lanes):
                            o = min(o0, og - lanes)
                            transpose_block(rows, k * o_pad + o, o_pad, out, target + k - r + o * channel_step,
                                            channel_step)  # fmt: skip
                    r = stop
                    continue
                length, source = np.uint64(stop - r), np.uint64(r) * width
                for o in range(og):
                    channel = np.uint64(o)
                    destination = np.uint64(target) + channel * step
                    for k in range(length):
                        out[destination + k] = rows[source + k * width + channel]
            r = stop


@njit(nogil=True, parallel=True, cache=True, error_model="numpy")
def _correlate_panels(buf, table, panel_runs, runs, packed, k_total, o_pad, og, targets, out, channel_step, mr, nr,
                      bounds, staging):  # fmt: skip
    """``out[targets[r] + o*channel_step] = sum over the runs u of the row's panel of
    sum_k buf[table[r] + off_u + k] * w[row_u + k, o]`` for every row ``r`` of the table and ``o < og``.

    ``runs`` rows are ``(buf offset, first weight row, length)``: a contiguous run of values in ``buf`` (from a
    window's origin) and of rows of the ``(k_total, o_pad)`` weight matrix ``w``, given ``packed`` as its
    ``nr``-column tiles one after the other, each ``(k_total, nr)`` with its rows contiguous (so that a tile
    visit streams its weights in order). ``panel_runs`` rows are a panel's ``[first, stop)`` runs. Rows with a
    negative target are computed and dropped. Chunk ``q`` of the work is panels ``[bounds[q], bounds[q+1])``;
    ``staging`` is ``(threads, at least the largest chunk's panels*mr*o_pad)``: each thread sums its chunk of
    panels there (in its level-2 cache) and scatters it into ``out`` at once.
    """
    for q in prange(bounds.size - 1):
        p0, p1 = bounds[q], bounds[q + 1]
        if p1 <= p0:
            continue
        rows = staging[numba.get_thread_id()]
        rows[: (p1 - p0) * mr * o_pad] = 0
        # The runs of this chunk's panels: a range, since panels of one piece are adjacent and share theirs.
        for u in range(panel_runs[p0:p1, 0].min(), panel_runs[p0:p1, 1].max()):
            off, w0, length = runs[u, 0], runs[u, 1], runs[u, 2]
            for k0 in range(0, length, _KC):
                kc = min(_KC, length - k0)
                for r in range(p0, p1):
                    if u < panel_runs[r, 0] or u >= panel_runs[r, 1]:
                        continue
                    for n0 in range(0, o_pad, nr):
                        gemm._tile_rows(
                            buf, table, r * mr, off + k0, packed, n0 * k_total + (w0 + k0) * nr, nr,
                            rows, (r - p0) * mr * o_pad + n0, o_pad, kc, True,
                        )  # fmt: skip
        _scatter(rows, o_pad, og, targets, p0 * mr, (p1 - p0) * mr, out, channel_step)


@njit(nogil=True, parallel=True, cache=True, error_model="numpy")
def _weight_panels(
    rows, first_channel, channels, buf, origins, spans, region_taps, runs, dwm, og, k_total, mr, nr, row_parts,
    column_parts,
):  # fmt: skip
    """``dwm[o, w0 + c] += sum_p rows[p*channels + first_channel + o] * buf[origins[p] + off + c]`` for every
    run ``(i, j0, j1, off, w0, length)`` and ``c < length``, ``p`` over the pixels of each region (``spans``
    rows ``(first, stop)`` into ``origins``) whose taps ``region_taps`` meet the run's.

    ``rows`` is the flattened ``grad_out`` as ``(pixels, channels)`` rows in the order of ``origins`` (region
    order; ``first_channel`` the group's first channel): the tile steps through it evenly and reads only the
    windows' origins from a table. ``dwm`` is the flattened ``(og, k_total)`` weight-gradient matrix. Work
    items are (one of ``row_parts`` shares of the row panels, one of ``column_parts`` shares of a run's column
    tiles, run): disjoint pieces of ``dwm``, every element summed over regions and pixels in order. A last panel
    or tile that would run past ``og`` rows or ``length`` columns is moved back to end there and computed
    aside, its new rows and columns added after; so ``og >= mr`` and ``length >= nr``.
    """
    row_panels = (og + mr - 1) // mr
    count = runs.shape[0]
    parts = row_parts * column_parts
    for item in prange(parts * count):
        row_part, column_part = divmod(item // count, column_parts)
        u = item % count
        i, j0, j1, off, w0, length = runs[u, 0], runs[u, 1], runs[u, 2], runs[u, 3], runs[u, 4], runs[u, 5]
        tile = np.empty(mr * nr, dtype=dwm.dtype)
        for s in range(spans.shape[0]):
            if i < region_taps[s, 0] or i >= region_taps[s, 1] or j1 <= region_taps[s, 2] or j0 >= region_taps[s, 3]:
                continue
            for k0 in range(spans[s, 0], spans[s, 1], _KC):
                kc = min(_KC, spans[s, 1] - k0)
                for r in range(row_part * row_panels // row_parts, (row_part + 1) * row_panels // row_parts):
                    o0 = min(r * mr, og - mr)
                    a0 = first_channel + o0 + k0 * channels
                    tiles = (length + nr - 1) // nr
                    for t in range(column_part * tiles // column_parts, (column_part + 1) * tiles // column_parts):
                        n0 = t * nr
                        c0 = min(n0, length - nr)
                        if o0 == r * mr and c0 == n0:
                            gemm._tile_gathered_b(rows, a0, channels, origins, k0, buf, off + c0, dwm,
                                                  o0 * k_total + w0 + c0, k_total, kc, True)  # fmt: skip
                            continue
                        gemm._tile_gathered_b(rows, a0, channels, origins, k0, buf, off + c0, tile, 0, nr, kc, False)
                        for a in range(r * mr - o0, mr):
                            for b in range(n0 - c0, nr):
                                dwm[(o0 + a) * k_total + w0 + c0 + b] += tile[a * nr + b]


def _runs(kernel, geo, c: int, cg: int, wp: int):
    """The reduction as runs of contiguous channels: one per tap, or one per kernel row when adjacent taps are
    adjacent in the buffer (dilation 1 along the row, no groups), rows ``(i, j0, j1, buf offset, weight row,
    length)`` with buffer offsets relative to a window's origin."""
    (kh, kw), (_, _, _, _, dh, dw) = kernel, geo
    runs = []
    for i in range(kh):
        if dw == 1 and cg == c:
            runs.append((i, 0, kw, i * dh * wp * c, i * kw * cg, kw * cg))
            continue
        for j in range(kw):
            runs.append((i, j, j + 1, (i * dh * wp + j * dw) * c, (i * kw + j) * cg, cg))
    return np.array(runs, dtype=np.intp).reshape(-1, 6)


def _region_pixels(region, n: int, out_hw, geo, buf_shape, start=(0, 0)):
    """Window origins (flat buffer offsets) and flat output pixels ``b*Ho*Wo + y*Wo + z`` of the pixels of one
    region, image-major; output pixel ``(y, z)``'s window starts at buffer row and column
    ``(start[0] + y*sh, start[1] + z*sw)`` of its image (negative when the buffer has no padding)."""
    (ho, wo), (sh, sw, _, _, _, _), (_, hp, wp, c) = out_hw, geo, buf_shape
    b, y, z = np.meshgrid(
        np.arange(n), np.arange(region.rows.start, region.rows.stop),
        np.arange(region.cols.start, region.cols.stop), indexing="ij",
    )  # fmt: skip
    b, y, z = b.ravel(), y.ravel(), z.ravel()
    return ((b * hp + y * sh + start[0]) * wp + z * sw + start[1]) * c, (b * ho + y) * wo + z


def _region_runs(runs, taps):
    """The ``(buf offset, weight row, length)`` of the :func:`_runs` rows that meet a region's taps
    ``(i0, i1, j0, j1)``."""
    i0, i1, j0, j1 = taps
    meets = (runs[:, 0] >= i0) & (runs[:, 0] < i1) & (runs[:, 2] > j0) & (runs[:, 1] < j1)
    return runs[meets][:, 3:]


def _panel_layout(pieces, mr: int):
    """Table rows in whole panels from ``pieces``, each ``(window origins, output pixels, runs)``: the origins
    one after the other, each piece padded to whole panels by repeating its last origin; the output pixel of
    every row (-1 for padding rows); each panel's ``[first, stop)`` rows of the concatenated runs."""
    origins, pixels, panel_runs, runs = [], [], [], []
    first = 0
    for origin, pixel, piece_runs in pieces:
        if origin.size == 0:
            continue
        pad = -origin.size % mr
        origins += [origin, np.full(pad, origin[-1])]
        pixels += [pixel, np.full(pad, -1)]
        stop = first + len(piece_runs)
        panel_runs.append(np.tile(np.array([first, stop]), ((origin.size + pad) // mr, 1)))
        runs.append(np.asarray(piece_runs, dtype=np.intp).reshape(-1, 3))
        first = stop
    if not origins:
        return np.empty(0, np.intp), np.empty(0, np.intp), np.empty((0, 2), np.intp), np.empty((0, 3), np.intp)
    return tuple(np.concatenate(part).astype(np.intp) for part in (origins, pixels, panel_runs, runs))


# Layouts of recent calls, by geometry: a training loop calls each layer with the same shapes every step.
_LAYOUTS: dict[tuple, tuple] = {}
_LAYOUTS_KEPT = 64


def _cached(key: tuple, build):
    """``_LAYOUTS[key]``, made by ``build()`` when missing (the cache is emptied once it holds
    :data:`_LAYOUTS_KEPT`)."""
    layout = _LAYOUTS.get(key)
    if layout is None:
        layout = build()
        if len(_LAYOUTS) >= _LAYOUTS_KEPT:
            _LAYOUTS.clear()
        _LAYOUTS[key] = layout
    return layout


def _region_key(regions) -> tuple:
    """The regions as a hashable part of a cache key (their slices are not hashable)."""
    return tuple((r.rows.start, r.rows.stop, r.cols.start, r.cols.stop, r.taps) for r in regions)


def _targets(pixels, plane: int, channels: int):
    """Each row's offset in the flattened NCHW output at channel 0 (``pixels`` flat ``b*plane + pixel``, -1 for
    rows to drop, which stay -1)."""
    return np.where(pixels >= 0, pixels // plane * channels * plane + pixels % plane, -1)


def _layout(regions, n: int, kernel, out_hw, geo, buf_shape, channels: int, groups: int, mr: int, start=(0, 0)):
    """(window origins, output offsets, panel runs, runs) for :func:`_correlate_panels`, region by region (each
    region's runs those of the taps it keeps), from a cache keyed by the geometry; ``start`` as for
    :func:`_region_pixels`."""

    def build():
        runs = _runs(kernel, geo, buf_shape[3], buf_shape[3] // groups, buf_shape[2])
        pieces = [(*_region_pixels(r, n, out_hw, geo, buf_shape, start), _region_runs(runs, r.taps)) for r in regions]
        table, pixels, panel_runs, piece_runs = _panel_layout(pieces, mr)
        return table, _targets(pixels, out_hw[0] * out_hw[1], channels), panel_runs, piece_runs

    key = (_region_key(regions), n, tuple(kernel), tuple(out_hw), tuple(geo), tuple(buf_shape), channels, groups, mr)
    key += (tuple(start),)
    return _cached(key, build)


@njit(nogil=True, parallel=True, cache=True)
def _pack_tiles(weights, packed):
    """``packed[g, t, a, b, c, j] = weights[g, t*nr + j, a, b, c]``, zero for columns past ``N``: ``weights``
    ``(G, N, r0, r1, r2)`` (any view), ``packed`` ``(G, tiles, r0, r1, r2, nr)``; one (group, tile) per work
    item, each tile row written whole."""
    g, columns, r0, r1, r2 = weights.shape
    tiles, nr = packed.shape[1], packed.shape[5]
    for item in prange(g * tiles):
        group, t = item // tiles, item % tiles
        width = min(nr, columns - t * nr)
        for a in range(r0):
            for b in range(r1):
                for c in range(r2):
                    for j in range(width):
                        packed[group, t, a, b, c, j] = weights[group, t * nr + j, a, b, c]
                    for j in range(width, nr):
                        packed[group, t, a, b, c, j] = 0


def _packed(weights, nr: int):
    """``(G, N, *reduction)`` weights (column ``n`` of each group's product; the three reduction axes flatten to
    its ``K`` rows) as ``(G, tiles, K, nr)``: its ``nr``-column tiles, each tile's rows contiguous, columns past
    ``N`` zero, from any view. From 2 MiB one compiled copy parallel over tiles (:func:`_pack_tiles`): cold
    (the weights out of cache) it took 0.20 against 0.27 ms for NumPy's transposing copies in shares at
    256x256 3x3, 0.73 against 1.01 at 512. Smaller weights stay with one NumPy copy on the calling thread,
    which at 128x64 3x3 took half the time of the parallel loop (0.06 against 0.12 ms in a forward)."""
    g, columns, *reduction = weights.shape
    whole, rest = divmod(columns, nr)
    packed = np.empty((g, whole + (rest > 0), *reduction, nr), dtype=weights.dtype)
    if weights.nbytes >= SHARED_COPY_BYTES:
        _pack_tiles(weights, packed)
    else:
        packed[:, :whole] = np.moveaxis(weights[:, : whole * nr].reshape(g, whole, nr, *reduction), 2, -1)
        if rest:
            packed[:, whole] = 0
            packed[:, whole, ..., :rest] = np.moveaxis(weights[:, whole * nr :], 1, -1)
    return packed.reshape(g, packed.shape[1], -1, nr)


def _chunk_bounds(panel_runs, runs, threads: int):
    """Panel boundaries ``[0, ..., panels]`` of the chunks of :func:`_correlate_panels`: a multiple of
    ``threads`` chunks of about :data:`_CHUNK_PANELS` panels, each with an equal share of the multiply-adds
    (a panel's are the sum of its runs' lengths), so that the threads' equal runs of chunks take equally long.

    Why by work and not by panels: a dilated layer's regions keep different numbers of taps (a rate-6 layer on
    28x28: 4 in the corners, 6 along the edges, 9 inside), and equal runs of panels gave one of two threads
    1806 tap-panels and the other 1653.
    """
    panels = panel_runs.shape[0]
    chunks = threads * max(1, -(-panels // (threads * _CHUNK_PANELS)))
    before = np.concatenate(([0], np.cumsum(runs[:, 2])))  # run lengths summed up to each run
    done = np.cumsum(before[panel_runs[:, 1]] - before[panel_runs[:, 0]])  # work up to and with each panel
    if panels == 0 or done[-1] == 0:
        return np.linspace(0, panels, chunks + 1).astype(np.intp)
    # Each inner boundary just after the panel that completes its share.
    shares = done[-1] * np.arange(1, chunks) / chunks
    inner = np.searchsorted(done, shares, side="left") + 1
    return np.concatenate(([0], np.minimum(inner, panels), [panels])).astype(np.intp)


def _run_panels(buf, layout, weights, groups: int, out, plane: int, in_group: int, out_group: int):
    """:func:`_correlate_panels` for each group over ``layout`` (window origins, output offsets, panel runs,
    runs), ``weights`` as for :func:`_packed`; the group's windows start ``in_group`` values further in the
    flat buffer, its output planes ``out_group`` planes further in the flat output."""
    table, targets, panel_runs, runs = layout
    mr, nr = gemm.tile_shape(buf.dtype)
    packed = _packed(weights, nr)
    tiles, k_total = packed.shape[1], packed.shape[2]
    o_pad, og = tiles * nr, weights.shape[1]
    threads = numba.get_num_threads()
    bounds = _chunk_bounds(panel_runs, runs, threads)
    chunk = int(np.diff(bounds).max())
    staging = scratch(np, "numba.conv.staging", (threads, chunk * mr * o_pad), buf.dtype)
    flat_buf, flat_out = buf.reshape(-1), out.reshape(-1)
    for g in range(groups):
        _correlate_panels(
            flat_buf[g * in_group :], table, panel_runs, runs, packed[g].reshape(-1), k_total, o_pad, og, targets,
            flat_out[g * out_group * plane :], plane, mr, nr, bounds, staging,
        )  # fmt: skip
    return out


def correlate(buf, weights, regions, n: int, kernel, out_hw, geo, groups: int, out, start=(0, 0)):
    """``out`` (NCHW, ``(N, groups*Og, Ho, Wo)``) of the grouped correlation of the channels-last input ``buf``
    ``(N, Hp, Wp, C)`` (the windows of output pixel ``(y, z)`` start at ``(start[0] + y*sh, start[1] + z*sw)``:
    ``(0, 0)`` for a buffer padded for every window, ``(-ph, -pw)`` for an unpadded one where
    :func:`reads_inside`) with ``weights`` ``(groups, Og, Cg, kh, kw)`` (any view). float32/float64 only."""
    mr, _ = gemm.tile_shape(buf.dtype)
    cg, og = buf.shape[3] // groups, weights.shape[1]
    layout = _layout(regions, n, kernel, out_hw, geo, buf.shape, out.shape[1], groups, mr, start)
    # Rows of the product in (i, j, c) order, the order of a window's runs.
    return _run_panels(buf, layout, np.moveaxis(weights, 2, 4), groups, out, out_hw[0] * out_hw[1], cg, og)


def _phase_taps(k: int, stride: int, dilation: int, residue: int) -> list[tuple[int, int]]:
    """``(tap, steps back)`` along one axis for the input positions ``y`` with ``(y + pad) % stride == residue``:
    the taps ``i`` that reach such a ``y`` from an output position (``i*dilation = residue`` modulo the
    stride), and how many output positions before ``(y + pad - residue) / stride`` they read."""
    return [(i, (i * dilation - residue) // stride) for i in range(k) if (i * dilation - residue) % stride == 0]


def _transposed_layout(n: int, in_hw, kernel, geo, buf_shape, back, channels: int, og: int, mr: int):
    """(window origins, output offsets, panel runs, runs) of the strided transposed product, one piece per phase
    of the input: positions ``(y, z)`` with the same ``((y + ph) % sh, (z + pw) % sw)`` see the same taps,
    tap ``(i, j)`` reading ``grad_out`` at ``((y + ph - i*dh) / sh, (z + pw - j*dw) / sw)``. The buffer is
    ``grad_out`` channels-last after ``back`` rows and columns of zeros: a window's origin is its phase's base
    position ``((y + ph - ry) / sh, (z + pw - rz) / sw)``, each tap a run of ``og`` channels some steps before
    it, its weight rows ``(i*kw + j)*og``. Cached by geometry."""

    def build():
        (h, w), (kh, kw), (sh, sw, ph, pw, dh, dw) = in_hw, kernel, geo
        _, hb, wb, o = buf_shape
        phases = []
        for ry in range(sh):
            for rz in range(sw):
                b, y, z = np.meshgrid(
                    np.arange(n), np.arange((ry - ph) % sh, h, sh), np.arange((rz - pw) % sw, w, sw), indexing="ij"
                )
                b, y, z = b.ravel(), y.ravel(), z.ravel()
                base_y, base_z = (y + ph - ry) // sh, (z + pw - rz) // sw
                origins = ((b * hb + base_y + back[0]) * wb + base_z + back[1]) * o
                runs = [
                    (-(steps_i * wb + steps_j) * o, (i * kw + j) * og, og)
                    for i, steps_i in _phase_taps(kh, sh, dh, ry)
                    for j, steps_j in _phase_taps(kw, sw, dw, rz)
                ]
                phases.append((b * hb + base_y, origins, (b * h + y) * w + z, runs))
        # Pieces by band of base rows, the phases of a band one after the other: a chunk of panels then covers
        # whole lines of the input gradient, so that its scatter writes whole cache lines.
        band = _band_rows(-(-w // sw), mr)
        pieces = []
        for first in range(0, n * hb, band):
            for rows, origins, pixels, runs in phases:
                lo, hi = np.searchsorted(rows, [first, first + band])
                pieces.append((origins[lo:hi], pixels[lo:hi], runs))
        table, pixels, panel_runs, runs = _panel_layout(pieces, mr)
        return table, _targets(pixels, h * w, channels), panel_runs, runs

    key = ("transposed", n, tuple(in_hw), tuple(kernel), tuple(geo), tuple(buf_shape), tuple(back), channels, og, mr)
    return _cached(key, build)


def _band_rows(columns: int, mr: int) -> int:
    """Rows of ``columns`` pixels per piece of the transposed product: at least 8 panels' worth, and of the
    counts up to twice that the one that wastes the smallest share of its last panel."""
    least = max(1, -(-8 * mr // columns))
    return min(range(least, 2 * least + 1), key=lambda rows: (-(rows * columns) % mr) / (rows * columns))


def transposed_applies(dtype, cg: int) -> bool:
    """Whether :func:`transposed` serves a strided input gradient: float32/float64 and at least half a tile's
    columns of input channels per group (the product's columns; narrower groups would waste most of a tile)."""
    if dtype not in (np.float32, np.float64):
        return False
    return 2 * cg >= gemm.tile_shape(dtype)[1]


def transposed(grad_out, w, in_hw, geo, groups: int):
    """The input gradient of a strided convolution, ``(N, C, H, W)`` for ``in_hw``: for each phase of the input
    (see :func:`_transposed_layout`) a stride-1 product of ``grad_out``'s windows with the taps that reach it,
    read in place in one padded channels-last copy of ``grad_out``; no col2im and no scatter-add. ``w`` is
    ``(O, C/groups, kh, kw)``. Only where :func:`transposed_applies`."""
    mr, _ = gemm.tile_shape(grad_out.dtype)
    n, o = grad_out.shape[:2]
    _, cg, kh, kw = w.shape
    og = o // groups
    (h, wd), (sh, sw, ph, pw, dh, dw) = in_hw, geo
    # Zeros before grad_out for the taps that reach back furthest, and rows and columns up to the last base
    # position of any phase (grad_out's rows past it are never read; those missing from it read zeros).
    back = ((kh - 1) * dh // sh, (kw - 1) * dw // sw)
    extent = (back[0] + (h - 1 + ph) // sh + 1, back[1] + (wd - 1 + pw) // sw + 1)
    buf = padded(np, grad_out, back, extent, channels_last=True, copy=copy_rows)
    layout = _transposed_layout(n, in_hw, (kh, kw), geo, buf.shape, back, groups * cg, og, mr)
    # Rows of the product in (i, j, o) order: tap (i, j)'s run of Og channels at (i*kw + j)*Og.
    weights = np.moveaxis(w.reshape(groups, og, cg, kh, kw), 1, 4)
    dx = np.empty((n, groups * cg, h, wd), dtype=grad_out.dtype)
    return _run_panels(buf, layout, weights, groups, dx, h * wd, og, cg)


def _weight_layout(regions, n: int, kernel, out_hw, geo, buf_shape, groups: int, start=(0, 0)):
    """(pixel order, window origins, region spans, region taps, runs) for :func:`_weight_panels`: every output
    pixel once, in region order (each region's image-major), no padding rows (the pixels are the reduction, not
    tile rows). The order is each pixel's place in it, ``(N, Ho, Wo)``, where :func:`weight_gradient` puts
    its row of ``grad_out``; None for one region, whose order is the pixels' own. ``spans`` are each region's
    ``[first, stop)`` pixels."""

    def build():
        located = [_region_pixels(r, n, out_hw, geo, buf_shape, start) for r in regions]
        origins, pixels = (np.concatenate(part).astype(np.intp) for part in zip(*located))
        order = None
        if len(regions) > 1:
            order = np.empty(pixels.size, dtype=np.intp)
            order[pixels] = np.arange(pixels.size)
            order = order.reshape(n, *out_hw)
        counts = [n * (r.rows.stop - r.rows.start) * (r.cols.stop - r.cols.start) for r in regions]
        stops = np.cumsum(counts, dtype=np.intp)
        region_spans = np.stack([stops - np.asarray(counts, dtype=np.intp), stops], axis=1)
        region_taps = np.array([r.taps for r in regions], dtype=np.intp).reshape(-1, 4)
        runs = _runs(kernel, geo, buf_shape[3], buf_shape[3] // groups, buf_shape[2])
        return order, origins, region_spans, region_taps, runs

    key = ("weight", _region_key(regions), n, tuple(kernel), tuple(out_hw), tuple(geo), tuple(buf_shape), groups,
           tuple(start))  # fmt: skip
    return _cached(key, build)


def _weight_shares(og: int, mr: int, length: int, nr: int, threads: int) -> tuple[int, int]:
    """``(row_parts, column_parts)`` for :func:`_weight_panels`: the thread count's shares taken along the
    row panels of ``og`` rows or along the column tiles of a run of ``length``, whichever splits more evenly
    (rows on a tie). 128 output channels are 11 row panels, 5 and 6 on two threads; a 192-column run's 6 tiles
    split 3 and 3."""
    row_panels, tiles = -(-og // mr), -(-length // nr)

    def largest_share(units: int) -> float:
        return -(-units // threads) / (units / threads)

    return (threads, 1) if largest_share(row_panels) <= largest_share(tiles) else (1, threads)


def reads_inside(regions, kernel, geo, groups: int) -> bool:
    """Whether the implicit products over ``regions`` read only taps inside the input, so that their buffer
    needs no padding: the output is cut into regions (each keeps exactly the taps inside the input for all
    its pixels, see :func:`.conv._regions`), and no run of merged taps (a kernel row at dilation 1, no
    groups) reaches past a region's taps."""
    if len(regions) < 2:
        return False
    merged = geo[5] == 1 and groups == 1
    return not merged or all(r.taps[2] == 0 and r.taps[3] == kernel[1] for r in regions)


def weight_gradient_applies(buf, kernel, geo, og: int, groups: int) -> bool:
    """Whether :func:`weight_gradient` serves this case: float32/float64, at least a tile's rows of output
    channels per group and a tile's columns in every run of channels."""
    if buf.dtype not in (np.float32, np.float64):
        return False
    mr, nr = gemm.tile_shape(buf.dtype)
    runs = _runs(kernel, geo, buf.shape[3], buf.shape[3] // groups, buf.shape[2])
    return og >= mr and int(runs[:, 5].min()) >= nr


def weight_gradient(buf, grad_out, regions, kernel, geo, groups: int, dwm, start=(0, 0)):
    """``dwm`` ``(groups, Og, kh*kw*Cg)`` in ``(i, j, c)`` column order, zeroed, gets the weight gradient:
    ``grad_out`` (NCHW) contracted over pixels with the windows of the channels-last input ``buf`` (output
    pixel ``(y, z)``'s window at ``(start[0] + y*sh, start[1] + z*sw)``, as for :func:`correlate`), without an
    im2col matrix. Only where :func:`weight_gradient_applies`."""
    mr, nr = gemm.tile_shape(buf.dtype)
    n, channels, ho, wo = grad_out.shape
    og, k_total = dwm.shape[1], dwm.shape[2]
    cg = buf.shape[3] // groups
    order, origins, spans, region_taps, runs = _weight_layout(
        regions, n, kernel, (ho, wo), geo, buf.shape, groups, start
    )
    flat_buf = buf.reshape(-1)
    # grad_out as (N*Ho*Wo, C) rows in region order, in one compiled copy parallel over rows: the tile then
    # steps through it evenly, each group from its first channel on (no copy per region or group). Read in
    # pixel order through a table of row offsets instead, the rate-6 and rate-18 weight gradients ran 1-5%
    # slower (one more table load per step).
    grad_rows = scratch(np, "numba.conv.grad_rows", (n * ho * wo, channels), buf.dtype)
    if order is None:
        copy_rows(np.moveaxis(grad_rows.reshape(n, ho, wo, channels), 3, 1), grad_out)
    else:
        copy_to_rows(grad_rows, grad_out, order)
    length = int(runs[0, 5]) if len(runs) else nr  # every run of a layer has the same length
    row_parts, column_parts = _weight_shares(og, mr, length, nr, numba.get_num_threads())
    for g in range(groups):
        # The group's windows start g*cg further in the buffer.
        _weight_panels(
            grad_rows.reshape(-1), g * og, channels, flat_buf[g * cg :], origins, spans, region_taps, runs,
            dwm[g].reshape(-1), og, k_total, mr, nr, row_parts, column_parts,
        )  # fmt: skip
    return dwm
