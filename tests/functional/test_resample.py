"""interpolate: hand-derived values, scipy.ndimage.zoom, exact-fraction and per-pixel loop references, gradcheck."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

import segcore
import segcore.functional as F
from segcore.testing import gradcheck


def t(array, requires_grad=False):
    return segcore.tensor(np.asarray(array), requires_grad=requires_grad)


X22 = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=np.float32)


# -- independent references ---------------------------------------------------------------------------------


def fraction_nearest(in_size, out_size, exact, scale=None):
    """Source index per output position in exact rational arithmetic (no floating point at all)."""
    ratio = Fraction(in_size, out_size) if scale is None else 1 / Fraction(scale)
    shift = Fraction(1, 2) if exact else 0
    return [min(math.floor((d + shift) * ratio), in_size - 1) for d in range(out_size)]


def loop_bilinear(x, out_h, out_w, align_corners, scales=(None, None)):
    """torch's bilinear rule, one output pixel at a time in float64."""

    def source(dst, in_size, out_size, scale):
        if in_size == out_size:
            return float(dst)
        if align_corners:
            return dst * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        ratio = 1.0 / scale if scale else in_size / out_size
        return max((dst + 0.5) * ratio - 0.5, 0.0)

    n, c, h, w = x.shape
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        sy = source(i, h, out_h, scales[0])
        y0 = min(int(math.floor(sy)), h - 1)
        y1, ly = min(y0 + 1, h - 1), min(sy - y0, 1.0)
        for j in range(out_w):
            sx = source(j, w, out_w, scales[1])
            x0 = min(int(math.floor(sx)), w - 1)
            x1, lx = min(x0 + 1, w - 1), min(sx - x0, 1.0)
            out[:, :, i, j] = (
                (1 - ly) * ((1 - lx) * x[:, :, y0, x0] + lx * x[:, :, y0, x1])
                + ly * ((1 - lx) * x[:, :, y1, x0] + lx * x[:, :, y1, x1])
            )
    return out


spatial = st.integers(1, 7)
out_spatial = st.integers(1, 10)


# -- bilinear -----------------------------------------------------------------------------------------------


def test_bilinear_2x2_to_4x4_align_corners_true_by_hand():
    # source coordinate = dst * (2 - 1) / (4 - 1) = 0, 1/3, 2/3, 1; value = 1 + t_x + 2 * t_y
    t3 = np.array([0, 1 / 3, 2 / 3, 1])
    want = 1 + t3[None, :] + 2 * t3[:, None]
    got = F.interpolate(t(X22), size=(4, 4), mode="bilinear", align_corners=True)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.numpy()[0, 0], want, rtol=1e-6)


def test_bilinear_2x2_to_4x4_half_pixel_by_hand():
    # source = (dst + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (past the last pixel: x[1])
    got = F.interpolate(t(X22), scale_factor=2, mode="bilinear")
    want = [[1.0, 1.25, 1.75, 2.0], [1.5, 1.75, 2.25, 2.5], [2.5, 2.75, 3.25, 3.5], [3.0, 3.25, 3.75, 4.0]]
    np.testing.assert_allclose(got.numpy()[0, 0], want, rtol=1e-6)
    np.testing.assert_allclose(F.interpolate(t(X22), size=4, mode="bilinear", align_corners=False).numpy()[0, 0], want)


@given(spatial, spatial, out_spatial, out_spatial, st.booleans(), st.sampled_from([np.float32, np.float64]))
def test_bilinear_matches_scipy_zoom(h, w, oh, ow, align_corners, dtype):
    x = np.random.default_rng(h * 10 + w).standard_normal((2, 3, h, w)).astype(dtype)
    # scipy's grid_mode=False aligns corner pixels; grid_mode=True uses pixel centres, and its "nearest"
    # extension reproduces torch's clamping of coordinates that fall before the first or after the last pixel
    want = ndimage.zoom(
        x.astype(np.float64), (1, 1, oh / h, ow / w), order=1, grid_mode=not align_corners, mode="nearest"
    )
    got = F.interpolate(t(x), size=(oh, ow), mode="bilinear", align_corners=align_corners)
    assert got.dtype == dtype and want.shape == got.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


@given(spatial, spatial, st.sampled_from([0.5, 0.7, 1.1, 1.5, 1.7, 2.0, 2.6, 3.0]), st.booleans())
def test_bilinear_scale_factor_uses_the_reciprocal_scale_unless_recomputed(h, w, factor, recompute):
    oh, ow = math.floor(h * factor), math.floor(w * factor)
    x = np.random.default_rng(h + w).standard_normal((1, 2, h, w))
    if min(oh, ow) < 1:
        with pytest.raises(ValueError, match="output sizes should be greater than 0"):
            F.interpolate(t(x), scale_factor=factor, mode="bilinear")
        return
    got = F.interpolate(t(x), scale_factor=factor, mode="bilinear", recompute_scale_factor=recompute)
    scales = (None, None) if recompute else (factor, factor)
    np.testing.assert_allclose(got.numpy(), loop_bilinear(x, oh, ow, False, scales), rtol=1e-10, atol=1e-12)


def test_bilinear_keeps_the_input_when_the_size_does_not_change():
    # 5 * 1.1 floors to 5: torch copies instead of sampling at (dst + 0.5) / 1.1 - 0.5
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    np.testing.assert_array_equal(F.interpolate(t(x), scale_factor=1.1, mode="bilinear").numpy(), x)


@settings(max_examples=10)
@given(spatial, spatial, out_spatial, out_spatial, st.booleans())
def test_bilinear_gradcheck(h, w, oh, ow, align_corners):
    x = t(np.random.default_rng(h * w).standard_normal((2, 1, h, w)), requires_grad=True)
    gradcheck(lambda a: F.interpolate(a, size=(oh, ow), mode="bilinear", align_corners=align_corners), [x])


@settings(max_examples=5)
@given(spatial, st.integers(2, 7))
def test_bilinear_gradcheck_with_scale_factor(h, w):
    x = t(np.random.default_rng(h * w).standard_normal((1, 2, h, w)), requires_grad=True)
    gradcheck(lambda a: F.interpolate(a, scale_factor=(1.7, 0.6), mode="bilinear"), [x])


# -- nearest ------------------------------------------------------------------------------------------------


def test_nearest_and_nearest_exact_by_hand():
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    # legacy: rows floor(d * 2/3) = 0, 0, 1; columns floor(d * 3/5) = 0, 0, 1, 1, 2
    legacy = F.interpolate(t(x), size=(3, 5)).numpy()[0, 0]
    np.testing.assert_array_equal(legacy, [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]])
    # exact: rows floor((d + .5) * 2/3) = 0, 1, 1; columns floor((d + .5) * 3/5) = 0, 0, 1, 2, 2
    exact = F.interpolate(t(x), size=(3, 5), mode="nearest-exact").numpy()[0, 0]
    np.testing.assert_array_equal(exact, [[0, 0, 1, 2, 2], [3, 3, 4, 5, 5], [3, 3, 4, 5, 5]])


def test_nearest_scale_factor_versus_recomputed_scale_by_hand():
    x = np.arange(4.0).reshape(1, 1, 1, 4)
    # output width floor(4 * 2.6) = 10; sources floor(d / 2.6) against floor(d * 4 / 10)
    given_scale = F.interpolate(t(x), scale_factor=(1.0, 2.6)).numpy()[0, 0, 0]
    recomputed = F.interpolate(t(x), scale_factor=(1.0, 2.6), recompute_scale_factor=True).numpy()[0, 0, 0]
    np.testing.assert_array_equal(given_scale, [0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(recomputed, [0, 0, 0, 1, 1, 2, 2, 2, 3, 3])


@given(
    st.integers(1, 12),
    st.integers(1, 12),
    st.integers(1, 16),
    st.integers(1, 16),
    st.booleans(),
    st.sampled_from([np.float32, np.float64, np.int64]),
)
def test_nearest_modes_match_exact_fractions(h, w, oh, ow, exact, dtype):
    x = np.random.default_rng(h * 13 + w).integers(0, 100, (2, 2, h, w)).astype(dtype)
    mode = "nearest-exact" if exact else "nearest"
    got = F.interpolate(t(x), size=(oh, ow), mode=mode)
    rows, cols = fraction_nearest(h, oh, exact), fraction_nearest(w, ow, exact)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.numpy(), x[:, :, rows][:, :, :, cols])


@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from([0.5, 0.75, 1.5, 2.0, 2.5, 3.0]), st.booleans())
def test_nearest_scale_factor_matches_exact_fractions(h, w, factor, exact):
    oh, ow = math.floor(h * factor), math.floor(w * factor)
    if min(oh, ow) < 1:
        return
    x = np.random.default_rng(h * 13 + w).standard_normal((1, 2, h, w)).astype(np.float32)
    got = F.interpolate(t(x), scale_factor=factor, mode="nearest-exact" if exact else "nearest")
    rows, cols = fraction_nearest(h, oh, exact, factor), fraction_nearest(w, ow, exact, factor)
    np.testing.assert_array_equal(got.numpy(), x[:, :, rows][:, :, :, cols])


@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 12), st.integers(1, 12), st.booleans())
def test_nearest_backward_counts_how_often_each_pixel_is_read(h, w, oh, ow, exact):
    x = t(np.zeros((1, 1, h, w)), requires_grad=True)
    F.interpolate(x, size=(oh, ow), mode="nearest-exact" if exact else "nearest").sum().backward()
    rows = np.bincount(fraction_nearest(h, oh, exact), minlength=h)
    cols = np.bincount(fraction_nearest(w, ow, exact), minlength=w)
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], np.outer(rows, cols))


@settings(max_examples=8)
@given(spatial, spatial, out_spatial, out_spatial)
def test_nearest_gradcheck(h, w, oh, ow):
    x = t(np.random.default_rng(h + 3 * w).standard_normal((1, 2, h, w)), requires_grad=True)
    gradcheck(lambda a: F.interpolate(a, size=(oh, ow)), [x])
    gradcheck(lambda a: F.interpolate(a, size=(oh, ow), mode="nearest-exact"), [x])


# -- area ---------------------------------------------------------------------------------------------------


def test_area_is_adaptive_average_pooling():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    want = [[(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4], [(8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]]
    np.testing.assert_allclose(F.interpolate(t(x), size=2, mode="area").numpy()[0, 0], want)
    # a scale factor is turned into a size first (torch recomputes it for "area")
    np.testing.assert_allclose(F.interpolate(t(x), scale_factor=0.5, mode="area").numpy()[0, 0], want)
    # 4 -> 3 columns: bins [0, 2), [1, 3), [2, 4)
    np.testing.assert_allclose(F.interpolate(t(x), size=(1, 3), mode="area").numpy()[0, 0], [[6.5, 7.5, 8.5]])
    xg = t(np.random.default_rng(0).standard_normal((1, 2, 5, 4)), requires_grad=True)
    gradcheck(lambda a: F.interpolate(a, size=(3, 6), mode="area"), [xg])


# -- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({}, ValueError, "either size or scale_factor should be defined"),
        ({"size": 4, "scale_factor": 2}, ValueError, "only one of size or scale_factor"),
        ({"size": 4, "align_corners": True}, ValueError, "align_corners option can only be set .* mode='nearest'"),
        ({"size": 4, "mode": "area", "align_corners": False}, ValueError, "align_corners option"),
        ({"size": 4, "mode": "bilinear", "align_corners": 1}, TypeError, "align_corners must be a bool"),
        ({"size": 4, "mode": "cubic"}, ValueError, "mode must be one of .* got 'cubic'"),
        ({"size": 4, "mode": "bicubic"}, NotImplementedError, "mode='bicubic' is not implemented"),
        ({"size": (4, 4, 4)}, ValueError, r"size must have one entry per spatial dimension .* \(4, 4, 4\)"),
        ({"size": (4.0, 4)}, TypeError, r"size must be an int or a pair of them, got \(4.0, 4\)"),
        ({"size": (0, 4)}, ValueError, r"sizes should be greater than 0, got input \(3, 3\) and output \(0, 4\)"),
        ({"scale_factor": 0.2}, ValueError, r"output \(0, 0\)"),
        ({"scale_factor": -2.0}, ValueError, "scale_factor must be positive and finite, got -2.0"),
        ({"scale_factor": "2"}, TypeError, "scale_factor must be a number"),
        ({"size": 4, "recompute_scale_factor": True}, ValueError, "recompute_scale_factor=True is not meaningful"),
        ({"size": 4, "antialias": True}, NotImplementedError, "antialias"),
    ],
)
def test_bad_arguments_are_reported(kwargs, error, match):
    x = t(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(error, match=match):
        F.interpolate(x, **kwargs)


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match=r"input must be 4-D \(N, C, H, W\) .* got shape \(3, 3, 3\)"):
        F.interpolate(t(np.zeros((3, 3, 3))), size=4)
    with pytest.raises(TypeError, match="input must be a Tensor, got list"):
        F.interpolate([[1.0]], size=4)
    with pytest.raises(TypeError, match="mode='bilinear' needs a floating-point input, got dtype int64"):
        F.interpolate(t(np.zeros((1, 1, 2, 2), np.int64)), size=4, mode="bilinear")
