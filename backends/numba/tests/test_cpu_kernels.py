"""Numba-CPU specifics the backend-agnostic agreement tests cannot reach: banded im2col, empty batches, and
results that must not depend on the number of threads."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from segcore.testing import assert_backend_agrees, run_kernel
from segcore_numba.cpu import conv as numba_conv


def _assert_conv_and_gradients_agree(rng, shape, weight, args):
    """numba's conv2d and both gradients against the reference on random float64 operands; returns the output."""
    x = rng.standard_normal(shape)
    w = rng.standard_normal(weight)
    y = assert_backend_agrees("conv2d", "numba", x, w, *args)
    g = rng.standard_normal(y.shape)
    assert_backend_agrees("conv2d_grad_input", "numba", g, w, x.shape, *args)
    assert_backend_agrees("conv2d_grad_weight", "numba", x, g, w.shape, *args)
    return y


@pytest.mark.parametrize(
    ("shape", "weight", "stride", "padding", "dilation", "groups"),
    [
        # Dense stride 1 with a 5x5 kernel: the im2col bands (3x3 stride 1 goes to Winograd instead).
        ((2, 4, 11, 9), (6, 4, 5, 5), (1, 1), (2, 2), (1, 1), 1),
        ((1, 6, 10, 13), (4, 3, 2, 3), (2, 3), (0, 2), (2, 1), 2),
        ((1, 2, 7, 7), (3, 2, 1, 1), (1, 1), (0, 0), (1, 1), 1),
    ],
)
def test_im2col_bands_cover_every_output_row(monkeypatch, shape, weight, stride, padding, dilation, groups):
    # A band budget of a few rows forces several bands per image, including a short last one.
    monkeypatch.setattr(numba_conv, "_BAND_ELEMENTS", 3 * weight[1] * weight[2] * weight[3] * 5)
    _assert_conv_and_gradients_agree(np.random.default_rng(0), shape, weight, (stride, padding, dilation, groups))


def test_dilated_windows_skip_the_taps_that_read_only_padding():
    # ASPP rate 6 on a 28x28 map (3x3, padding 6): rows 0-5 see taps 1-2 only (tap 0 reads rows -6..-1), rows
    # 6-21 all three, rows 22-27 taps 0-1; the same for columns. 1 - (72/84)^2 = 27% of the work is skipped.
    regions = numba_conv._regions((28, 28), (3, 3), (28, 28), (1, 1, 6, 6, 6, 6))
    bands = [(0, 6, 1, 3), (6, 22, 0, 3), (22, 28, 0, 2)]
    expected = [(r0, r1, z0, z1, (i0, i1, j0, j1)) for r0, r1, i0, i1 in bands for z0, z1, j0, j1 in bands]
    assert [(r.rows.start, r.rows.stop, r.cols.start, r.cols.stop, r.taps) for r in regions] == expected
    # An ordinary padded 3x3 would skip only its border taps (under 10%): one region with every tap.
    whole = numba_conv._regions((28, 28), (3, 3), (14, 14), (2, 2, 1, 1, 1, 1))
    assert [(r.rows, r.cols, r.taps) for r in whole] == [(slice(0, 14), slice(0, 14), (0, 3, 0, 3))]


@pytest.mark.parametrize(
    ("shape", "weight", "stride", "padding", "dilation", "groups"),
    [
        ((2, 4, 13, 11), (5, 4, 3, 3), (1, 1), (4, 3), (4, 3), 1),
        ((1, 6, 12, 10), (4, 3, 3, 2), (2, 1), (5, 4), (3, 5), 2),
        # Output row and column 0 read only padding (rows -6, -1 and 4): regions without any tap.
        ((2, 3, 4, 4), (2, 3, 3, 3), (1, 1), (6, 6), (5, 5), 1),
    ],
)
def test_convolutions_that_skip_padding_taps_agree(monkeypatch, shape, weight, stride, padding, dilation, groups):
    monkeypatch.setattr(numba_conv, "_BAND_ELEMENTS", 4 * weight[1] * weight[2] * weight[3])
    args = (stride, padding, dilation, groups)
    y = _assert_conv_and_gradients_agree(np.random.default_rng(3), shape, weight, args)
    geo = numba_conv._geometry(stride, padding, dilation)
    assert len(numba_conv._regions(shape[2:], weight[2:], y.shape[2:], geo)) > 1, "the case must use regions"


def test_integer_convolutions_use_numpys_product_and_agree_exactly():
    # This backend's GEMM serves float32/float64; any other dtype goes through np.matmul. Small integers keep
    # every sum exact, so the results must equal the reference's bit for bit.
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, (2, 4, 7, 6)).astype(np.int32)
    w = rng.integers(-3, 4, (6, 2, 3, 3)).astype(np.int32)
    args = ((2, 1), (1, 1), (2, 2), 2)
    y = assert_backend_agrees("conv2d", "numba", x, w, *args, rtol=0, atol=0)
    assert y.dtype == np.int32
    g = rng.integers(-3, 4, y.shape).astype(np.int32)
    assert_backend_agrees("conv2d_grad_input", "numba", g, w, x.shape, *args, rtol=0, atol=0)
    assert_backend_agrees("conv2d_grad_weight", "numba", x, g, w.shape, *args, rtol=0, atol=0)


@pytest.mark.parametrize("output_channels, channels", [(4, 3), (96, 640)])  # 2.1 MiB: the compiled copy
def test_weight_gradient_columns_go_back_to_the_weight_order(output_channels, channels):
    # Columns in (i, j, c) order: column (i*kw + j)*Cg + c of row o holds weight[o, c, i, j].
    kh, kw = 3, 2
    dwm = np.random.default_rng(0).standard_normal((1, output_channels, kh * kw * channels)).astype(np.float32)
    result = numba_conv._weight_order(dwm, (output_channels, channels, kh, kw))
    expected = np.empty((output_channels, channels, kh, kw), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            expected[:, :, i, j] = dwm[0, :, (i * kw + j) * channels : (i * kw + j + 1) * channels]
    np.testing.assert_array_equal(result, expected)
    assert result.flags.c_contiguous


def test_empty_batch_convolves_to_empty_outputs():
    x = np.zeros((0, 4, 5, 5), dtype=np.float32)
    w = np.ones((3, 4, 3, 3), dtype=np.float32)
    y = assert_backend_agrees("conv2d", "numba", x, w, (1, 1), (1, 1), (1, 1), 1)
    assert y.shape == (0, 3, 5, 5)
    dw = assert_backend_agrees("conv2d_grad_weight", "numba", x, y, w.shape, (1, 1), (1, 1), (1, 1), 1)
    assert not dw.any()


@pytest.fixture
def threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def _with_threads(count: int, fn):
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    return fn()


def test_roi_align_backward_bits_do_not_depend_on_the_thread_count(threads):
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 40, (64, 2))
    rois = np.concatenate([rng.integers(0, 2, (64, 1)), corners, corners + rng.uniform(2, 30, (64, 2))], axis=1)
    rois = rois.astype(np.float32)
    grad = rng.standard_normal((64, 8, 7, 7)).astype(np.float32)

    def run():
        return run_kernel("roi_align_backward", "numba", grad, rois, (2, 8, 13, 13), 0.25, (7, 7), -1, True)

    one, many = _with_threads(1, run), _with_threads(numba.config.NUMBA_NUM_THREADS, run)
    assert np.array_equal(one, many)


def test_lattice_filter_bits_do_not_depend_on_the_thread_count(threads):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((500, 5)).astype(np.float32)
    values = rng.standard_normal((500, 3)).astype(np.float32)

    def run():
        lattice = run_kernel("permutohedral_build", "numba", features)
        return run_kernel("permutohedral_filter", "numba", lattice, values)

    assert np.array_equal(_with_threads(1, run), _with_threads(numba.config.NUMBA_NUM_THREADS, run))
