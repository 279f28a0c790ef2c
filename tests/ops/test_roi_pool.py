"""segcore.ops.roi_pool against torchvision's C++ loop (``ref`` fixture), hand-made cases, gradcheck, errors."""

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
def pool_cases(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    k = draw(st.integers(0, 5))
    scale = draw(st.sampled_from([1.0, 0.5, 1 / 3]))
    output = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    if draw(st.booleans()):
        x = np.round(x)  # many ties: the first maximum in row-major order must win
    corner = rng.uniform(-4, 1.5 * max(h, w) / scale, (k, 2))
    size = rng.uniform(-2, 1.5 * max(h, w) / scale, (k, 2))
    if draw(st.booleans()):  # corners at exact halves exercise round-half-away-from-zero
        corner, size = np.round(corner * 2) / 2, np.round(size * 2) / 2
    rois = np.concatenate([rng.integers(0, n, (k, 1)), corner, corner + size], axis=1).astype(dtype)
    return x, rois, output, scale


@given(pool_cases())
def test_forward_and_backward_match_the_loop(ref, case):
    x, rois, output, scale = case
    xt = _tensor(x, requires_grad=True)
    out = ops.roi_pool(xt, _tensor(rois), output, scale)
    expected, argmax = ref.roi_pool(x, rois, scale, output)
    np.testing.assert_array_equal(out.numpy(), expected)
    grad = np.random.default_rng(7).standard_normal(expected.shape).astype(x.dtype)
    out.backward(_tensor(grad))
    np.testing.assert_allclose(xt.grad.numpy(), ref.roi_pool_backward(grad, rois, argmax, x.shape), rtol=0, atol=1e-6)


def test_hand_made_bins_and_rounding():
    x = np.arange(25.0).reshape(1, 1, 5, 5)  # value = 5 * y + x: a bin's max is its bottom-right pixel
    # Box (0.5, 0.5)-(3.4, 3.4): corners round (half away from zero) to 1 and 3, so the RoI spans pixels
    # 1..3 (inclusive, 3 pixels). Two bins of 1.5 pixels: [floor(0), ceil(1.5)) and [floor(1.5), ceil(3))
    # from pixel 1, i.e. pixels 1..2 and 2..3. (Rounding half to even would start at 0 and give 1 and 3.)
    out = ops.roi_pool(_tensor(x), _tensor([[0, 0.5, 0.5, 3.4, 3.4]]), 2).numpy()
    last = [2, 3]  # last pixel of each bin, in both axes
    np.testing.assert_array_equal(out[0, 0], [[5 * r + c for c in last] for r in last])
    # On a decreasing map the max is a bin's top-left pixel: 2.5 rounds to 3, so the RoI starts at (3, 3).
    out = ops.roi_pool(_tensor(-x), _tensor([[0, 2.5, 2.5, 4.0, 4.0]]), 1).numpy()
    np.testing.assert_array_equal(out, [[[[-(5 * 3 + 3)]]]])


def test_empty_bins_are_zero_without_gradient():
    x = segcore.tensor(-np.ones((1, 2, 4, 4)), requires_grad=True)
    # Entirely right of / below the map: every bin is clamped to [4, 4), empty -> 0 (not -1, the input value).
    out = ops.roi_pool(x, _tensor([[0, 6.0, 6.0, 9.0, 9.0]]), 2)
    np.testing.assert_array_equal(out.numpy(), np.zeros((1, 2, 2, 2)))
    out.sum().backward()
    assert not np.any(x.grad.numpy())


def test_gradient_goes_to_the_first_maximum():
    x = segcore.tensor(np.ones((1, 1, 4, 4)), requires_grad=True)
    # A constant map ties everywhere: each 2x2 bin's argmax is its top-left pixel.
    ops.roi_pool(x, _tensor([[0, 0.0, 0.0, 3.0, 3.0]]), 2).sum().backward()
    expected = np.zeros((4, 4))
    expected[[0, 0, 2, 2], [0, 2, 0, 2]] = 1
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], expected)


def test_gradcheck_float64():
    rng = np.random.default_rng(0)
    x = segcore.tensor(rng.standard_normal((2, 2, 6, 7)), requires_grad=True)
    boxes = _tensor([[0, 0.0, 0.0, 5.0, 4.0], [1, 1.2, 2.6, 9.0, 7.0], [1, 3.0, 3.0, 3.0, 3.0]])
    gradcheck(lambda t: ops.roi_pool(t, boxes, (2, 3), 0.8), [x])


def test_zero_boxes_and_module_form():
    x = _tensor(np.ones((1, 2, 4, 4), dtype=np.float32))
    assert ops.roi_pool(x, _tensor(np.zeros((0, 5), np.float32)), 3).shape == (0, 2, 3, 3)
    layer = ops.RoIPool(3, 0.5)
    boxes = _tensor([[0, 0, 0, 6, 6]], dtype=np.float32)
    np.testing.assert_array_equal(layer(x, boxes).numpy(), ops.roi_pool(x, boxes, 3, 0.5).numpy())
    assert repr(layer) == "RoIPool(output_size=3, spatial_scale=0.5)"


def test_bad_arguments_raise():
    x = _tensor(np.ones((1, 1, 4, 4), dtype=np.float32))
    message = r"roi_pool: batch index 1\.0 \(boxes\[:, 0\]\) must be an integer in \[0, 0\]"
    with pytest.raises(ValueError, match=message):
        ops.roi_pool(x, _tensor([[1, 0, 0, 2, 2]], dtype=np.float32), 2)
    with pytest.raises(TypeError, match="roi_pool: input must be a floating-point tensor, got dtype int64"):
        ops.roi_pool(_tensor(np.ones((1, 1, 4, 4), np.int64)), _tensor([[0, 0, 0, 2, 2]], dtype=np.float32), 2)
    with pytest.raises(ValueError, match=r"roi_pool: output_size must be an int or a sequence of 2 ints, got 2\.5"):
        ops.roi_pool(x, _tensor([[0, 0, 0, 2, 2]], dtype=np.float32), 2.5)
