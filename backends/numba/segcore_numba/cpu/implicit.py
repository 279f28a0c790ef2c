"""Implicit-GEMM correlation: the convolution's matrix product with its windows read in place, no im2col.

The product ``out[pixel, o] = sum_(i, j, c) buf[window(pixel) + tap(i, j) + c] * w[(i, j, c), o]`` is the
GEMM of :mod:`.gemm` whose rows of ``a`` are not a matrix in memory but each pixel's window in the padded
channels-last input ``buf``: the register tile (:func:`.gemm._tile_rows`) finds its rows through a table of
window origins, and the reduction runs over one kernel tap (one contiguous run of channels) at a time, the
tap's offset added to every origin. Against im2col + GEMM this skips writing and re-reading the
``(pixels, kh*kw*C)`` patch matrix (at 28x28, 256 channels, rate 6: 2.3 ms of a 20 ms forward).

Rows are ordered by output region (:func:`.conv._regions`): every 12-row panel of the table lies in one region,
so it runs over that region's taps only and skips taps that read padding alone (dilated convolutions on small
maps). Each region's rows are padded to whole panels by repeating its last pixel; those rows are computed and
dropped. The channels-last result then goes into the NCHW output by one parallel scatter.

The weight gradient (:func:`weight_gradient`) is the same product with the pixels as its reduction: the rows
of ``grad_out``, channels-last in region order, times the windows, whose offsets a second tile variant
(:func:`.gemm._tile_gathered_b`) reads from the same kind of table; each region's pixels add only to the taps
it sees.

Parallel over chunks of panels; within a chunk the loop nest is the GEMM's: a run of taps (the weight rows it
uses, in the level-2 cache), then panels (the 12 windows' channels, in level 1), then 32-column tiles.
Accumulation order per output: taps in ``(i, j)`` order, channels increasing, independent of the threads.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from segcore.kernels.workspace import scratch

from . import gemm

__all__ = ["correlate"]

# Channels per tile visit: the GEMM's reduction block.
_KC = gemm._KC
# Panels per chunk of work: 32 panels (384 windows) of a 256-channel result are 384 KiB, which stay in the
# level-2 cache with the weight rows of one tap while every tap is added in.
_CHUNK_PANELS = 32


@njit(nogil=True, parallel=True, cache=True, error_model="numpy")
def _correlate_panels(buf, table, panel_taps, runs, wt, staging, o_pad, mr, nr, chunk, chunks):
    """``staging[r, :] = sum over runs of buf[table[r] + run offset + k] * wt[run row + k, :]`` for every row
    ``r`` of the table, summing only the runs whose taps the row's panel keeps.

    ``runs`` rows are ``(i, j0, j1, buf offset, first weight row, length)``: taps ``(i, j0..j1)`` whose channels
    are one contiguous run of ``length`` values in ``buf`` and rows in ``wt`` ``(K, o_pad)``. ``panel_taps``
    rows are a panel's ``(i0, i1, j0, j1)``. ``staging`` is ``(rows, o_pad)`` flattened.
    """
    panels = table.size // mr
    for q in prange(chunks):
        p0 = q * chunk
        p1 = min(panels, p0 + chunk)
        staging[p0 * mr * o_pad : p1 * mr * o_pad] = 0
        for u in range(runs.shape[0]):
            i, j0, j1, off, w0, length = runs[u, 0], runs[u, 1], runs[u, 2], runs[u, 3], runs[u, 4], runs[u, 5]
            for k0 in range(0, length, _KC):
                kc = min(_KC, length - k0)
                for r in range(p0, p1):
                    if i < panel_taps[r, 0] or i >= panel_taps[r, 1] or j1 <= panel_taps[r, 2] or j0 >= panel_taps[r, 3]:
                        continue
                    for n0 in range(0, o_pad, nr):
                        gemm._tile_rows(
                            buf, table, r * mr, off + k0, 1, wt, (w0 + k0) * o_pad + n0, o_pad,
                            staging, r * mr * o_pad + n0, o_pad, kc, True,
                        )  # fmt: skip


@njit(nogil=True, parallel=True, cache=True)
def _scatter(staging, o_pad, og, targets, out, channel_step):
    """``out[targets[r] + o*channel_step] = staging[r, o]`` for ``o < og`` and every staging row ``r`` whose
    target is not negative: the channels-last rows into the flattened NCHW output (``channel_step`` its plane
    size, ``targets`` each row's ``(b, o0, y, z)`` offset).

    Blocks of 32 rows: a block's rows (32 KiB at 256 channels) stay in the level-1 cache while each channel's
    32 values are read down a column and written along an output row.
    """
    rows = targets.size
    block = 32
    for t in prange((rows + block - 1) // block):
        r0 = t * block
        r1 = min(rows, r0 + block)
        for o in range(og):
            for r in range(r0, r1):
                target = targets[r]
                if target >= 0:
                    out[target + o * channel_step] = staging[r * o_pad + o]


@njit(nogil=True, parallel=True, cache=True, error_model="numpy")
def _weight_panels(rows, buf, origins, spans, region_taps, runs, dwm, og, k_total, mr, nr, parts):
    """``dwm[o, w0 + c] += sum_p rows[p, o] * buf[origins[p] + off + c]`` for every run
    ``(i, j0, j1, off, w0, length)`` and ``c < length``, ``p`` over the pixels of each region (``spans`` rows
    ``(first, stop)`` into ``rows``/``origins``) whose taps ``region_taps`` meet the run's.

    ``rows`` is the flattened ``(pixels, og)`` channels-last ``grad_out`` in region order, ``dwm`` the
    flattened ``(og, k_total)`` weight-gradient matrix. Work items are (part of the row panels, run): disjoint
    pieces of ``dwm``, every element summed over regions and pixels in order. A last panel or tile that would
    run past ``og`` rows or ``length`` columns is moved back to end there and computed aside, its new rows and
    columns added after; so ``og >= mr`` and ``length >= nr``.
    """
    row_panels = (og + mr - 1) // mr
    count = runs.shape[0]
    for item in prange(parts * count):
        part = item // count
        u = item % count
        i, j0, j1, off, w0, length = runs[u, 0], runs[u, 1], runs[u, 2], runs[u, 3], runs[u, 4], runs[u, 5]
        tile = np.empty(mr * nr, dtype=dwm.dtype)
        for s in range(spans.shape[0]):
            if i < region_taps[s, 0] or i >= region_taps[s, 1] or j1 <= region_taps[s, 2] or j0 >= region_taps[s, 3]:
                continue
            for k0 in range(spans[s, 0], spans[s, 1], _KC):
                kc = min(_KC, spans[s, 1] - k0)
                for r in range(part * row_panels // parts, (part + 1) * row_panels // parts):
                    o0 = min(r * mr, og - mr)
                    a0 = k0 * og + o0
                    for n0 in range(0, length, nr):
                        c0 = min(n0, length - nr)
                        if o0 == r * mr and c0 == n0:
                            gemm._tile_gathered_b(
                                rows, a0, 1, og, origins, k0, buf, off + c0, dwm, o0 * k_total + w0 + c0, k_total, kc, True
                            )
                            continue
                        gemm._tile_gathered_b(rows, a0, 1, og, origins, k0, buf, off + c0, tile, 0, nr, kc, False)
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


def _table(regions, n: int, out_hw, geo, buf_shape, mr: int):
    """Window origins (flat buffer offsets) in region order, each region padded to whole panels; the flat
    output pixel ``b*Ho*Wo + y*Wo + z`` of every row (-1 for padding rows); each panel's taps."""
    (ho, wo), (sh, sw, _, _, _, _) = out_hw, geo
    _, hp, wp, c = buf_shape
    origins, pixels, taps = [], [], []
    for region in regions:
        b, y, z = np.meshgrid(
            np.arange(n), np.arange(region.rows.start, region.rows.stop),
            np.arange(region.cols.start, region.cols.stop), indexing="ij",
        )  # fmt: skip
        b, y, z = b.ravel(), y.ravel(), z.ravel()
        if b.size == 0:
            continue
        pad = -b.size % mr
        origin = ((b * hp + y * sh) * wp + z * sw) * c
        origins += [origin, np.full(pad, origin[-1])]
        pixels += [(b * ho + y) * wo + z, np.full(pad, -1)]
        taps += [np.tile(np.array(region.taps, dtype=np.intp), ((b.size + pad) // mr, 1))]
    if not origins:
        return np.empty(0, np.intp), np.empty(0, np.intp), np.empty((0, 4), np.intp)
    return (
        np.concatenate(origins).astype(np.intp),
        np.concatenate(pixels).astype(np.intp),
        np.concatenate(taps).astype(np.intp),
    )


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


def _layout(regions, n: int, kernel, out_hw, geo, buf_shape, channels: int, groups: int, mr: int):
    """(window origins, output offsets, panel taps, runs) for :func:`_correlate_panels` and :func:`_scatter`,
    from a cache keyed by the geometry."""

    def build():
        table, pixels, panel_taps = _table(regions, n, out_hw, geo, buf_shape, mr)
        plane = out_hw[0] * out_hw[1]
        # Each row's offset in the NCHW output at channel 0, -1 for padding rows.
        targets = np.where(pixels >= 0, pixels // plane * channels * plane + pixels % plane, -1)
        runs = _runs(kernel, geo, buf_shape[3], buf_shape[3] // groups, buf_shape[2])
        return table, targets, panel_taps, runs

    key = (_region_key(regions), n, tuple(kernel), tuple(out_hw), tuple(geo), tuple(buf_shape), channels, groups, mr)
    return _cached(key, build)


def correlate(buf, wt, regions, n: int, kernel, out_hw, geo, groups: int, out):
    """``out`` (NCHW, ``(N, groups*Og, Ho, Wo)``) of the grouped correlation of the padded channels-last input
    ``buf`` ``(N, Hp, Wp, C)`` (the windows of output pixel ``(y, z)`` start at ``(y*sh, z*sw)``) with ``wt``
    ``(groups, kh*kw*Cg, Og)`` in ``(i, j, c)`` row order. float32/float64 only."""
    mr, nr = gemm.tile_shape(buf.dtype)
    c = buf.shape[3]
    cg, og = c // groups, wt.shape[2]
    o_pad = -(-og // nr) * nr
    table, targets, panel_taps, runs = _layout(regions, n, kernel, out_hw, geo, buf.shape, out.shape[1], groups, mr)
    panels = table.size // mr
    threads = numba.get_num_threads()
    # Chunks in a multiple of the threads, so that every thread gets as many.
    chunks = threads * max(1, -(-panels // (threads * _CHUNK_PANELS)))
    chunk = -(-panels // chunks)
    staging = scratch(np, "numba.conv.staging", (table.size * o_pad,), buf.dtype)
    # The weight columns padded to whole tiles with zeros (a copy only when Og is not a multiple of the tile).
    weights = wt if o_pad == og else np.zeros((groups, wt.shape[1], o_pad), dtype=buf.dtype)
    if weights is not wt:
        weights[:, :, :og] = wt
    flat_buf, flat_out = buf.reshape(-1), out.reshape(-1)
    plane = out_hw[0] * out_hw[1]
    for g in range(groups):
        # The group's channels: its windows start g*cg further in the buffer, its output planes g*og further.
        _correlate_panels(
            flat_buf[g * cg :], table, panel_taps, runs, weights[g].reshape(-1), staging, o_pad, mr, nr, chunk, chunks
        )
        _scatter(staging, o_pad, og, targets, flat_out[g * og * plane :], plane)
    return out


def _weight_layout(regions, n: int, kernel, out_hw, geo, buf_shape, groups: int):
    """(pixel order, window origins, region spans, region taps, runs) for :func:`_weight_panels`: every output
    pixel once, in region order, no padding rows (the pixels are the reduction, not tile rows). The order
    indexes the pixels ``b*Ho*Wo + y*Wo + z``; None when it is that order already (a single region)."""

    def build():
        origins, pixels, _ = _table(regions, n, out_hw, geo, buf_shape, 1)
        order = None if len(regions) == 1 else pixels
        counts = [n * (r.rows.stop - r.rows.start) * (r.cols.stop - r.cols.start) for r in regions]
        stops = np.cumsum(counts, dtype=np.intp)
        region_spans = np.stack([stops - np.asarray(counts, dtype=np.intp), stops], axis=1)
        region_taps = np.array([r.taps for r in regions], dtype=np.intp).reshape(-1, 4)
        runs = _runs(kernel, geo, buf_shape[3], buf_shape[3] // groups, buf_shape[2])
        return order, origins, region_spans, region_taps, runs

    key = ("weight", _region_key(regions), n, tuple(kernel), tuple(out_hw), tuple(geo), tuple(buf_shape), groups)
    return _cached(key, build)


def weight_gradient_applies(buf, kernel, geo, og: int, groups: int) -> bool:
    """Whether :func:`weight_gradient` serves this case: float32/float64, at least a tile's rows of output
    channels per group and a tile's columns in every run of channels."""
    if buf.dtype not in (np.float32, np.float64):
        return False
    mr, nr = gemm.tile_shape(buf.dtype)
    runs = _runs(kernel, geo, buf.shape[3], buf.shape[3] // groups, buf.shape[2])
    return og >= mr and int(runs[:, 5].min()) >= nr


def weight_gradient(buf, grad_out, regions, kernel, geo, groups: int, dwm):
    """``dwm`` ``(groups, Og, kh*kw*Cg)`` in ``(i, j, c)`` column order, zeroed, gets the weight gradient:
    ``grad_out`` (NCHW) contracted over pixels with the windows of the padded channels-last input ``buf``
    (output pixel ``(y, z)``'s window at ``(y*sh, z*sw)``), without an im2col matrix. Only where
    :func:`weight_gradient_applies`."""
    mr, nr = gemm.tile_shape(buf.dtype)
    n, channels, ho, wo = grad_out.shape
    og, k_total = dwm.shape[1], dwm.shape[2]
    cg = buf.shape[3] // groups
    pixel_order, origins, spans, region_taps, runs = _weight_layout(regions, n, kernel, (ho, wo), geo, buf.shape, groups)
    flat_buf = buf.reshape(-1)
    # grad_out channels-last, (N*Ho*Wo, G, Og): one NumPy transposing copy (a parallel compiled gather measured
    # slower in context: a parallel loop entered right after NumPy work starts late on these VMs).
    channels_last = scratch(np, "numba.conv.grad_rows", (n * ho * wo, channels), buf.dtype)
    np.copyto(channels_last.reshape(n, ho, wo, channels), np.moveaxis(grad_out, 1, 3))
    parts = numba.get_num_threads()
    for g in range(groups):
        # The group's pixels in region order (a second copy only when there are several regions or groups);
        # its windows start g*cg further in the buffer.
        group = channels_last[:, g * og : (g + 1) * og]
        rows = group[pixel_order] if pixel_order is not None else np.ascontiguousarray(group)
        rows = rows.reshape(-1)
        _weight_panels(
            rows, flat_buf[g * cg :], origins, spans, region_taps, runs, dwm[g].reshape(-1), og, k_total, mr, nr, parts
        )
    return dwm
