"""segcore.ops.LevelMapper / MultiScaleRoIAlign: FPN level assignment by hand, scale inference, and pooling
from the assigned level against the per-sample RoIAlign loop (``ref`` fixture)."""

import numpy as np
import pytest

import segcore
import segcore.ops as ops


def _boxes(sides, dtype=np.float32):
    """Square boxes of the given sides, at the origin."""
    sides = np.asarray(sides, dtype=np.float64)
    return segcore.tensor(np.stack([0 * sides, 0 * sides, sides, sides], axis=1).astype(dtype))


def test_level_mapper_by_hand():
    mapper = ops.LevelMapper(2, 5)
    # floor(4 + log2(side / 224) + 1e-6), clamped to [2, 5], minus k_min = 2.
    sides = [224, 223, 112, 111.9, 448, 447, 56, 10, 1000, 0]
    levels = [4, 3, 3, 2, 5, 4, 2, 2, 5, 2]
    np.testing.assert_array_equal(mapper([_boxes(sides)]).numpy(), np.array(levels) - 2)


def test_level_mapper_eps_and_canonical_settings():
    # sqrt(area) slightly below 224 (within 1e-6 relative): without eps this would be level 3.
    side = 224 * (1 - 2e-7)
    assert ops.LevelMapper(2, 5)([_boxes([side], np.float64)]).item() == 4 - 2
    assert ops.LevelMapper(2, 5, eps=0.0)([_boxes([side], np.float64)]).item() == 3 - 2
    # canonical_scale=100, canonical_level=3: a 200-pixel box is one level up.
    assert ops.LevelMapper(1, 6, canonical_scale=100, canonical_level=3)([_boxes([200])]).item() == 4 - 1
    # Several images: one concatenated result.
    assert ops.LevelMapper(2, 5)([_boxes([224]), _boxes([]), _boxes([56, 448])]).numpy().tolist() == [2, 0, 3]


def test_infer_scale():
    assert ops.infer_scale((64, 64), (512, 512)) == 0.125
    assert ops.infer_scale((50, 50), (800, 800)) == 1 / 16
    assert ops.infer_scale((34, 50), (800, 800)) == 1 / 32  # log2(34/800) = -4.56 rounds to -5
    assert ops.infer_scale((36, 50), (800, 800)) == 1 / 16  # log2(36/800) = -4.47 rounds to -4


def test_multi_scale_pools_each_box_from_its_level(ref):
    rng = np.random.default_rng(0)
    image = (256, 256)
    features = {
        "p2": rng.standard_normal((2, 3, 64, 64)).astype(np.float32),
        "p3": rng.standard_normal((2, 3, 32, 32)).astype(np.float32),
        "p4": rng.standard_normal((2, 3, 16, 16)).astype(np.float32),
        "pool": rng.standard_normal((2, 3, 8, 8)).astype(np.float32),  # not named below: never used
    }
    boxes = [
        np.array([[10, 20, 40, 50], [0, 0, 250, 250], [30, 30, 30 + 150, 30 + 170]], dtype=np.float32),
        np.array([[100, 100, 120, 110], [5, 5, 230, 120]], dtype=np.float32),
    ]
    pooler = ops.MultiScaleRoIAlign(["p2", "p3", "p4"], (3, 2), 2)
    maps = {k: segcore.tensor(v) for k, v in features.items()}
    out = pooler(maps, [segcore.tensor(b) for b in boxes], [image, (250, 240)])
    assert pooler.scales == [0.25, 0.125, 0.0625]
    assert out.shape == (5, 3, 3, 2)
    # Independent level choice (levels 2..4 -> indices 0..2) and pooling with the loop reference.
    names, scales = ["p2", "p3", "p4"], [0.25, 0.125, 0.0625]
    for row, (image_index, box) in enumerate((i, b) for i, bs in enumerate(boxes) for b in bs):
        side = np.sqrt((box[2] - box[0]) * (box[3] - box[1]))
        level = int(np.clip(np.floor(4 + np.log2(side / 224) + 1e-6), 2, 4)) - 2
        roi = np.concatenate([[image_index], box]).astype(np.float32)[None]
        expected = ref.roi_align(features[names[level]], roi, scales[level], (3, 2), 2, False)
        np.testing.assert_allclose(out.numpy()[row : row + 1], expected, rtol=0, atol=2e-6)


def test_multi_scale_single_level_and_gradients():
    features = {"p3": segcore.tensor(np.ones((1, 2, 16, 16), np.float32), requires_grad=True)}
    pooler = ops.MultiScaleRoIAlign(["p3"], 2, 2)
    out = pooler(features, [segcore.tensor(np.array([[8, 8, 40, 40], [16, 0, 48, 64]], np.float32))], [(128, 128)])
    assert pooler.scales == [0.125]
    np.testing.assert_allclose(out.numpy(), np.ones((2, 2, 2, 2)))
    out.sum().backward()
    # Every sample is inside the map, so each of the 2 x 2 x 2 x 2 outputs spreads a total weight of 1.
    assert features["p3"].grad.numpy().sum() == pytest.approx(16.0)


def test_multi_scale_gradients_reach_every_level():
    maps = {"a": np.ones((1, 1, 32, 32)), "b": 2 * np.ones((1, 1, 16, 16))}
    features = {k: segcore.tensor(v, requires_grad=True) for k, v in maps.items()}
    pooler = ops.MultiScaleRoIAlign(["a", "b"], 1, 1, canonical_scale=32, canonical_level=3)
    # Level rule with canonical (32, 3) on levels 2..3: a 16-pixel box -> 2 ("a"), a 64-pixel box -> 3 ("b").
    boxes = [segcore.tensor(np.array([[0, 0, 16, 16], [0, 0, 64, 64], [0, 0, 15, 15]], dtype=np.float64))]
    out = pooler(features, boxes, [(128, 128)])
    np.testing.assert_allclose(out.numpy().ravel(), [1.0, 2.0, 1.0])
    out.sum().backward()
    assert features["a"].grad.numpy().sum() == pytest.approx(2.0)
    assert features["b"].grad.numpy().sum() == pytest.approx(1.0)


def test_multi_scale_with_a_skipped_level_follows_torchvision():
    # Maps at scales 1/4 and 1/16 span levels 2..4, so the mapper returns indices 0..2, and torchvision pairs
    # index i with the i-th map given: index 1 (level 3) pools from the 1/16 map, index 2 (level 4) from
    # nothing and stays zero.
    features = {"a": segcore.tensor(np.ones((1, 1, 64, 64))), "c": segcore.tensor(3 * np.ones((1, 1, 16, 16)))}
    pooler = ops.MultiScaleRoIAlign(["a", "c"], 1, 1)
    boxes = [segcore.tensor(np.array([[0, 0, 56, 56], [0, 0, 112, 112], [0, 0, 224, 224]], dtype=np.float64))]
    out = pooler(features, boxes, [(256, 256)])
    assert pooler.scales == [0.25, 0.0625]
    np.testing.assert_array_equal(out.numpy().ravel(), [1.0, 3.0, 0.0])


def test_multi_scale_errors():
    pooler = ops.MultiScaleRoIAlign(["p2"], 7, 2)
    with pytest.raises(ValueError, match=r"none of featmap_names \['p2'\] is a key of x \(keys: \['p3'\]\)"):
        pooler({"p3": segcore.tensor(np.ones((1, 1, 4, 4), np.float32))}, [_boxes([4])], [(16, 16)])
    with pytest.raises(ValueError, match="image_shapes must list the"):
        pooler({"p2": segcore.tensor(np.ones((1, 1, 4, 4), np.float32))}, [_boxes([4])], [])
    with pytest.raises(TypeError, match="featmap_names must be a non-empty list of str"):
        ops.MultiScaleRoIAlign("p2", 7, 2)
    with pytest.raises(ValueError, match="LevelMapper: k_max must be >= k_min"):
        ops.LevelMapper(5, 2)
