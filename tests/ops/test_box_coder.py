"""segcore.ops.BoxCoder: R-CNN box codes by hand, decode(encode(x)) == x, the exp clamp, shapes, gradients."""

import math

import numpy as np
import pytest

import segcore
import segcore.ops as ops
from segcore.testing import gradcheck


def _tensor(a, dtype=np.float64, **kw):
    return segcore.tensor(np.asarray(a, dtype=dtype), **kw)


def test_encode_by_hand():
    proposal = _tensor([[0, 0, 10, 10]])  # centre (5, 5), size 10 x 10
    target = _tensor([[1, 2, 11, 14]])  # centre (6, 8), size 10 x 12
    codes = ops.BoxCoder((1, 1, 1, 1)).encode_single(target, proposal).numpy()
    np.testing.assert_allclose(codes, [[0.1, 0.3, 0.0, math.log(1.2)]], atol=1e-12)
    weighted = ops.BoxCoder((10, 10, 5, 5)).encode_single(target, proposal).numpy()
    np.testing.assert_allclose(weighted, [[1.0, 3.0, 0.0, 5 * math.log(1.2)]], atol=1e-12)


def test_decode_by_hand_and_clamp():
    coder = ops.BoxCoder((10, 10, 5, 5))
    proposal = _tensor([[0, 0, 10, 10]])
    # dx = 1 / 10 -> centre x 5 + 0.1 * 10 = 6; dh = 5 log(2) / 5 -> height 20 around centre y 5.
    decoded = coder.decode_single(_tensor([[1.0, 0.0, 0.0, 5 * math.log(2)]]), proposal).numpy()
    np.testing.assert_allclose(decoded, [[1, -5, 11, 15]], atol=1e-12)
    # A huge dw is clamped at log(1000 / 16): width 10 * 62.5 = 625 around centre x 5.
    clamped = coder.decode_single(_tensor([[0.0, 0.0, 5 * 100.0, 0.0]]), proposal).numpy()
    np.testing.assert_allclose(clamped, [[5 - 312.5, 0, 5 + 312.5, 10]], atol=1e-9)


def test_decode_inverts_encode_per_image_lists():
    rng = np.random.default_rng(0)

    def random_boxes(n):
        corner = rng.uniform(0, 50, (n, 2))
        return _tensor(np.concatenate([corner, corner + rng.uniform(1, 30, (n, 2))], axis=1))

    coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))
    proposals = [random_boxes(3), random_boxes(0), random_boxes(2)]
    targets = [random_boxes(3), random_boxes(0), random_boxes(2)]
    codes = coder.encode(targets, proposals)
    assert [c.shape for c in codes] == [(3, 4), (0, 4), (2, 4)]
    decoded = coder.decode(segcore.functional.cat(list(codes), dim=0), proposals)
    assert decoded.shape == (5, 1, 4)
    np.testing.assert_allclose(decoded.numpy()[:, 0], np.concatenate([t.numpy() for t in targets]), atol=1e-9)


def test_decode_several_classes_per_box():
    coder = ops.BoxCoder((1, 1, 1, 1))
    proposal = _tensor([[0, 0, 4, 2]])
    codes = _tensor([[0, 0, 0, 0, 0.5, 0, 0, 0]])  # class 0: the proposal; class 1: shifted by half a width
    np.testing.assert_allclose(coder.decode(codes, [proposal]).numpy(), [[[0, 0, 4, 2], [2, 0, 6, 2]]])


def test_decode_is_differentiable():
    coder = ops.BoxCoder((10, 10, 5, 5))
    rng = np.random.default_rng(1)
    codes = segcore.tensor(rng.standard_normal((3, 8)), requires_grad=True)
    corner = rng.uniform(0, 10, (3, 2))
    boxes = segcore.tensor(np.concatenate([corner, corner + rng.uniform(1, 5, (3, 2))], 1), requires_grad=True)
    gradcheck(coder.decode_single, [codes, boxes])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"BoxCoder: weights must be four numbers \(wx, wy, ww, wh\), got \(1, 1\)"):
        ops.BoxCoder((1, 1))
    with pytest.raises(ValueError, match="weights must be non-zero"):
        ops.BoxCoder((1, 0, 1, 1))
    coder = ops.BoxCoder((1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"rel_codes must have shape \(1, 4 \* K\) for 1 boxes, got \(1, 3\)"):
        coder.decode_single(_tensor([[0, 0, 0]]), _tensor([[0, 0, 1, 1]]))
    with pytest.raises(TypeError, match="boxes must be a list of"):
        coder.decode(_tensor([[0, 0, 0, 0]]), _tensor([[0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="as many boxes per image"):
        coder.encode([_tensor([[0, 0, 1, 1]])], [_tensor(np.zeros((2, 4)))])
