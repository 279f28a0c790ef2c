"""segcore.ops.roi_align: forward and backward against torchvision's C++ semantics written as explicit loops
(``ref`` fixture, tests/ops/conftest.py), hand-calculated cases, gradcheck, edge cases and argument errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
import segcore.ops as ops
from segcore.testing import gradcheck


def _tensor(a, **kw):
    return segcore.tensor(np.asarray(a), **kw)


@st.composite
def roi_cases(draw):
    """A small feature map, boxes around / inside / outside it, and RoIAlign parameters."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    k = draw(st.integers(0, 5))
    scale = draw(st.sampled_from([1.0, 0.5, 1 / 3]))
    aligned = draw(st.booleans())
    sampling = draw(st.integers(-1, 3))
    output = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    corner = rng.uniform(-6, 2 * max(h, w) / scale, (k, 2))
    size = rng.uniform(-2, 2 * max(h, w) / scale, (k, 2))
    if draw(st.booleans()):  # corners on the half-pixel grid: exact -1 / H boundaries and zero-size boxes
        corner, size = np.round(corner * 2) / 2, np.round(size * 2) / 2
    if aligned and sampling <= 0:
        # torchvision's kernel cannot size a negative adaptive grid (it throws); keep x2 >= x1 there.
        size = np.abs(size)
    rois = np.concatenate([rng.integers(0, n, (k, 1)), corner, corner + size], axis=1).astype(dtype)
    return x, rois, dict(output_size=output, spatial_scale=scale, sampling_ratio=sampling, aligned=aligned)


@given(roi_cases())
def test_forward_and_backward_match_the_per_sample_loop(ref, case):
    x, rois, params = case
    xt = _tensor(x, requires_grad=True)
    out = ops.roi_align(xt, _tensor(rois), **params)
    geometry = (params["spatial_scale"], params["output_size"], params["sampling_ratio"], params["aligned"])
    expected = ref.roi_align(x, rois, *geometry)
    atol = 2e-6 if x.dtype == np.float32 else 1e-12
    assert out.dtype == x.dtype and out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=atol)
    grad = np.random.default_rng(1).standard_normal(expected.shape).astype(x.dtype)
    out.backward(_tensor(grad))
    expected_grad = ref.roi_align_backward(grad, rois, x.shape, *geometry)
    np.testing.assert_allclose(xt.grad.numpy(), expected_grad, rtol=0, atol=10 * atol)


def test_adaptive_sampling_of_large_boxes_matches_the_loop(ref):
    # Boxes much larger than their bins: ceil(roi / output) samples per axis, different for every box.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 20, 24))
    rois = np.array([[0, 0, 0, 23, 19], [1, 2.5, 1, 9, 17.5], [1, -4, -3, 30, 26], [0, 5, 6, 6, 7]])
    for aligned in (False, True):
        out = ops.roi_align(_tensor(x), _tensor(rois), (3, 2), 1.0, 0, aligned)
        np.testing.assert_allclose(out.numpy(), ref.roi_align(x, rois, 1.0, (3, 2), 0, aligned), atol=1e-12)


def test_small_and_large_windows_match_the_loop(ref):
    # The forward gathers RoI windows either from a channels-last copy (windows cover more pixels than the
    # map) or straight from NCHW (a few small RoIs on a large map): both must give the loop's values.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 30, 40))
    few_small = np.array([[0, 3.2, 4.1, 6.0, 7.5], [1, 20.0, 10.0, 22.5, 11.0]])
    corners, ends = rng.uniform(-5, 10, (40, 2)), rng.uniform(20, 45, (40, 2))
    many_large = np.concatenate([rng.integers(0, 2, (40, 1)), corners, ends], axis=1)
    for rois in (few_small, many_large):
        for sampling in (2, -1):
            out = ops.roi_align(_tensor(x), _tensor(rois), (4, 3), 1.0, sampling, False).numpy()
            np.testing.assert_allclose(out, ref.roi_align(x, rois, 1.0, (4, 3), sampling, False), rtol=0, atol=1e-12)


def test_linear_ramp_is_sampled_at_bin_centres():
    # Bilinear interpolation is exact on f(y, x) = 3y + x, and the samples of a bin are symmetric about its
    # centre, so each output is f at the bin centre: box (2, 1)-(6, 5), 2x2 bins of 2x2 pixels -> centres
    # y in {2, 4}, x in {3, 5}.
    ys, xs = np.mgrid[0:8, 0:8]
    x = (3.0 * ys + xs)[None, None].astype(np.float64)
    out = ops.roi_align(_tensor(x), _tensor([[0, 2, 1, 6, 5]], dtype=np.float64), 2, 1.0, 2, False).numpy()
    np.testing.assert_allclose(out[0, 0], [[3 * 2 + 3, 3 * 2 + 5], [3 * 4 + 3, 3 * 4 + 5]], atol=1e-12)
    # aligned=True shifts every sample by -0.5 pixel in both axes: f drops by 0.5 * (3 + 1) = 2.
    shifted = ops.roi_align(_tensor(x), _tensor([[0, 2, 1, 6, 5]], dtype=np.float64), 2, 1.0, 2, True).numpy()
    np.testing.assert_allclose(shifted, out - 2.0, atol=1e-12)


def test_spatial_scale_maps_image_coordinates_to_the_map():
    ys, xs = np.mgrid[0:8, 0:8]
    x = (3.0 * ys + xs)[None, None].astype(np.float64)
    full = ops.roi_align(_tensor(x), _tensor([[0, 2, 1, 6, 5]], dtype=np.float64), 2, 1.0, 2).numpy()
    quarter = ops.roi_align(_tensor(x), _tensor([[0, 8, 4, 24, 20]], dtype=np.float64), 2, 0.25, 2).numpy()
    np.testing.assert_allclose(quarter, full, atol=1e-12)


def test_degenerate_boxes():
    ys, xs = np.mgrid[0:6, 0:6]
    x = (3.0 * ys + xs)[None, None].astype(np.float64)
    point = _tensor([[0, 2, 3, 2, 3]], dtype=np.float64)  # zero width and height at (x=2, y=3)
    # Legacy mode makes it a 1x1 box from (2, 3): a single bin samples around its centre (3.5, 2.5).
    legacy = ops.roi_align(_tensor(x), point, 1, 1.0, 2, False).numpy()
    np.testing.assert_allclose(legacy, [[[[3 * 3.5 + 2.5]]]], atol=1e-12)
    # aligned=True keeps it empty: every sample sits at the shifted point (1.5, 2.5) ...
    fixed = ops.roi_align(_tensor(x), point, 2, 1.0, 2, True).numpy()
    np.testing.assert_allclose(fixed, np.full((1, 1, 2, 2), 3 * 2.5 + 1.5), atol=1e-12)
    # ... and adaptive sampling takes ceil(0 / 2) = 0 samples: the output is 0.
    assert np.all(ops.roi_align(_tensor(x), point, 2, 1.0, -1, True).numpy() == 0)


def test_boxes_outside_the_map():
    x = np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    boxes = _tensor(
        [
            [0, 6, 6, 9, 9],  # every sample beyond H = W = 4 + 1: zero
            [0, -9, -9, -2, -2],  # every sample below -1: zero
            [0, -1, -1, 0, 0],  # samples in [-1, 0]: clamped onto pixel (0, 0)
            [0, 3, 3, 4, 4],  # samples in (3, 4), past the last pixel centre: clamped onto pixel (3, 3)
        ],
        dtype=np.float64,
    )
    out = ops.roi_align(_tensor(x), boxes, 2, 1.0, 2, False).numpy()
    np.testing.assert_allclose(out[:, 0], np.array([0.0, 0.0, 1.0, 16.0])[:, None, None] * np.ones((4, 2, 2)))


def test_gradcheck_float64():
    rng = np.random.default_rng(0)
    x = segcore.tensor(rng.standard_normal((2, 3, 7, 9)), requires_grad=True)
    boxes = _tensor([[0, 1.2, 0.5, 6.1, 5.3], [1, -1.5, 2.0, 12.0, 4.5], [1, 3.0, 3.0, 3.0, 3.0]], dtype=np.float64)
    for sampling, aligned in ((2, False), (-1, True), (1, True)):
        gradcheck(lambda t: ops.roi_align(t, boxes, (3, 2), 0.9, sampling, aligned), [x])


def test_list_of_boxes_is_tensor_form_with_image_indices():
    rng = np.random.default_rng(2)
    x = _tensor(rng.standard_normal((2, 2, 6, 6)).astype(np.float32))
    first = np.array([[0.5, 0.5, 4, 4], [1, 2, 5, 3]], dtype=np.float32)
    second = np.array([[2, 1, 6, 5]], dtype=np.float32)
    as_list = ops.roi_align(x, [_tensor(first), _tensor(second)], 2, 1.0, 2).numpy()
    rois = np.concatenate([np.array([[0], [0], [1]], dtype=np.float32), np.concatenate([first, second])], axis=1)
    np.testing.assert_array_equal(as_list, ops.roi_align(x, _tensor(rois), 2, 1.0, 2).numpy())


def test_zero_boxes():
    x = segcore.tensor(np.ones((1, 3, 5, 5), dtype=np.float32), requires_grad=True)
    out = ops.roi_align(x, segcore.tensor(np.zeros((0, 5), dtype=np.float32)), (2, 3))
    assert out.shape == (0, 3, 2, 3)
    out.backward(segcore.tensor(np.zeros((0, 3, 2, 3), dtype=np.float32)))
    assert x.grad.shape == (1, 3, 5, 5) and not np.any(x.grad.numpy())
    empty_list = ops.roi_align(x, [segcore.tensor(np.zeros((0, 4), dtype=np.float32))], 2)
    assert empty_list.shape == (0, 3, 2, 2)


def test_backward_is_deterministic():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    images, corners, ends = rng.integers(0, 2, (40, 1)), rng.uniform(0, 8, (40, 2)), rng.uniform(8, 12, (40, 2))
    boxes = np.concatenate([images, corners, ends], axis=1)
    grad = rng.standard_normal((40, 8, 3, 3)).astype(np.float32)
    grads = []
    for _ in range(2):
        xt = segcore.tensor(x, requires_grad=True)
        ops.roi_align(xt, _tensor(boxes.astype(np.float32)), 3, 1.0, -1).backward(segcore.tensor(grad))
        grads.append(xt.grad.numpy())
    assert np.array_equal(grads[0], grads[1])


def test_boxes_get_no_gradient():
    x = segcore.tensor(np.ones((1, 1, 4, 4)), requires_grad=True)
    boxes = segcore.tensor(np.array([[0, 0.0, 0.0, 2.0, 2.0]]), requires_grad=True)
    ops.roi_align(x, boxes, 2).sum().backward()
    assert boxes.grad is None
    # All four samples of each of the 4 bins are inside the map: the weights sum to 1 per bin.
    assert x.grad.numpy().sum() == pytest.approx(4.0)


def test_module_form():
    x = _tensor(np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32))
    boxes = _tensor([[0, 0, 0, 10, 10]], dtype=np.float32)
    layer = ops.RoIAlign((2, 2), 0.5, 2, aligned=True)
    np.testing.assert_array_equal(layer(x, boxes).numpy(), ops.roi_align(x, boxes, (2, 2), 0.5, 2, True).numpy())
    assert repr(layer) == "RoIAlign(output_size=(2, 2), spatial_scale=0.5, sampling_ratio=2, aligned=True)"


@pytest.mark.parametrize(
    "boxes, error, message",
    [
        ([[2, 0, 0, 1, 1]], ValueError, r"batch index 2\.0 .* \[0, 1\]"),
        ([[-1, 0, 0, 1, 1]], ValueError, r"batch index -1\.0"),
        ([[0.5, 0, 0, 1, 1]], ValueError, r"batch index 0\.5 .* must be an integer"),
        ([[0, 0, np.nan, 1, 1]], ValueError, "boxes must be finite"),
        ([[0, 0, 1, 1]], ValueError, r"boxes must have shape \(L, 5\), got \(1, 4\)"),
    ],
)
def test_bad_boxes_raise(boxes, error, message):
    x = segcore.tensor(np.ones((2, 1, 4, 4), dtype=np.float32))
    with pytest.raises(error, match=message):
        ops.roi_align(x, segcore.tensor(np.array(boxes, dtype=np.float32)), 2)


def test_bad_arguments_raise():
    x = segcore.tensor(np.ones((1, 1, 4, 4), dtype=np.float32))
    boxes = segcore.tensor(np.array([[0, 0, 0, 2, 2]], dtype=np.float32))
    with pytest.raises(TypeError, match=r"boxes must have the dtype of input \(float32\), got float64"):
        ops.roi_align(x, segcore.tensor(np.array([[0, 0, 0, 2, 2]], dtype=np.float64)), 2)
    with pytest.raises(ValueError, match=r"boxes is a list of 2 tensors .* batch of 1"):
        ops.roi_align(x, [segcore.tensor(np.ones((1, 4), np.float32))] * 2, 2)
    with pytest.raises(ValueError, match=r"output_size must be >= 1, got \(0, 2\)"):
        ops.roi_align(x, boxes, (0, 2))
    with pytest.raises(ValueError, match=r"spatial_scale must be a finite number > 0, got -1"):
        ops.roi_align(x, boxes, 2, spatial_scale=-1)
    with pytest.raises(TypeError, match="sampling_ratio must be an int, got 2.0"):
        ops.roi_align(x, boxes, 2, sampling_ratio=2.0)
    with pytest.raises(TypeError, match="aligned must be a bool, got 1"):
        ops.roi_align(x, boxes, 2, aligned=1)
    with pytest.raises(ValueError, match=r"input must be 4-D \(N, C, H, W\), got shape \(1, 4, 4\)"):
        ops.roi_align(segcore.tensor(np.ones((1, 4, 4), np.float32)), boxes, 2)
    with pytest.raises(TypeError, match="boxes must be a Tensor"):
        ops.roi_align(x, np.array([[0, 0, 0, 2, 2]], np.float32), 2)
