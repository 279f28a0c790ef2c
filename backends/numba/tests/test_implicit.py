"""The implicit-GEMM correlation (``segcore_numba.cpu.implicit``): its layout (reduction runs, the table of
window origins in region order) by hand, and convolutions through it against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.testing import assert_backend_agrees
from segcore_numba.cpu import conv as numba_conv
from segcore_numba.cpu import gemm, implicit

MR, NR = gemm.tile_shape(np.float32)


def _spy(monkeypatch, name: str) -> list[tuple]:
    """The argument tuples of every call to ``implicit.<name>`` from now on (the function still runs)."""
    calls: list[tuple] = []
    original = getattr(implicit, name)
    monkeypatch.setattr(implicit, name, lambda *args: calls.append(args) or original(*args))
    return calls


def _agree_in_both_dtypes(seed: int, shape, weight, args, gradients: tuple[str, ...]) -> None:
    """conv2d and the named gradient kernels (``"input"``, ``"weight"``) on numba against the reference, in
    float32 and float64, on operands drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal(weight).astype(dtype)
        y = assert_backend_agrees("conv2d", "numba", x, w, *args)
        g = rng.standard_normal(y.shape).astype(dtype)
        if "input" in gradients:
            assert_backend_agrees("conv2d_grad_input", "numba", g, w, x.shape, *args)
        if "weight" in gradients:
            assert_backend_agrees("conv2d_grad_weight", "numba", x, g, w.shape, *args)


def test_runs_merge_the_taps_of_a_kernel_row_only_when_they_are_adjacent_in_the_buffer():
    # Buffer rows of width 10 with 4 channels. Dilation 1, no groups: taps (i, 0..2) are 12 adjacent values.
    merged = implicit._runs((3, 3), (1, 1, 1, 1, 1, 1), 4, 4, 10)
    assert merged.tolist() == [[i, 0, 3, i * 10 * 4, i * 3 * 4, 12] for i in range(3)]
    # Dilation 2 along columns: one run per tap, at (i*dh*W + j*dw) * C, its weight rows at (i*kw + j) * Cg.
    single = implicit._runs((2, 3), (1, 1, 0, 0, 3, 2), 4, 4, 10)
    assert single.tolist() == [[i, j, j + 1, (i * 3 * 10 + j * 2) * 4, (i * 3 + j) * 4, 4] for i in range(2) for j in range(3)]
    # Groups: a tap's channels are those of one group, so taps are never merged.
    assert implicit._runs((1, 3), (1, 1, 0, 0, 1, 1), 4, 2, 10)[:, 5].tolist() == [2, 2, 2]


def test_layout_lists_every_output_pixel_once_in_region_order_with_the_runs_of_its_region():
    n, out_hw, geo, channels = 2, (28, 28), (1, 1, 6, 6, 6, 6), 5
    regions = numba_conv._regions((28, 28), (3, 3), out_hw, geo)
    buf_shape = (n, 40, 40, 3)
    table, targets, panel_runs, runs = implicit._layout(regions, n, (3, 3), out_hw, geo, buf_shape, channels, 1, MR)
    counts = [n * (r.rows.stop - r.rows.start) * (r.cols.stop - r.cols.start) for r in regions]
    assert table.size == targets.size == panel_runs.shape[0] * MR == sum(c + -c % MR for c in counts)
    assert np.sum(targets < 0) == sum(-c % MR for c in counts)
    # Targets are NCHW offsets at channel 0: image b's pixel p at b*C*784 + p, each listed once.
    plane = 28 * 28
    assert sorted(targets[targets >= 0].tolist()) == [b * channels * plane + p for b in range(n) for p in range(plane)]
    # The first region is rows 0-5, columns 0-5: its 13th row is image 0's pixel (2, 0), whose window starts at
    # buffer row 2, column 0; its 37th image 1's pixel (0, 0).
    assert targets[12] == 2 * 28 and table[12] == (2 * 40 + 0) * 3
    assert targets[36] == channels * plane and table[36] == 40 * 40 * 3
    # It keeps taps 1-2 both ways: four runs of 3 channels, at (i*6*40 + j*6)*3 in the buffer, rows (i*3 + j)*3.
    first, stop = panel_runs[0]
    assert runs[first:stop].tolist() == [[(i * 240 + j * 6) * 3, (i * 3 + j) * 3, 3] for i in (1, 2) for j in (1, 2)]
    # The centre region (rows and columns 6-21) keeps all nine taps.
    centre = sum(c + -c % MR for c in counts[:4]) // MR
    first, stop = panel_runs[centre]
    assert stop - first == 9 and runs[first:stop, 1].tolist() == [3 * t for t in range(9)]
    # A padding row repeats its region's last window, so that the whole panel reads inside the buffer.
    first_pad = np.flatnonzero(targets < 0)[0]
    assert table[first_pad] == table[first_pad - 1]


def test_weight_layout_orders_the_pixels_by_region():
    n, out_hw, geo = 2, (28, 28), (1, 1, 6, 6, 6, 6)
    regions = numba_conv._regions((28, 28), (3, 3), out_hw, geo)
    buf_shape = (n, 28, 28, 3)  # unpadded: windows start at (-6, -6)
    order, origins, spans, _, _ = implicit._weight_layout(regions, n, (3, 3), out_hw, geo, buf_shape, 1, (-6, -6))
    assert sorted(order.ravel().tolist()) == list(range(n * 28 * 28))  # a permutation of the rows
    # The first region is rows 0-5, columns 0-5, image-major: its 13th pixel is image 0's (2, 0), its 37th
    # image 1's (0, 0); the centre region (rows and columns 6-21) starts after the four before it.
    assert order[0, 2, 0] == 12 and order[1, 0, 0] == 36
    centre = spans[4, 0]
    assert order[0, 6, 6] == centre and order[0, 6, 7] == centre + 1 and order[1, 6, 6] == centre + 16 * 16
    # Each pixel's window origin at its place: (y - 6, z - 6) in image b, 3 channels per position.
    for b, y, z in [(0, 2, 0), (1, 6, 7), (1, 27, 27)]:
        assert origins[order[b, y, z]] == ((b * 28 + y - 6) * 28 + z - 6) * 3
    one_region = numba_conv._regions((40, 40), (3, 3), (40, 40), (1, 1, 1, 1, 1, 1))
    assert len(one_region) == 1  # the pixels in their own order: no table
    assert implicit._weight_layout(one_region, 1, (3, 3), (40, 40), (1, 1, 1, 1, 1, 1), (1, 42, 42, 3), 1)[0] is None


def test_phase_taps_are_the_taps_that_reach_each_phase_of_a_strided_input():
    # Stride 2, dilation 1: even residues get taps 0 and 2 (tap 2 one output position further back), odd tap 1.
    assert implicit._phase_taps(3, 2, 1, 0) == [(0, 0), (2, 1)]
    assert implicit._phase_taps(3, 2, 1, 1) == [(1, 0)]
    # Stride 2, dilation 2: every tap lands on the even phase, none on the odd one.
    assert implicit._phase_taps(3, 2, 2, 0) == [(0, 0), (1, 1), (2, 2)]
    assert implicit._phase_taps(3, 2, 2, 1) == []
    # Stride 3, a 1x1 kernel: only residue 0.
    assert [implicit._phase_taps(1, 3, 1, r) for r in range(3)] == [[(0, 0)], [], []]


def test_transposed_layout_by_hand():
    # 5x5 input, 3x3 kernel, stride 2, padding 1: 3x3 grad_out behind one row and column of zeros (4x4 buffer).
    n, in_hw, geo, channels, og = 1, (5, 5), (2, 2, 1, 1, 1, 1), 7, 4
    buf_shape = (n, 4, 4, og)
    table, targets, panel_runs, runs = implicit._transposed_layout(n, in_hw, (3, 3), geo, buf_shape, (1, 1), channels, og, MR)
    # Phases (y + 1) % 2 = 0, 1 by (z + 1) % 2 = 0, 1: y, z in {1, 3} or {0, 2, 4}; 4, 6, 6, 9 pixels, a panel each.
    assert table.size == 4 * MR and sorted(targets[targets >= 0].tolist()) == list(range(25))
    assert [stop - first for first, stop in panel_runs.tolist()] == [4, 2, 2, 1]
    # Pixel (1, 3) is the second of phase (0, 0): base position ((1 + 1) / 2, (3 + 1) / 2) = (1, 2), buffer (2, 3).
    assert targets[1] == 1 * 5 + 3 and table[1] == (2 * 4 + 3) * og
    # Its taps (0, 0), (0, 2), (2, 0), (2, 2) read 0 or 1 positions back; weight rows (i*3 + j)*Og.
    first, stop = panel_runs[0]
    back = [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert runs[first:stop].tolist() == [[-(a * 4 + b) * og, t * og, og] for (a, b), t in zip(back, (0, 2, 6, 8))]
    # Phase (1, 1) (pixels with even y and z) sees the centre tap only, at its base position.
    first, stop = panel_runs[3]
    assert runs[first:stop].tolist() == [[0, 4 * og, og]]


def test_layouts_are_kept_per_geometry():
    regions = numba_conv._regions((9, 9), (3, 3), (9, 9), (1, 1, 2, 2, 2, 2))
    args = ((3, 3), (9, 9), (1, 1, 2, 2, 2, 2), (1, 13, 13, 4), 6, 1, MR)
    first = implicit._layout(regions, 1, *args)
    assert implicit._layout(regions, 1, *args) is first
    assert implicit._layout(regions, 2, *args[:3], (2, 13, 13, 4), *args[4:]) is not first


@pytest.mark.parametrize(
    ("shape", "weight", "stride", "padding", "dilation", "groups"),
    [
        # Output channels not a multiple of the tile's columns (zero-padded weights); many panels, so several
        # chunks per thread; merged runs (dilation 1 along rows).
        ((2, 5, 30, 27), (7, 5, 3, 3), (2, 2), (1, 1), (1, 1), 1),
        # Groups (one run per tap), regions that skip taps, 4-wide regions (padding rows in every panel).
        ((2, 6, 16, 16), (9, 2, 3, 3), (1, 1), (4, 4), (4, 4), 3),
        # 1x3 kernels with stride in one axis: windows whose origins step unevenly across row ends.
        ((3, 4, 5, 23), (40, 4, 1, 3), (1, 3), (0, 1), (1, 1), 1),
    ],
)
def test_convolutions_through_the_implicit_product_agree(shape, weight, stride, padding, dilation, groups):
    # The stride-1 input gradient is a correlation too, through the same product.
    _agree_in_both_dtypes(7, shape, weight, (stride, padding, dilation, groups), ("input",))


@pytest.mark.parametrize(
    ("shape", "weight", "stride", "padding", "dilation", "groups"),
    [
        # 14 output channels: a last row panel moved back to overlap the first (12 rows); runs of 3*40 = 120
        # channels: a last column tile moved back as well.
        ((2, 40, 9, 9), (14, 40, 3, 3), (2, 2), (1, 1), (1, 1), 1),
        # Groups of 32 channels: one run per tap, each group's windows and grad_out planes offset.
        ((2, 64, 9, 11), (40, 32, 3, 2), (2, 1), (0, 2), (2, 1), 2),
        # Nine regions at rate 6: pixels reordered by region, taps summed only over the regions that see them.
        ((3, 40, 28, 28), (26, 40, 3, 3), (1, 1), (6, 6), (6, 6), 1),
    ],
)
def test_weight_gradients_through_the_implicit_product_agree(monkeypatch, shape, weight, stride, padding, dilation, groups):
    calls = _spy(monkeypatch, "weight_gradient")
    _agree_in_both_dtypes(8, shape, weight, (stride, padding, dilation, groups), ("weight",))
    assert len(calls) == 2, "both dtypes must take the implicit weight gradient"


def test_transposed_layout_goes_band_by_band_through_the_phases():
    # 56x56 input, stride 2: phases of 28 columns, pieces of 6 base rows (168 pixels, 14 whole panels).
    assert implicit._band_rows(28, MR) == 6
    n, in_hw, geo, og = 1, (56, 56), (2, 2, 1, 1, 1, 1), 4
    table, targets, panel_runs, runs = implicit._transposed_layout(n, in_hw, (3, 3), geo, (n, 30, 30, og), (1, 1), 3, og, MR)
    assert sorted(targets[targets >= 0].tolist()) == list(range(56 * 56))
    # The first band's four phases (4 + 2 + 2 + 1 runs) hold base rows 0-5: input rows 0-10, every column.
    first_band = np.repeat(panel_runs[:, 0] < 9, MR)
    band_targets = targets[first_band]
    assert sorted(band_targets[band_targets >= 0].tolist()) == list(range(11 * 56))


@pytest.mark.parametrize(
    ("shape", "weight", "stride", "padding", "dilation", "groups"),
    [
        # Odd sizes; 40 input channels: two column tiles, the second zero-padded.
        ((2, 40, 11, 12), (24, 40, 3, 3), (2, 2), (1, 1), (1, 1), 1),
        # Unequal strides, dilation along rows, groups (each group's grad_out channels and dx planes offset).
        ((2, 36, 13, 10), (10, 18, 3, 2), (3, 2), (0, 2), (2, 1), 2),
        # 1x1, stride 2: three phases of four see no tap and get zeros.
        ((1, 16, 7, 8), (8, 16, 1, 1), (2, 2), (0, 0), (1, 1), 1),
        # Stride 2, dilation 2: the odd phases see no tap.
        ((2, 32, 9, 9), (20, 32, 3, 3), (2, 2), (2, 2), (2, 2), 1),
        # The last row and column are in no window (as with a transposed convolution's output padding).
        ((1, 16, 8, 8), (12, 16, 3, 3), (2, 2), (0, 0), (1, 1), 1),
    ],
)
def test_strided_input_gradients_through_the_phases_agree(monkeypatch, shape, weight, stride, padding, dilation, groups):
    calls = _spy(monkeypatch, "transposed")
    _agree_in_both_dtypes(9, shape, weight, (stride, padding, dilation, groups), ("input",))
    assert len(calls) == 2, "both dtypes must take the phase-split input gradient"


def test_the_phase_split_input_gradient_needs_half_a_tile_of_input_channels():
    assert implicit.transposed_applies(np.dtype(np.float32), NR // 2)
    assert not implicit.transposed_applies(np.dtype(np.float32), NR // 2 - 1)
    assert implicit.transposed_applies(np.dtype(np.float64), gemm.tile_shape(np.float64)[1] // 2)
    assert not implicit.transposed_applies(np.dtype(np.int32), 64)


def test_weight_shares_split_the_dimension_that_divides_more_evenly():
    # 128 channels are 11 row panels (6 and 5 on two threads); a 192-column run is 6 tiles (3 and 3).
    assert implicit._weight_shares(128, 12, 192, 32, 2) == (1, 2)
    # 256 channels are 22 row panels: 11 and 11, the rows (a tie goes to the rows as well).
    assert implicit._weight_shares(256, 12, 256, 32, 2) == (2, 1)
    assert implicit._weight_shares(24, 12, 64, 32, 2) == (2, 1)


@pytest.mark.parametrize("shares", [(2, 1), (1, 2), (1, 3), (3, 1)])
def test_weight_gradient_shares_along_rows_or_columns_agree(monkeypatch, shares):
    # 26 output channels (3 row panels, the last moved back) by runs of 3 * 40 = 120 columns (4 tiles, the last
    # moved back): three shares get a panel each, or 1, 1 and 2 tiles.
    monkeypatch.setattr(implicit, "_weight_shares", lambda *args: shares)
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 40, 9, 9)).astype(np.float32)
    w = rng.standard_normal((26, 40, 3, 3)).astype(np.float32)
    args = ((2, 2), (1, 1), (1, 1), 1)
    g = rng.standard_normal(assert_backend_agrees("conv2d", "numba", x, w, *args).shape).astype(np.float32)
    assert_backend_agrees("conv2d_grad_weight", "numba", x, g, w.shape, *args)


def test_reads_inside_when_every_region_keeps_only_taps_inside_the_input():
    def regions(size, pad, dil):
        return numba_conv._regions((size, size), (3, 3), (size, size), (1, 1, pad, pad, dil, dil))

    rate6 = (1, 1, 6, 6, 6, 6)
    assert implicit.reads_inside(regions(28, 6, 6), (3, 3), rate6, 1)
    # An ordinary padded 3x3 is one region, whose border windows read the padding.
    assert not implicit.reads_inside(regions(28, 1, 1), (3, 3), (1, 1, 1, 1, 1, 1), 1)
    # 2x2 map, 3x3 kernel: split into regions, but at dilation 1 without groups a kernel row is one run of
    # merged taps, which reaches past the taps of the edge regions; with groups each tap is its own run.
    tiny = regions(2, 1, 1)
    assert len(tiny) > 1
    assert not implicit.reads_inside(tiny, (3, 3), (1, 1, 1, 1, 1, 1), 1)
    assert implicit.reads_inside(tiny, (3, 3), (1, 1, 1, 1, 1, 1), 2)


@pytest.mark.parametrize(
    ("shape", "weight", "padding", "dilation", "groups", "start"),
    [
        # Rate 4 on 14x14: nine regions, the windows start 4 rows and columns before the unpadded buffer. 32
        # channels and 12 outputs: the weight gradient takes the implicit product too.
        ((2, 32, 14, 14), (12, 32, 3, 3), (4, 4), (4, 4), 1, (-4, -4)),
        # Narrow: the weight gradient falls back to im2col, which needs the padded buffer again.
        ((2, 6, 11, 13), (5, 6, 3, 3), (3, 2), (3, 2), 1, (-3, -2)),
        # A 2x2 map, groups: taps are single runs, so the regions read inside.
        ((1, 4, 2, 2), (6, 2, 3, 3), (1, 1), (1, 1), 2, (-1, -1)),
        # A 3x2 kernel without groups (3x3 would go to Winograd): merged runs, the padded buffer.
        ((1, 4, 2, 2), (6, 4, 3, 2), (1, 1), (1, 1), 1, (0, 0)),
    ],
)
def test_convolutions_on_the_unpadded_input_agree(monkeypatch, shape, weight, padding, dilation, groups, start):
    calls = _spy(monkeypatch, "correlate")
    _agree_in_both_dtypes(11, shape, weight, ((1, 1), padding, dilation, groups), ("input", "weight"))
    starts = [args[-1] for args in calls]  # correlate's last argument: where the windows start
    assert starts[0] == start


def test_the_implicit_weight_gradient_needs_a_whole_tile_of_channels():
    buf = np.zeros((1, 8, 8, 40), dtype=np.float32)
    dilated = (1, 1, 2, 2, 2, 2)
    assert implicit.weight_gradient_applies(buf, (3, 3), dilated, MR, 1)
    # Fewer output channels than the tile's rows, or a run of channels narrower than its columns: im2col.
    assert not implicit.weight_gradient_applies(buf, (3, 3), dilated, MR - 1, 1)
    assert not implicit.weight_gradient_applies(buf[..., : NR - 1], (3, 3), dilated, MR, 1)
    # Dilation 1 along rows merges a kernel row's taps into one run of 3 * 16 channels.
    assert implicit.weight_gradient_applies(buf[..., :16], (3, 3), (1, 1, 1, 1, 1, 1), MR, 1)
    assert not implicit.weight_gradient_applies(buf.astype(np.int32), (3, 3), dilated, MR, 1)


@pytest.mark.parametrize(
    "targets",
    [
        # Runs of consecutive targets (a region's pixels along output rows), broken and padded with -1.
        [0, 1, 2, 3, 4, 5, 9, 10, 11, -1, -1, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36,
         37, 38, 39, 40, 41, 42, 43, 44, 45, 60, 61, -1],
        # A stride apart (an input gradient's phase): every row its own run.
        [0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, -1, 30, 32, 34, 36],
    ],
)
@pytest.mark.parametrize("channels, o_pad", [(5, 8), (20, 24)])  # 20: blocks transposed in registers
def test_scatter_puts_each_channels_last_row_at_its_target_in_every_channel_plane(targets, channels, o_pad):
    targets = np.array(targets, dtype=np.intp)
    first, plane = 2, 64  # the first 2 table rows skipped; rows padded to o_pad columns
    count = targets.size - first
    rows = np.random.default_rng(0).standard_normal((count, o_pad)).astype(np.float32)
    out = np.full(channels * plane, np.nan, dtype=np.float32)
    implicit._scatter(rows.reshape(-1), o_pad, channels, targets, first, count, out, plane)
    # Independently: out[target + o*plane] = rows[r, o] for every kept row, nothing else written.
    expected = np.full((channels, plane), np.nan, dtype=np.float32)
    for r, target in enumerate(targets[first:]):
        if target >= 0:
            expected[:, target] = rows[r, :channels]
    np.testing.assert_array_equal(out.reshape(channels, plane), expected)


def test_chunk_bounds_give_every_chunk_an_equal_share_of_the_work():
    # Three pieces: 10 panels of one 64-long run, 6 panels of three runs (192), 8 panels of two runs (128).
    runs = np.array([[0, 0, 64], [0, 0, 64], [0, 64, 64], [0, 128, 64], [0, 0, 64], [0, 64, 64]], dtype=np.intp)
    panel_runs = np.array([[0, 1]] * 10 + [[1, 4]] * 6 + [[4, 6]] * 8, dtype=np.intp)
    work = np.array([64] * 10 + [192] * 6 + [128] * 8)  # 3776 in all
    for threads in (1, 2, 3):
        bounds = implicit._chunk_bounds(panel_runs, runs, threads)
        chunks = bounds.size - 1
        assert chunks % threads == 0 and bounds[0] == 0 and bounds[-1] == panel_runs.shape[0]
        assert np.all(np.diff(bounds) >= 0)
        shares = np.array([work[bounds[q] : bounds[q + 1]].sum() for q in range(chunks)])
        # Each chunk ends just after the panel that completes its share: it is off by less than one panel.
        assert np.all(np.abs(np.cumsum(shares) - work.sum() * np.arange(1, chunks + 1) / chunks) < work.max())


def test_chunk_bounds_of_a_layer_with_equal_panels_are_equal_runs_of_panels(monkeypatch):
    monkeypatch.setattr(implicit, "_CHUNK_PANELS", 4)
    runs = np.array([[0, 0, 96]], dtype=np.intp)
    bounds = implicit._chunk_bounds(np.array([[0, 1]] * 16, dtype=np.intp), runs, 2)
    np.testing.assert_array_equal(bounds, [0, 4, 8, 12, 16])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [4, 2048])  # NumPy's copy, the compiled one (from 2 MiB)
def test_packed_weights_are_column_tiles_with_contiguous_rows_and_zero_columns_past_the_end(
    monkeypatch, dtype, channels
):
    compiled = _spy(monkeypatch, "_pack_tiles")
    nr = gemm.tile_shape(dtype)[1]
    columns = nr + 5  # a whole tile and a partial one
    w = np.random.default_rng(3).standard_normal((2, columns, channels, 3, 3)).astype(dtype)
    view = np.moveaxis(w, 2, 4)  # (G, N, kh, kw, C) as the forward passes it: not contiguous
    packed = implicit._packed(view, nr)
    assert packed.shape == (2, 2, 3 * 3 * channels, nr)
    for g in range(2):
        matrix = view[g].reshape(columns, -1).T  # (K, N): row k of the product's weight matrix
        np.testing.assert_array_equal(packed[g, 0], matrix[:, :nr])
        np.testing.assert_array_equal(packed[g, 1, :, :5], matrix[:, nr:])
        assert not packed[g, 1, :, 5:].any()
    assert len(compiled) == (channels == 2048)
