"""Numba-CPU RoIAlign specifics the backend-agreement tests do not reach: the register-tile transposes, channel
counts that are not whole vectors, adaptive grids far larger than the first RoI's, and backward results that
must not depend on how the rows are banded between tasks."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from segcore.testing import assert_backend_agrees, run_kernel
from segcore_numba.cpu import roi as numba_roi


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("by_source_rows", [True, False])
@pytest.mark.parametrize(("rows", "cols"), [(8, 8), (49, 256), (13, 21), (3, 5), (16, 3)])
def test_transpose_moves_every_element_and_nothing_else(dtype, by_source_rows, rows, cols):
    # Offsets and strides wider than the block, so that a tile written to the wrong place shows.
    rng = np.random.default_rng(0)
    src_start, src_stride, dst_start, dst_stride = 3, cols + 5, 7, rows + 2
    src = rng.standard_normal(src_start + rows * src_stride).astype(dtype)
    dst = np.zeros(dst_start + cols * dst_stride, dtype=dtype)
    numba_roi._transpose(src, src_start, src_stride, rows, cols, dst, dst_start, dst_stride, by_source_rows)
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    written = dst_start + j * dst_stride + i
    assert np.array_equal(dst[written], src[src_start + i * src_stride + j])
    untouched = np.ones(dst.size, dtype=bool)
    untouched[written] = False
    assert not dst[untouched].any()


def _boxes(rng, count: int, images: int, extent: float, smallest: float, largest: float) -> np.ndarray:
    corners = rng.uniform(-0.2 * extent, extent, (count, 2))
    sides = rng.uniform(smallest, largest, (count, 2))
    batch = rng.integers(0, images, (count, 1))
    return np.concatenate([batch, corners, corners + sides], axis=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [1, 19, 40])
@pytest.mark.parametrize(("sampling_ratio", "aligned"), [(2, False), (-1, True), (3, False)])
def test_roi_align_agrees_for_channels_that_are_not_whole_vectors(dtype, channels, sampling_ratio, aligned):
    # Small boxes first and huge ones last: the adaptive grid (sampling_ratio -1) outgrows each task's first
    # scratch, and 3x3 or adaptive counts are not powers of two (a division instead of an inverse).
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((2, channels, 11, 13)).astype(dtype)
    rois = np.concatenate([_boxes(rng, 24, 2, 52.0, 1.0, 20.0), _boxes(rng, 8, 2, 52.0, 40.0, 160.0)])
    rois = rois.astype(dtype)
    params = (0.25, (3, 4), sampling_ratio, aligned)
    out = assert_backend_agrees("roi_align", "numba", x, rois, *params)
    grad = rng.standard_normal(out.shape).astype(dtype)
    assert_backend_agrees("roi_align_backward", "numba", grad, rois, x.shape, *params)


def test_roi_align_keeps_the_input_dtype():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 5, 6, 7)).astype(np.float16)
    rois = np.array([[0, 1.0, 2.0, 9.0, 11.0], [0, -3.0, 0.0, 30.0, 4.0]], dtype=np.float16)
    out = run_kernel("roi_align", "numba", x, rois, 0.5, (2, 2), 2, False)
    assert out.dtype == np.float16
    grad = run_kernel("roi_align_backward", "numba", np.ones_like(out), rois, x.shape, 0.5, (2, 2), 2, False)
    assert grad.dtype == np.float16 and grad.shape == x.shape


def test_roi_align_backward_bits_do_not_depend_on_the_banding():
    # One image, so that every band split happens inside it; overlapping boxes of all sizes cross the bands'
    # borders, and every pixel receives gradient from many bins of many RoIs.
    rng = np.random.default_rng(2)
    n, c, h, w = 1, 24, 17, 15
    rois = _boxes(rng, 60, n, 60.0, 2.0, 40.0).astype(np.float32)
    grad = rng.standard_normal((60, c, 7, 7)).astype(np.float32)
    t = np.float32
    r = np.ascontiguousarray(rois)
    batch = r[:, 0].astype(np.int64)
    order = np.argsort(batch, kind="stable")
    first_roi = np.searchsorted(batch[order], np.arange(n + 1))

    def run(band: int) -> np.ndarray:
        acc = np.empty((n * h * w, numba_roi._padded(c, t)), dtype=t)
        dx = np.empty((n, c, h, w), dtype=t)
        numba_roi._roi_align_backward(grad, r, t(0.25), False, 2, order, first_roi, band, acc, dx)
        return dx

    whole = run(h)
    for band in (1, 2, 5, 9):
        assert np.array_equal(run(band), whole), f"band of {band} rows"
    expected = run_kernel("roi_align_backward", "numpy", grad, rois, (n, c, h, w), 0.25, (7, 7), 2, False)
    np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture
def threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def test_roi_align_forward_bits_do_not_depend_on_the_thread_count(threads):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 20, 12, 12)).astype(np.float32)
    rois = _boxes(rng, 40, 2, 48.0, 1.0, 30.0).astype(np.float32)

    def run():
        return run_kernel("roi_align", "numba", x, rois, 0.25, (7, 7), -1, True)

    numba.set_num_threads(1)
    one = run()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert np.array_equal(one, run())
