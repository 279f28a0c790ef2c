"""Reference pooling kernels against explicit loops that transcribe torch's CPU loops pixel by pixel."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segcore.backend import get_backend

BACKEND = get_backend("numpy")
XP = BACKEND.xp
K = BACKEND.kernel


# -- explicit-loop references ---------------------------------------------------------------------------------


def out_len(size, k, s, p, d, ceil_mode):
    eff = d * (k - 1) + 1
    if ceil_mode:
        out = -(-(size + 2 * p - eff) // s) + 1
        # the last window must start inside the input or the left padding
        if (out - 1) * s >= size + p:
            out -= 1
    else:
        out = (size + 2 * p - eff) // s + 1
    return out


def loop_max_pool(x, k, s, p, d, ceil_mode):
    n, c, h, w = x.shape
    oh, ow = out_len(h, k[0], s[0], p[0], d[0], ceil_mode), out_len(w, k[1], s[1], p[1], d[1], ceil_mode)
    out = np.empty((n, c, oh, ow), x.dtype)
    idx = np.empty((n, c, oh, ow), np.int64)
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    h0, w0 = i * s[0] - p[0], j * s[1] - p[1]
                    h1 = min(h0 + (k[0] - 1) * d[0] + 1, h)
                    w1 = min(w0 + (k[1] - 1) * d[1] + 1, w)
                    while h0 < 0:
                        h0 += d[0]
                    while w0 < 0:
                        w0 += d[1]
                    best, where = -math.inf, h0 * w + w0
                    for ih in range(h0, h1, d[0]):
                        for iw in range(w0, w1, d[1]):
                            v = x[b, ch, ih, iw]
                            if v > best or math.isnan(v):
                                best, where = v, ih * w + iw
                    out[b, ch, i, j], idx[b, ch, i, j] = best, where
    return out, idx


def loop_avg_pool(x, k, s, p, ceil_mode, count_include_pad, divisor_override):
    n, c, h, w = x.shape
    oh, ow = out_len(h, k[0], s[0], p[0], 1, ceil_mode), out_len(w, k[1], s[1], p[1], 1, ceil_mode)
    out = np.zeros((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * s[0] - p[0], j * s[1] - p[1]
            h1, w1 = min(h0 + k[0], h + p[0]), min(w0 + k[1], w + p[1])
            pool_size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            total = np.zeros((n, c))
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    total += x[:, :, ih, iw]
            if divisor_override is not None:
                divisor = divisor_override
            elif count_include_pad:
                divisor = pool_size
            else:
                divisor = (h1 - h0) * (w1 - w0)
            out[:, :, i, j] = total / divisor
    return out


def loop_bins(size, out):
    return [(math.floor(i * size / out), math.ceil((i + 1) * size / out)) for i in range(out)]


def loop_adaptive(x, oh, ow, reduce):
    n, c, h, w = x.shape
    out = np.empty((n, c, oh, ow), np.float64)
    idx = np.empty((n, c, oh, ow), np.int64)
    for i, (h0, h1) in enumerate(loop_bins(h, oh)):
        for j, (w0, w1) in enumerate(loop_bins(w, ow)):
            window = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
            if reduce == "mean":
                out[:, :, i, j] = window.mean(axis=-1)
            else:
                flat = window.argmax(axis=-1)  # first maximum in row-major order
                out[:, :, i, j] = window.max(axis=-1)
                idx[:, :, i, j] = (h0 + flat // (w1 - w0)) * w + w0 + flat % (w1 - w0)
    return out, idx


# -- strategies ---------------------------------------------------------------------------------------------


@st.composite
def pool_config(draw, dilation=True):
    """Sizes, kernel, stride, padding, dilation and ceil_mode with at least one output per dimension."""
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilation else (1, 1)
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    s = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    # the smallest input that still gives one output window
    low = [max(1, (kk - 1) * dd + 1 - 2 * pp) for kk, dd, pp in zip(k, d, p)]
    size = (draw(st.integers(low[0], low[0] + 7)), draw(st.integers(low[1], low[1] + 7)))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    return (n, c) + size, k, s, p, d, draw(st.booleans())


def tie_free(shape, rng, dtype=np.float64):
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0 - 3.0).astype(dtype)


# -- tests --------------------------------------------------------------------------------------------------


def test_all_pool_kernels_are_registered_under_their_names():
    names = [
        "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "adaptive_avg_pool2d",
        "adaptive_avg_pool2d_backward", "adaptive_max_pool2d", "adaptive_max_pool2d_backward", "max_unpool2d",
        "max_unpool2d_backward",
    ]
    for name in names:
        assert K(name).__name__ == name


@given(pool_config(), st.sampled_from([np.float32, np.float64]), st.booleans())
def test_max_pool2d_matches_torch_loop(config, dtype, with_ties):
    shape, k, s, p, d, ceil_mode = config
    rng = np.random.default_rng(sum(shape))
    # integer-valued inputs give many ties: the first maximum in window order must win
    x = rng.integers(-2, 3, shape).astype(dtype) if with_ties else tie_free(shape, rng, dtype)
    out, idx = K("max_pool2d")(XP, x, k, s, p, d, ceil_mode)
    want, want_idx = loop_max_pool(x, k, s, p, d, ceil_mode)
    assert out.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(idx, want_idx)


def test_max_pool2d_nan_and_minus_inf_follow_torch():
    x = np.array([[[[np.nan, 1.0, -np.inf], [np.nan, 2.0, -np.inf]]]])
    out, idx = K("max_pool2d")(XP, x, (2, 1), (1, 1), (0, 0), (1, 1), False)
    # a NaN wins over numbers (torch keeps the last NaN it scans); an all -inf window keeps its first position
    np.testing.assert_array_equal(idx, [[[[3, 4, 2]]]])
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 0, 1] == 2.0 and out[0, 0, 0, 2] == -np.inf


def test_max_pool2d_window_entirely_in_padding_gets_no_gradient():
    # W=1, kernel 2, dilation 2, padding 1: the only window taps columns -1 and 1, both padding.
    x = np.array([[[[5.0]]]])
    out, idx = K("max_pool2d")(XP, x, (1, 2), (1, 1), (0, 1), (1, 2), False)
    assert out.shape == (1, 1, 1, 1) and out[0, 0, 0, 0] == -np.inf
    grad = K("max_pool2d_backward")(XP, np.ones_like(out), idx, x.shape)
    np.testing.assert_array_equal(grad, [[[[0.0]]]])


@given(pool_config(), st.sampled_from([np.float32, np.float64]))
def test_max_pool2d_backward_sums_gradients_at_argmax(config, dtype):
    shape, k, s, p, d, ceil_mode = config
    rng = np.random.default_rng(sum(shape) + 1)
    x = rng.integers(-2, 3, shape).astype(dtype)
    _, idx = loop_max_pool(x, k, s, p, d, ceil_mode)
    g = rng.standard_normal(idx.shape).astype(dtype)
    want = np.zeros(shape)
    for b, ch, i, j in np.ndindex(*idx.shape):
        # a window lying entirely in padding (output -inf) points outside the plane and passes no gradient
        if idx[b, ch, i, j] < shape[2] * shape[3]:
            want[b, ch].flat[idx[b, ch, i, j]] += g[b, ch, i, j]
    got = K("max_pool2d_backward")(XP, g, idx, shape)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@given(
    pool_config(dilation=False),
    st.booleans(),
    st.sampled_from([None, 1, 3, -2]),
    st.sampled_from([np.float32, np.float64]),
)
def test_avg_pool2d_matches_torch_loop(config, count_include_pad, divisor_override, dtype):
    shape, k, s, p, _, ceil_mode = config
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)
    got = K("avg_pool2d")(XP, x, k, s, p, ceil_mode, count_include_pad, divisor_override)
    want = loop_avg_pool(x.astype(np.float64), k, s, p, ceil_mode, count_include_pad, divisor_override)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_avg_pool2d_divisor_when_ceil_window_runs_past_the_padding():
    # H=W=4, kernel 3, stride 2, padding 1, ceil_mode: the last window covers rows 3..5 of which row 5 lies
    # beyond the one row of padding; torch divides by the 2 rows inside the padded input, not by 3.
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    got = K("avg_pool2d")(XP, x, (3, 3), (2, 2), (1, 1), True, True, None)
    assert got.shape == (1, 1, 3, 3)
    assert got[0, 0, 2, 2] == pytest.approx(15.0 / 4)  # only x[3, 3] inside; divisor 2 * 2
    assert got[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 9)
    assert got[0, 0, 0, 2] == pytest.approx((3 + 7) / 6)  # rows -1..1 (3), columns 3..4 (2)
    excl = K("avg_pool2d")(XP, x, (3, 3), (2, 2), (1, 1), True, False, None)
    assert excl[0, 0, 2, 2] == pytest.approx(15.0)
    assert excl[0, 0, 0, 2] == pytest.approx((3 + 7) / 2)


@given(pool_config(dilation=False), st.booleans(), st.sampled_from([None, 5]))
def test_avg_pool2d_backward_is_the_adjoint_of_forward(config, count_include_pad, divisor_override):
    shape, k, s, p, _, ceil_mode = config
    rng = np.random.default_rng(sum(shape) + 2)
    x = rng.standard_normal(shape)
    y = K("avg_pool2d")(XP, x, k, s, p, ceil_mode, count_include_pad, divisor_override)
    g = rng.standard_normal(y.shape)
    gx = K("avg_pool2d_backward")(XP, g, shape, k, s, p, ceil_mode, count_include_pad, divisor_override)
    # <A x, g> = <x, A^T g> for the linear map A
    assert np.sum(y * g) == pytest.approx(np.sum(x * gx), rel=1e-10, abs=1e-10)


sizes = st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 9), st.integers(1, 9))


@given(sizes, st.integers(1, 11), st.integers(1, 11), st.sampled_from([np.float32, np.float64]))
def test_adaptive_avg_pool2d_matches_loop(shape, oh, ow, dtype):
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)
    got = K("adaptive_avg_pool2d")(XP, x, (oh, ow))
    want, _ = loop_adaptive(x.astype(np.float64), oh, ow, "mean")
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    g = np.random.default_rng(1).standard_normal(want.shape)
    gx = K("adaptive_avg_pool2d_backward")(XP, g.astype(dtype), shape)
    np.testing.assert_allclose(np.sum(got * g), np.sum(x * gx), rtol=1e-4)


@given(sizes, st.integers(1, 11), st.integers(1, 11), st.booleans())
def test_adaptive_max_pool2d_matches_loop(shape, oh, ow, with_ties):
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-2, 3, shape).astype(np.float64) if with_ties else tie_free(shape, rng)
    got, idx = K("adaptive_max_pool2d")(XP, x, (oh, ow))
    want, want_idx = loop_adaptive(x, oh, ow, "max")
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(idx, want_idx)
    g = rng.standard_normal(want.shape)
    expected = np.zeros(shape)
    for b, ch, i, j in np.ndindex(*idx.shape):
        expected[b, ch].flat[want_idx[b, ch, i, j]] += g[b, ch, i, j]
    np.testing.assert_allclose(K("adaptive_max_pool2d_backward")(XP, g, idx, shape), expected, atol=1e-12)


def test_adaptive_bins_of_5_into_3_are_torchs():
    x = np.arange(5.0).reshape(1, 1, 1, 5)
    # bins [0, 2), [1, 4), [3, 5)
    np.testing.assert_allclose(K("adaptive_avg_pool2d")(XP, x, (1, 3)), [[[[0.5, 2.0, 3.5]]]])
    out, idx = K("adaptive_max_pool2d")(XP, x[..., ::-1].copy(), (1, 3))
    np.testing.assert_array_equal(out, [[[[4.0, 3.0, 1.0]]]])
    np.testing.assert_array_equal(idx, [[[[0, 1, 3]]]])


def test_max_unpool2d_and_its_backward_match_loops():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 2, 3))
    idx = rng.integers(0, 20, x.shape)
    got = K("max_unpool2d")(XP, x, idx, (4, 5))
    want = np.zeros((2, 3, 4, 5))
    for b, ch, i, j in np.ndindex(*x.shape):
        want[b, ch].flat[idx[b, ch, i, j]] = x[b, ch, i, j]  # later writes win, as torch's CPU loop
    np.testing.assert_array_equal(got, want)
    g = rng.standard_normal((2, 3, 4, 5))
    back = K("max_unpool2d_backward")(XP, g, idx)
    for b, ch, i, j in np.ndindex(*x.shape):
        assert back[b, ch, i, j] == g[b, ch].flat[idx[b, ch, i, j]]
