"""COCO run-length encoding: hand cases, round trips, and bit-for-bit agreement with pycocotools."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
from segcore.metrics import mask_rle

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _random_masks(rng, count):
    """Masks of assorted sizes and densities, including empty, full, single-row and single-column ones."""
    masks = [np.zeros((5, 7), bool), np.ones((6, 4), bool), np.zeros((1, 9), bool), np.ones((9, 1), bool)]
    for _ in range(count):
        h, w = rng.integers(1, 60, size=2)
        density = rng.uniform(0.02, 0.98)
        mask = rng.random((h, w)) < density
        if rng.random() < 0.5:  # blobby masks have long runs, whose deltas are large and negative
            mask = np.zeros((h, w), bool)
            mask[rng.integers(0, h) :, rng.integers(0, w) : rng.integers(0, w) + 30] = True
        masks.append(mask)
    return masks


# -- hand cases -------------------------------------------------------------------------------------------
def test_counts_of_hand_examples():
    # Column-major reading; counts start with a (possibly empty) run of zeros.
    mask = np.array([[0, 0, 1, 1, 1, 0, 1]], dtype=bool).T  # one column, read top to bottom
    rle = mask_rle.encode(mask)
    assert rle["size"] == [7, 1]
    assert mask_rle.counts_from_string(rle["counts"]).tolist() == [2, 3, 1, 1]
    column = np.array([[1], [1], [1], [1], [1], [1], [0]])
    assert mask_rle.counts_from_string(mask_rle.encode(column)["counts"]).tolist() == [0, 6, 1]
    # 2x2 [[1, 0], [1, 1]] read column by column: 1 1 0 1 -> runs 0, 2, 1, 1.
    assert mask_rle.counts_from_string(mask_rle.encode(np.array([[1, 0], [1, 1]]))["counts"]).tolist() == [0, 2, 1, 1]


def test_string_codec_hand_example():
    # Counts [2, 3, 1, 1]: the first three are written as they are ('2', '3', '1'); the fourth as the
    # delta 1 - 3 = -2, whose low five bits are 30 with the sign bit 0x10 set and nothing left: chr(48 + 30).
    assert mask_rle.counts_to_string([2, 3, 1, 1]) == "231N"
    # 100 = 0b11_00100 needs two groups: 4 | 0x20 (more) -> chr(48 + 36) = 'T', then 3 -> '3'.
    assert mask_rle.counts_to_string([100]) == "T3"
    assert mask_rle.counts_from_string("T3").tolist() == [100]
    assert mask_rle.counts_from_string(b"231N").tolist() == [2, 3, 1, 1]


def test_area_and_bbox_hand_example():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    mask[7, 10] = True
    rle = mask_rle.encode(mask)
    assert mask_rle.area(rle) == 19
    np.testing.assert_array_equal(mask_rle.to_bbox(rle), [3, 2, 8, 6])
    np.testing.assert_array_equal(mask_rle.to_bbox(mask_rle.encode(np.zeros((4, 4), bool))), [0, 0, 0, 0])


def test_iou_hand_example_with_crowd():
    a = np.zeros((8, 8), bool)
    a[:4, :4] = True  # 16 px
    b = np.zeros((8, 8), bool)
    b[2:6, 2:6] = True  # 16 px, 4 shared with a
    ra, rb = mask_rle.encode(a), mask_rle.encode(b)
    iou = mask_rle.mask_iou([ra], [rb, ra], iscrowd=[0, 0])
    np.testing.assert_allclose(iou, [[4 / 28, 1.0]])
    # Crowd ground truth: intersection over the detection's area.
    np.testing.assert_allclose(mask_rle.mask_iou([ra], [rb], iscrowd=[1]), [[4 / 16]])
    np.testing.assert_allclose(mask_rle.bbox_iou([[0, 0, 4, 4]], [[2, 2, 4, 4], [0, 0, 8, 8]], [0, 1]), [[4 / 28, 1.0]])


def test_uncompressed_and_compressed_forms_agree():
    rng = np.random.default_rng(1)
    for mask in _random_masks(rng, 20):
        rle = mask_rle.encode(mask)
        counts = mask_rle.counts_from_string(rle["counts"]).tolist()
        uncompressed = {"size": list(mask.shape), "counts": counts}
        np.testing.assert_array_equal(mask_rle.decode(uncompressed), mask)
        assert mask_rle.to_rle(uncompressed, *mask.shape) == rle
        assert mask_rle.to_rle({**rle, "counts": rle["counts"].encode()}, *mask.shape) == rle


def test_round_trip_and_tensor_input():
    rng = np.random.default_rng(0)
    for mask in _random_masks(rng, 40):
        rle = mask_rle.encode(mask)
        np.testing.assert_array_equal(mask_rle.decode(rle), mask)
        assert mask_rle.area(rle) == mask.sum()
    mask = rng.random((9, 11)) < 0.5
    assert mask_rle.encode(segcore.tensor(mask)) == mask_rle.encode(mask)


def test_merge_union_and_intersection():
    rng = np.random.default_rng(2)
    masks = [rng.random((13, 17)) < 0.4 for _ in range(3)]
    rles = [mask_rle.encode(m) for m in masks]
    np.testing.assert_array_equal(mask_rle.decode(mask_rle.merge(rles)), masks[0] | masks[1] | masks[2])
    np.testing.assert_array_equal(mask_rle.decode(mask_rle.merge(rles, intersect=True)), masks[0] & masks[1] & masks[2])


def test_axis_aligned_polygon_rasterises_to_covered_pixels():
    # Corners on pixel edges: exactly the pixels inside, like a box [x=2, y=1, w=4, h=3].
    mask = mask_rle.polygons_to_mask([[2, 1, 6, 1, 6, 4, 2, 4]], 8, 9)
    expected = np.zeros((8, 9), bool)
    expected[1:4, 2:6] = True
    np.testing.assert_array_equal(mask, expected)
    # Two disjoint parts are united.
    both = mask_rle.polygons_to_mask([[2, 1, 6, 1, 6, 4, 2, 4], [0, 6, 2, 6, 2, 8, 0, 8]], 8, 9)
    expected[6:8, 0:2] = True
    np.testing.assert_array_equal(both, expected)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"covers 5 pixels, expected height\*width = 2\*3 = 6"):
        mask_rle.decode({"size": [2, 3], "counts": [1, 4]})
    with pytest.raises(ValueError, match="'size' and 'counts'"):
        mask_rle.decode({"counts": "231N"})
    with pytest.raises(ValueError, match="character"):
        mask_rle.counts_from_string("23 1")
    with pytest.raises(ValueError, match="non-negative run lengths"):
        mask_rle.counts_to_string([3, -1])
    with pytest.raises(ValueError, match="ends inside a number"):
        mask_rle.counts_from_string("T")
    with pytest.raises(ValueError, match=r"mask must be 2-D"):
        mask_rle.encode(np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError, match="only 0 and 1"):
        mask_rle.encode(np.array([[0, 2]]))
    with pytest.raises(TypeError, match="dtype float64"):
        mask_rle.encode(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"polygons\[0\] must be a flat list"):
        mask_rle.polygons_to_mask([[0, 0, 1, 1]], 4, 4)
    with pytest.raises(ValueError, match="expected the image size"):
        mask_rle.to_rle(mask_rle.encode(np.zeros((2, 2), bool)), 3, 3)
    with pytest.raises(ValueError, match="iscrowd must be 1"):
        mask_rle.mask_iou([], [mask_rle.encode(np.zeros((2, 2), bool))], iscrowd=[0, 1])


# -- pycocotools as the reference -------------------------------------------------------------------------
@pytest.fixture
def coco_mask():
    return pytest.importorskip("pycocotools.mask", reason="pycocotools is the reference implementation (test extra)")


def test_encode_decode_area_bbox_match_pycocotools(coco_mask):
    rng = np.random.default_rng(3)
    for mask in _random_masks(rng, 60):
        ours = mask_rle.encode(mask)
        theirs = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ours["counts"] == theirs["counts"].decode("ascii")
        assert ours["size"] == list(theirs["size"])
        np.testing.assert_array_equal(mask_rle.decode(theirs), coco_mask.decode(theirs).astype(bool))
        assert mask_rle.area(ours) == int(coco_mask.area(theirs))
        np.testing.assert_array_equal(mask_rle.to_bbox(ours), coco_mask.toBbox(theirs))


def test_iou_and_merge_match_pycocotools(coco_mask):
    rng = np.random.default_rng(4)
    h, w = 31, 27
    masks = []
    for _ in range(14):
        mask = np.zeros((h, w), bool)
        y, x = rng.integers(0, h), rng.integers(0, w)
        mask[y : y + rng.integers(1, 15), x : x + rng.integers(1, 15)] = True
        mask &= rng.random((h, w)) < 0.9
        masks.append(mask)
    masks.append(np.zeros((h, w), bool))
    rles = [mask_rle.encode(m) for m in masks]
    dt, gt = rles[:8], rles[8:]
    crowd = [0, 1, 0, 0, 1, 0, 0]
    np.testing.assert_array_equal(mask_rle.mask_iou(dt, gt, crowd), coco_mask.iou(dt, gt, crowd))
    boxes_dt = rng.uniform(0, 20, (9, 4))
    boxes_gt = rng.uniform(0, 20, (6, 4))
    np.testing.assert_array_equal(
        mask_rle.bbox_iou(boxes_dt, boxes_gt, [1, 0, 0, 1, 0, 0]), coco_mask.iou(boxes_dt, boxes_gt, [1, 0, 0, 1, 0, 0])
    )
    for intersect in (False, True):
        assert mask_rle.merge(rles[:5], intersect)["counts"] == coco_mask.merge(rles[:5], intersect)["counts"].decode()


def test_polygons_match_pycocotools_exactly(coco_mask):
    """Random polygons (crossing the border, self-intersecting, on the half-pixel grid, with repeated
    vertices, multi-part) rasterise to the same RLE as pycocotools' frPyObjects + merge."""
    rng = np.random.default_rng(5)
    for trial in range(400):
        h, w = (int(v) for v in rng.integers(1, 48, size=2))
        k = int(rng.integers(3, 12))
        if trial % 3 == 0:
            xy = rng.uniform(-5, max(h, w) + 5, 2 * k)
        elif trial % 3 == 1:
            xy = np.round(rng.uniform(-2, max(h, w) + 2, 2 * k) * 2) / 2
        else:
            xy = rng.integers(-1, max(h, w) + 1, 2 * k).astype(float)  # many repeated/collinear points
        polygons = [xy.tolist()]
        if trial % 4 == 0:
            polygons.append(rng.uniform(0, max(h, w), 2 * int(rng.integers(3, 6))).tolist())
        expected = coco_mask.merge(coco_mask.frPyObjects(polygons, h, w))
        ours = mask_rle.to_rle(polygons, h, w)
        assert ours["counts"] == expected["counts"].decode(), (h, w, polygons)
