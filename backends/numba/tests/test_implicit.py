"""The implicit-GEMM correlation (``segcore_numba.cpu.implicit``): its layout (reduction runs, the table of
window origins in region order) by hand, and convolutions through it against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.testing import assert_backend_agrees
from segcore_numba.cpu import conv as numba_conv
from segcore_numba.cpu import gemm, implicit

MR, NR = gemm.tile_shape(np.float32)


def test_runs_merge_the_taps_of_a_kernel_row_only_when_they_are_adjacent_in_the_buffer():
    # Buffer rows of width 10 with 4 channels. Dilation 1, no groups: taps (i, 0..2) are 12 adjacent values.
    merged = implicit._runs((3, 3), (1, 1, 1, 1, 1, 1), 4, 4, 10)
    assert merged.tolist() == [[i, 0, 3, i * 10 * 4, i * 3 * 4, 12] for i in range(3)]
    # Dilation 2 along columns: one run per tap, at (i*dh*W + j*dw) * C, its weight rows at (i*kw + j) * Cg.
    single = implicit._runs((2, 3), (1, 1, 0, 0, 3, 2), 4, 4, 10)
    assert single.tolist() == [[i, j, j + 1, (i * 3 * 10 + j * 2) * 4, (i * 3 + j) * 4, 4] for i in range(2) for j in range(3)]
    # Groups: a tap's channels are those of one group, so taps are never merged.
    assert implicit._runs((1, 3), (1, 1, 0, 0, 1, 1), 4, 2, 10)[:, 5].tolist() == [2, 2, 2]


def test_table_lists_every_output_pixel_once_in_region_order_padded_to_whole_panels():
    n, out_hw, geo = 2, (28, 28), (1, 1, 6, 6, 6, 6)
    regions = numba_conv._regions((28, 28), (3, 3), out_hw, geo)
    buf_shape = (n, 40, 40, 3)
    origins, pixels, taps = implicit._table(regions, n, out_hw, geo, buf_shape, MR)
    counts = [n * (r.rows.stop - r.rows.start) * (r.cols.stop - r.cols.start) for r in regions]
    assert origins.size == pixels.size == taps.shape[0] * MR == sum(c + -c % MR for c in counts)
    assert np.sum(pixels < 0) == sum(-c % MR for c in counts)
    assert sorted(pixels[pixels >= 0].tolist()) == list(range(n * 28 * 28))
    # The first region is rows 0-5, columns 0-5 (taps 1-2 both ways); its first row is image 0's pixel (0, 0),
    # its 13th image 0's pixel (2, 0), whose window starts at buffer row 2, column 0.
    assert pixels[0] == 0 and pixels[12] == 2 * 28 and origins[12] == (2 * 40 + 0) * 3
    assert taps[0].tolist() == [1, 3, 1, 3]
    # A padding row repeats its region's last window, so that the whole panel reads inside the buffer.
    first_pad = np.flatnonzero(pixels < 0)[0]
    assert origins[first_pad] == origins[first_pad - 1]


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
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal(weight).astype(dtype)
        args = (stride, padding, dilation, groups)
        y = assert_backend_agrees("conv2d", "numba", x, w, *args)
        g = rng.standard_normal(y.shape).astype(dtype)
        # The stride-1 input gradient is a correlation too, through the same product.
        assert_backend_agrees("conv2d_grad_input", "numba", g, w, x.shape, *args)


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
    calls = []
    original = implicit.weight_gradient
    monkeypatch.setattr(implicit, "weight_gradient", lambda *args: calls.append(1) or original(*args))
    rng = np.random.default_rng(8)
    args = (stride, padding, dilation, groups)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal(weight).astype(dtype)
        y = assert_backend_agrees("conv2d", "numba", x, w, *args)
        g = rng.standard_normal(y.shape).astype(dtype)
        assert_backend_agrees("conv2d_grad_weight", "numba", x, g, w.shape, *args)
    assert len(calls) == 2, "both dtypes must take the implicit weight gradient"


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
