"""Pooling ops: hand-computed cases, scipy.ndimage references, index round trips, gradcheck and errors."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import ndimage

import segcore
import segcore.functional as F
from segcore.testing import gradcheck


def t(array, requires_grad=False):
    return segcore.tensor(np.asarray(array), requires_grad=requires_grad)


def tie_free(shape, seed=0):
    """Distinct values (a scaled permutation) so that max-pool gradients are well defined."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape) / 5.0 - 2.0


@st.composite
def window(draw, dilation=True):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    s = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    low = [max(1, (kk - 1) * dd + 1 - 2 * pp) for kk, dd, pp in zip(k, d, p)]
    hw = (draw(st.integers(low[0], low[0] + 5)), draw(st.integers(low[1], low[1] + 5)))
    return hw, k, s, p, d


def expected_len(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# -- max_pool2d ---------------------------------------------------------------------------------------------


def test_max_pool2d_hand_case_with_padding_and_indices():
    x = t(np.arange(9.0, dtype=np.float32).reshape(1, 1, 3, 3))
    out, idx = F.max_pool2d(x, 2, stride=2, padding=1, return_indices=True)
    # windows (rows, cols): (-1..0, -1..0) -> x[0,0]; (-1..0, 1..2) -> x[0,2]; (1..2, -1..0) -> x[2,0]; ...
    np.testing.assert_array_equal(out.numpy(), [[[[0.0, 2.0], [6.0, 8.0]]]])
    np.testing.assert_array_equal(idx.numpy(), [[[[0, 2], [6, 8]]]])
    assert out.dtype == np.float32 and idx.dtype == np.int64


def test_max_pool2d_hand_case_dilation_and_ceil_mode():
    x = t(np.array([[[[1.0, 9.0, 2.0, 8.0, 3.0]]]]))
    # kernel 2 with dilation 2 reads columns (j, j + 2): max(1, 2), max(9, 8), max(2, 3)
    np.testing.assert_array_equal(F.max_pool2d(x, (1, 2), stride=1, dilation=(1, 2)).numpy(), [[[[2.0, 9.0, 3.0]]]])
    # width 5, kernel 2, stride 2: floor gives 2 windows, ceil_mode adds the window starting at column 4
    assert F.max_pool2d(x, (1, 2)).shape == (1, 1, 1, 2)
    np.testing.assert_array_equal(F.max_pool2d(x, (1, 2), ceil_mode=True).numpy(), [[[[9.0, 8.0, 3.0]]]])
    # with padding 1 the ceil window would start at column 5, in the right padding: torch drops it
    assert F.max_pool2d(x, (1, 2), padding=(0, 1), ceil_mode=True).shape == (1, 1, 1, 3)


@given(window(), st.booleans())
def test_max_pool2d_matches_scipy_maximum_filter(config, batched):
    (h, w), k, s, p, d = config
    x = tie_free((2, 3, h, w), seed=h * w).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=-np.inf)
    footprint = np.zeros(((k[0] - 1) * d[0] + 1, (k[1] - 1) * d[1] + 1), bool)
    footprint[:: d[0], :: d[1]] = True
    filtered = ndimage.maximum_filter(padded, footprint=footprint[None, None], mode="constant", cval=-np.inf)
    oh, ow = expected_len(h, k[0], s[0], p[0], d[0]), expected_len(w, k[1], s[1], p[1], d[1])
    # scipy centres the footprint: the window starting at r is reported at r + size // 2
    rows = np.arange(oh) * s[0] + footprint.shape[0] // 2
    cols = np.arange(ow) * s[1] + footprint.shape[1] // 2
    want = filtered[:, :, rows][:, :, :, cols]
    xin = t(x) if batched else t(x[0])
    out, idx = F.max_pool2d(xin, k, s, p, d, return_indices=True)
    np.testing.assert_array_equal(out.numpy(), want if batched else want[0])
    # every index points at the maximum it reports (windows lying entirely in padding report -inf instead)
    planes = x.reshape(2, 3, -1) if batched else x[0].reshape(3, -1)
    finite = np.isfinite(out.numpy())
    flat_idx = np.where(finite, idx.numpy(), 0).reshape(planes.shape[:-1] + (-1,))
    gathered = np.take_along_axis(planes, flat_idx, axis=-1).reshape(out.shape)
    np.testing.assert_array_equal(gathered[finite], out.numpy()[finite])


def test_max_pool2d_gradient_goes_to_the_first_maximum_on_ties():
    x = t(np.ones((1, 1, 3, 3)), requires_grad=True)
    F.max_pool2d(x, 2, stride=1).sum().backward()
    # windows start at (0,0), (0,1), (1,0), (1,1): each sends 1 to its top-left (first in row-major order)
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


@settings(max_examples=8)
@given(window(), st.booleans())
def test_max_pool2d_gradcheck(config, ceil_mode):
    (h, w), k, s, p, d = config
    x = t(tie_free((1, 2, h, w), seed=h + w), requires_grad=True)
    # a dilated window can lie entirely in padding: its output is -inf and has no finite difference
    assume(np.all(np.isfinite(F.max_pool2d(x, k, s, p, d, ceil_mode=ceil_mode).numpy())))
    gradcheck(lambda a: F.max_pool2d(a, k, s, p, d, ceil_mode=ceil_mode), [x])


# -- max_unpool2d -------------------------------------------------------------------------------------------


@given(window(dilation=False))
def test_max_unpool2d_round_trip_puts_maxima_back(config):
    (h, w), k, s, p, _ = config
    x = tie_free((2, 2, h, w), seed=h * 7 + w)
    out, idx = F.max_pool2d(t(x), k, s, p, return_indices=True)
    restored = F.max_unpool2d(out, idx, k, s, p, output_size=(h, w)).numpy()
    # an explicit loop: every pooled maximum is written back at its own position, everything else is 0
    want = np.zeros_like(x)
    for b, c, i, j in np.ndindex(*out.shape):
        flat = idx.numpy()[b, c, i, j]
        want[b, c, flat // w, flat % w] = out.numpy()[b, c, i, j]
    np.testing.assert_array_equal(restored, want)
    assert np.all((restored == 0) | (restored == x))


def test_max_unpool2d_default_size_output_size_and_gradient():
    x = t(np.array([[[[5.0, 6.0]]]]), requires_grad=True)
    idx = t(np.array([[[[1, 2]]]], dtype=np.int64))
    # default width (2 - 1) * 2 + 2 = 4; height (1 - 1) * 2 + 2 = 2
    np.testing.assert_array_equal(F.max_unpool2d(x, idx, 2).numpy(), [[[[0, 5, 6, 0], [0, 0, 0, 0]]]])
    y = F.max_unpool2d(x, idx, 2, output_size=(1, 1, 3, 5))
    assert y.shape == (1, 1, 3, 5)
    (y * t(np.arange(15.0).reshape(1, 1, 3, 5))).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[[[1.0, 2.0]]]])
    gradcheck(lambda a: F.max_unpool2d(a, idx, 2, output_size=(3, 5)), [t(np.array([[[[5.0, 6.0]]]]), True)])


def test_max_unpool2d_unbatched():
    x = tie_free((2, 4, 4))
    out, idx = F.max_pool2d(t(x), 2, return_indices=True)
    batched = F.max_unpool2d(t(out.numpy()[None]), t(idx.numpy()[None]), 2)
    np.testing.assert_array_equal(F.max_unpool2d(out, idx, 2).numpy(), batched.numpy()[0])


# -- avg_pool2d ---------------------------------------------------------------------------------------------


def test_avg_pool2d_hand_cases_of_the_divisor_rules():
    x = t(np.arange(1.0, 10.0, dtype=np.float32).reshape(1, 1, 3, 3))
    # padding 1, kernel 2, stride 2: top-left window holds x[0,0] = 1 and three padding zeros
    np.testing.assert_allclose(F.avg_pool2d(x, 2, 2, 1).numpy()[0, 0], [[1 / 4, (2 + 3) / 4], [(4 + 7) / 4, 28 / 4]])
    np.testing.assert_allclose(
        F.avg_pool2d(x, 2, 2, 1, count_include_pad=False).numpy()[0, 0], [[1.0, 2.5], [5.5, 7.0]]
    )
    np.testing.assert_allclose(F.avg_pool2d(x, 2, 2, 1, divisor_override=2).numpy()[0, 0], [[0.5, 2.5], [5.5, 14.0]])
    # no padding, ceil_mode: the second window holds one column (or row) of the input only and divides by that
    np.testing.assert_allclose(
        F.avg_pool2d(x, 2, ceil_mode=True).numpy()[0, 0], [[(1 + 2 + 4 + 5) / 4, (3 + 6) / 2], [(7 + 8) / 2, 9.0]]
    )


@given(window(dilation=False), st.booleans(), st.sampled_from([np.float32, np.float64]))
def test_avg_pool2d_matches_scipy_uniform_filter(config, count_include_pad, dtype):
    (h, w), k, s, p, _ = config
    x = np.random.default_rng(h * w).standard_normal((1, 2, h, w)).astype(dtype)
    pad = ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1]))
    sums = ndimage.uniform_filter(np.pad(x.astype(np.float64), pad), size=(1, 1) + k, mode="constant")
    counts = ndimage.uniform_filter(np.pad(np.ones(x.shape), pad), size=(1, 1) + k, mode="constant")
    oh, ow = expected_len(h, k[0], s[0], p[0], 1), expected_len(w, k[1], s[1], p[1], 1)
    rows, cols = np.arange(oh) * s[0] + k[0] // 2, np.arange(ow) * s[1] + k[1] // 2
    # uniform_filter gives window means over the padded array; without count_include_pad divide by the
    # fraction of the window that lies inside the input
    sums, counts = sums[:, :, rows][:, :, :, cols], counts[:, :, rows][:, :, :, cols]
    want = sums if count_include_pad else sums / counts
    got = F.avg_pool2d(t(x), k, s, p, count_include_pad=count_include_pad)
    assert got.dtype == dtype
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


@settings(max_examples=8)
@given(window(dilation=False), st.booleans(), st.booleans(), st.sampled_from([None, 3]))
def test_avg_pool2d_gradcheck(config, ceil_mode, count_include_pad, divisor_override):
    (h, w), k, s, p, _ = config
    x = t(np.random.default_rng(h + w).standard_normal((2, 1, h, w)), requires_grad=True)
    gradcheck(lambda a: F.avg_pool2d(a, k, s, p, ceil_mode, count_include_pad, divisor_override), [x])


# -- adaptive pools -----------------------------------------------------------------------------------------


def test_adaptive_avg_pool2d_hand_case_and_none_keeps_a_dimension():
    x = t(np.arange(10.0).reshape(1, 1, 2, 5))
    # width bins of 5 into 3: [0, 2), [1, 4), [3, 5)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, (1, 3)).numpy(), [[[[3.0, 4.5, 6.0]]]])
    kept = F.adaptive_avg_pool2d(x, (None, 2))
    np.testing.assert_allclose(kept.numpy(), [[[[1.0, 3.0], [6.0, 8.0]]]])
    assert F.adaptive_avg_pool2d(x, 1).numpy().item() == pytest.approx(4.5)


def test_adaptive_max_pool2d_hand_case_with_indices():
    x = t(np.array([[[[3.0, 1.0, 4.0], [1.0, 5.0, 9.0], [2.0, 6.0, 5.0]]]]))
    out, idx = F.adaptive_max_pool2d(x, 2, return_indices=True)
    # bins of 3 into 2: [0, 2) and [1, 3) in both dimensions
    np.testing.assert_array_equal(out.numpy(), [[[[5.0, 9.0], [6.0, 9.0]]]])
    np.testing.assert_array_equal(idx.numpy(), [[[[4, 5], [7, 5]]]])
    unbatched = F.adaptive_max_pool2d(t(x.numpy()[0]), (2, None))
    np.testing.assert_array_equal(unbatched.numpy(), [[[3.0, 5.0, 9.0], [2.0, 6.0, 9.0]]])


@settings(max_examples=10)
@given(st.integers(1, 7), st.integers(1, 7), st.integers(1, 8), st.integers(1, 8))
def test_adaptive_pools_gradcheck(h, w, oh, ow):
    x = tie_free((1, 2, h, w), seed=h * 10 + w)
    gradcheck(lambda a: F.adaptive_avg_pool2d(a, (oh, ow)), [t(x, True)])
    gradcheck(lambda a: F.adaptive_max_pool2d(a, (oh, ow)), [t(x, True)])


def test_pools_keep_float64_and_unbatched_matches_batched():
    x = np.random.default_rng(0).standard_normal((2, 5, 6))
    for op in (
        lambda a: F.max_pool2d(a, 3, 2, 1),
        lambda a: F.avg_pool2d(a, 3, 2, 1, ceil_mode=True),
        lambda a: F.adaptive_avg_pool2d(a, (2, 4)),
        lambda a: F.adaptive_max_pool2d(a, (3, 2)),
    ):
        single, batch = op(t(x)), op(t(x[None]))
        assert single.dtype == np.float64
        np.testing.assert_array_equal(single.numpy(), batch.numpy()[0])


# -- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x: F.max_pool2d(x, 0), ValueError, "kernel_size must be >= 1, got 0"),
        (lambda x: F.max_pool2d(x, (2, 2, 2)), ValueError, r"kernel_size must be an int or a sequence of 2"),
        (lambda x: F.max_pool2d(x, 2, stride=0), ValueError, "stride must be >= 1"),
        (lambda x: F.max_pool2d(x, 3, padding=2), ValueError, r"padding must be at most half of kernel_size.*\(2, 2\)"),
        (lambda x: F.max_pool2d(x, 2, dilation=0), ValueError, "dilation must be >= 1"),
        (lambda x: F.max_pool2d(x, 5), ValueError, r"spatial size \(4, 4\) is too small .* output would be \(0, 0\)"),
        (lambda x: F.max_pool2d(x, 2, ceil_mode=1), TypeError, "ceil_mode must be a bool, got 1"),
        (lambda x: F.max_pool2d(x.numpy(), 2), TypeError, "input must be a Tensor, got ndarray"),
        (lambda x: F.max_pool2d(t(np.zeros((4, 4))), 2), ValueError, r"input must be 3-D .* got shape \(4, 4\)"),
        (lambda x: F.max_pool2d(t(np.zeros((1, 0, 4, 4))), 2), ValueError, "non-zero channels"),
        (lambda x: F.avg_pool2d(t(np.ones((1, 1, 4, 4), np.int64)), 2), TypeError, "floating-point .* int64"),
        (lambda x: F.avg_pool2d(x, 2, divisor_override=0), ValueError, "divisor_override must not be zero"),
        (lambda x: F.avg_pool2d(x, 2, divisor_override=1.5), TypeError, "divisor_override must be an int"),
        (lambda x: F.avg_pool2d(x, 2, padding=-1), ValueError, "padding must be >= 0"),
        (lambda x: F.adaptive_avg_pool2d(x, (2, 0)), ValueError, r"output_size must be >= 1, got \(2, 0\)"),
        (lambda x: F.adaptive_max_pool2d(x, "2"), ValueError, "output_size must be an int"),
        (lambda x: F.max_unpool2d(x, t(np.zeros((1, 1, 4, 4), np.int32)), 2), TypeError, "indices must have dtype"),
        (lambda x: F.max_unpool2d(x, t(np.zeros((1, 1, 2, 2), np.int64)), 2), ValueError, "must have the shape"),
        (
            lambda x: F.max_unpool2d(x, t(np.full((1, 1, 4, 4), 64, np.int64)), 2),
            ValueError,
            r"indices contain 64, outside the output planes of size \(8, 8\)",
        ),
        (
            lambda x: F.max_unpool2d(x, t(np.zeros((1, 1, 4, 4), np.int64)), 2, output_size=(10, 8)),
            ValueError,
            "dimension 0 must be strictly between 6 and 10",
        ),
    ],
)
def test_bad_arguments_are_reported_with_the_argument_and_value(call, error, match):
    x = t(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(error, match=match):
        call(x)
