"""segcore.ops box utilities: NMS against torchvision's CPU loop (``ref`` fixture), IoU / area / conversions
by hand, gradients through the differentiable ones, edge cases and errors."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
import segcore.ops as ops
from segcore.testing import gradcheck


def _tensor(a, dtype=np.float32, **kw):
    return segcore.tensor(np.asarray(a, dtype=dtype), **kw)


@st.composite
def box_sets(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(0, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    corner = rng.uniform(0, 20, (n, 2))
    size = rng.uniform(0, 10, (n, 2))
    if draw(st.booleans()):  # integer boxes: exact IoU ties and zero-area boxes
        corner, size = np.round(corner), np.round(size)
    boxes = np.concatenate([corner, corner + size], axis=1).astype(dtype)
    if draw(st.booleans()):
        scores = rng.choice([0.1, 0.5, 0.9], n)  # many equal scores: order must stay stable by index
    else:
        scores = rng.random(n)
    threshold = draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
    return boxes, scores.astype(dtype), threshold, rng.integers(0, 3, n)


@given(box_sets())
def test_nms_matches_the_greedy_loop(ref, case):
    boxes, scores, threshold, _ = case
    keep = ops.nms(_tensor(boxes, boxes.dtype), _tensor(scores, scores.dtype), threshold)
    assert keep.dtype == np.int64
    np.testing.assert_array_equal(keep.numpy(), ref.nms(boxes, scores, threshold))


@given(box_sets())
def test_batched_nms_is_nms_per_category(ref, case):
    boxes, scores, threshold, idxs = case
    keep = ops.batched_nms(_tensor(boxes, boxes.dtype), _tensor(scores, scores.dtype), segcore.tensor(idxs), threshold)
    # Independent computation: NMS inside each category, then all survivors by decreasing score (stable).
    survivors = []
    for category in np.unique(idxs):
        members = np.flatnonzero(idxs == category)
        survivors.extend(members[ref.nms(boxes[members], scores[members], threshold)].tolist())
    expected = sorted(survivors, key=lambda i: (-float(scores[i]), i))
    np.testing.assert_array_equal(keep.numpy(), expected)


def test_nms_by_hand():
    boxes = _tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    scores = _tensor([0.9, 0.8, 0.7, 0.95])
    # IoU(0, 1) = 90 / 110 = 0.818...; IoU(3, 0) = 1; box 2 overlaps nothing.
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.5).numpy(), [3, 2])
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.82).numpy(), [3, 1, 2])  # 0.818 is not > 0.82
    np.testing.assert_array_equal(ops.nms(boxes, scores, 1.0).numpy(), [3, 0, 1, 2])  # nothing has IoU > 1


def test_nms_ties_keep_index_order():
    boxes = _tensor([[0, 0, 4, 4], [0, 0, 4, 4], [10, 10, 12, 12], [0, 0, 4, 4]])
    scores = _tensor([0.5, 0.5, 0.5, 0.5])
    # Equal scores: visited 0, 1, 2, 3; box 0 suppresses its duplicates 1 and 3.
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.5).numpy(), [0, 2])


def test_nms_degenerate_boxes_never_suppress():
    # Two zero-area boxes at the same point: IoU = 0 / 0 = nan, which is not > threshold, as torchvision.
    boxes = _tensor([[1, 1, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(ops.nms(boxes, _tensor([0.9, 0.8]), 0.0).numpy(), [0, 1])


def test_empty_inputs():
    empty_boxes, empty_scores = _tensor(np.zeros((0, 4))), _tensor(np.zeros(0))
    for keep in (
        ops.nms(empty_boxes, empty_scores, 0.5),
        ops.batched_nms(empty_boxes, empty_scores, segcore.tensor(np.zeros(0, np.int64)), 0.5),
        ops.remove_small_boxes(empty_boxes, 1.0),
    ):
        assert keep.shape == (0,) and keep.dtype == np.int64
    assert ops.box_iou(empty_boxes, _tensor([[0, 0, 1, 1]])).shape == (0, 1)
    assert ops.box_area(empty_boxes).shape == (0,)
    assert ops.masks_to_boxes(segcore.tensor(np.zeros((0, 5, 5), np.uint8))).shape == (0, 4)


def test_batched_nms_keeps_overlapping_boxes_of_other_categories():
    boxes = _tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = _tensor([0.7, 0.9, 0.8])
    idxs = segcore.tensor(np.array([0, 1, 0]))
    np.testing.assert_array_equal(ops.batched_nms(boxes, scores, idxs, 0.5).numpy(), [1, 2])


def test_box_iou_and_area_by_hand():
    a = _tensor([[0, 0, 2, 2], [0, 0, 1, 1], [5, 5, 5, 5]])
    b = _tensor([[1, 1, 3, 3], [0, 0, 2, 2]])
    np.testing.assert_allclose(ops.box_area(a).numpy(), [4, 1, 0])
    iou = ops.box_iou(a, b).numpy()
    # [0,0,2,2] vs [1,1,3,3]: inter 1, union 4 + 4 - 1 = 7. [0,0,1,1] vs [0,0,2,2]: 1 / 4. Zero-area box: 0.
    np.testing.assert_allclose(iou, [[1 / 7, 1], [0, 1 / 4], [0, 0]], rtol=1e-6)
    # Two zero-area boxes: 0 / 0.
    assert math.isnan(ops.box_iou(_tensor([[1, 1, 1, 1]]), _tensor([[1, 1, 1, 1]])).item())
    # Integer boxes: integer area, float32 IoU (torch's true division).
    ints = segcore.tensor(np.array([[0, 0, 2, 3]], dtype=np.int64))
    assert ops.box_area(ints).dtype == np.int64 and ops.box_area(ints).item() == 6
    assert ops.box_iou(ints, ints).dtype == np.float32


def test_box_iou_and_box_convert_are_differentiable():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 5, (3, 2))
    a = segcore.tensor(np.concatenate([corner, corner + rng.uniform(2, 4, (3, 2))], 1), requires_grad=True)
    corner = rng.uniform(1, 4, (2, 2))
    b = segcore.tensor(np.concatenate([corner, corner + rng.uniform(2, 4, (2, 2))], 1), requires_grad=True)
    gradcheck(ops.box_iou, [a, b])
    gradcheck(lambda t: ops.box_convert(t, "cxcywh", "xywh"), [a])


def test_box_convert_by_hand_and_round_trip():
    xyxy = _tensor([[1, 2, 5, 8], [0, 0, 0, 0]])
    expected = {
        "xyxy": [[1, 2, 5, 8], [0, 0, 0, 0]],
        "xywh": [[1, 2, 4, 6], [0, 0, 0, 0]],
        "cxcywh": [[3, 5, 4, 6], [0, 0, 0, 0]],
    }
    for fmt, values in expected.items():
        np.testing.assert_allclose(ops.box_convert(xyxy, "xyxy", fmt).numpy(), values)
        for other, other_values in expected.items():
            np.testing.assert_allclose(ops.box_convert(_tensor(values), fmt, other).numpy(), other_values)
    same = ops.box_convert(xyxy, "xyxy", "xyxy")
    assert same is not xyxy and not np.shares_memory(same.data, xyxy.data)
    batched = ops.box_convert(_tensor(np.tile([1, 2, 5, 8], (2, 3, 1))), "xyxy", "xywh")
    assert batched.shape == (2, 3, 4) and np.all(batched.numpy() == [1, 2, 4, 6])
    with pytest.raises(ValueError, match=r"box_convert: out_fmt must be one of 'xyxy', 'xywh', 'cxcywh', got 'xyxyr'"):
        ops.box_convert(xyxy, "xyxy", "xyxyr")


def test_clip_and_remove_small_boxes_by_hand():
    boxes = _tensor([[-5, -1, 3, 20], [2, 3, 4, 4.5], [10, 10, 12, 15]])
    np.testing.assert_allclose(
        ops.clip_boxes_to_image(boxes, (8, 11)).numpy(), [[0, 0, 3, 8], [2, 3, 4, 4.5], [10, 8, 11, 8]]
    )
    # Sides: (8, 21), (2, 1.5), (2, 5): both sides >= 2 for boxes 0 and 2 only.
    np.testing.assert_array_equal(ops.remove_small_boxes(boxes, 2.0).numpy(), [0, 2])
    np.testing.assert_array_equal(ops.remove_small_boxes(boxes, 1.5).numpy(), [0, 1, 2])
    nested = ops.clip_boxes_to_image(_tensor(np.full((2, 1, 4), -3.0)), (5, 5))
    assert nested.shape == (2, 1, 4) and not np.any(nested.numpy())


def test_masks_to_boxes_by_hand():
    masks = np.zeros((2, 5, 6), dtype=np.uint8)
    masks[0, 1:3, 2:5] = 1
    masks[1, 4, 0] = 1
    masks[1, 0, 5] = 1
    boxes = ops.masks_to_boxes(segcore.tensor(masks))
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes.numpy(), [[2, 1, 4, 2], [0, 0, 5, 4]])
    masks[1] = 0
    with pytest.raises(ValueError, match=r"masks\[1\] has no non-zero pixel"):
        ops.masks_to_boxes(segcore.tensor(masks))


def test_bad_arguments_raise():
    boxes, scores = _tensor([[0, 0, 1, 1]]), _tensor([0.5])
    with pytest.raises(ValueError, match=r"nms: scores must have shape \(1,\) like boxes' first dimension, got \(2,\)"):
        ops.nms(boxes, _tensor([0.5, 0.4]), 0.5)
    with pytest.raises(TypeError, match=r"nms: scores must have the dtype of boxes \(float32\), got float64"):
        ops.nms(boxes, _tensor([0.5], np.float64), 0.5)
    with pytest.raises(ValueError, match=r"nms: boxes must have shape \(L, 4\), got \(1, 5\)"):
        ops.nms(_tensor([[0, 0, 0, 1, 1]]), scores, 0.5)
    with pytest.raises(TypeError, match="nms: iou_threshold must be a real number, got '0.5'"):
        ops.nms(boxes, scores, "0.5")
    with pytest.raises(TypeError, match="batched_nms: idxs must be an integer tensor of .*, got dtype float32"):
        ops.batched_nms(boxes, scores, _tensor([0.0]), 0.5)
    with pytest.raises(ValueError, match=r"clip_boxes_to_image: size must be \(height, width\), got 5"):
        ops.clip_boxes_to_image(boxes, 5)
    with pytest.raises(ValueError, match=r"masks_to_boxes: masks must be 3-D \(N, H, W\), got shape \(5, 5\)"):
        ops.masks_to_boxes(segcore.tensor(np.ones((5, 5), np.uint8)))
