"""The synthetic shapes data set: determinism, annotation consistency, variety, argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.data import SHAPE_CLASSES, shapes


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_same_seed_same_data_and_random_access_order_does_not_matter():
    first = shapes(6, (40, 48), rng=7)
    second = shapes(6, (40, 48), rng=7)
    forward = [first[i] for i in range(6)]
    backward = [second[i] for i in reversed(range(6))][::-1]
    assert all(_equal(a, b) for a, b in zip(forward, backward))
    # A generator as rng: the same generator state gives the same data set.
    g1 = shapes(3, 32, rng=np.random.default_rng(11))
    g2 = shapes(3, 32, rng=np.random.default_rng(11))
    assert all(_equal(g1[i], g2[i]) for i in range(3))


def test_different_seeds_give_different_images():
    a, b = shapes(4, 32, rng=0), shapes(4, 32, rng=1)
    assert not any(np.array_equal(a[i]["image"], b[i]["image"]) for i in range(4))


def test_sample_layout_and_annotation_consistency():
    data = shapes(40, (36, 52), num_classes=4, max_instances=5, rng=3)
    assert data.num_classes == 4 and data.class_names == SHAPE_CLASSES[:4] and len(data) == 40
    for i in range(len(data)):
        s = data[i]
        assert s["image"].shape == (36, 52, 3) and s["image"].dtype == np.uint8
        assert s["mask"].shape == (36, 52) and s["mask"].dtype == np.uint8
        r = len(s["labels"])
        assert 1 <= r <= 5
        assert s["masks"].shape == (r, 36, 52) and s["masks"].dtype == bool
        assert s["boxes"].shape == (r, 4) and s["iscrowd"].shape == (r,) and not s["iscrowd"].any()
        assert ((s["labels"] >= 1) & (s["labels"] < 4)).all()
        # Instance masks are the visible parts: disjoint, non-empty, and together they are the foreground.
        assert (s["masks"].sum(axis=0) <= 1).all()
        assert s["masks"].any(axis=(1, 2)).all()
        assert np.array_equal(s["masks"].any(axis=0), s["mask"] > 0)
        for m, label, box in zip(s["masks"], s["labels"], s["boxes"]):
            assert (s["mask"][m] == label).all()
            ys, xs = np.nonzero(m)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert s["id"] == f"shapes-{i:05d}"


def test_variety_every_class_borders_overlaps_and_texture():
    data = shapes(60, 48, num_classes=6, max_instances=4, rng=5)
    samples = [data[i] for i in range(len(data))]
    seen = set(np.concatenate([s["labels"] for s in samples]).tolist())
    assert seen == {1, 2, 3, 4, 5}
    touching = sum(
        bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()) for s in samples for m in s["masks"]
    )
    assert touching > 0
    # Overlap: some pair of instances in one image with intersecting boxes.
    overlapping = 0
    for s in samples:
        b = s["boxes"]
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                if min(b[i, 2], b[j, 2]) > max(b[i, 0], b[j, 0]) and min(b[i, 3], b[j, 3]) > max(b[i, 1], b[j, 1]):
                    overlapping += 1
    assert overlapping > 0
    # Backgrounds are textured and noisy, not flat.
    background_std = [s["image"][s["mask"] == 0].std(axis=0).mean() for s in samples if (s["mask"] == 0).sum() > 50]
    assert min(background_std) > 5.0


def test_colour_does_not_give_the_class_away():
    data = shapes(80, 32, num_classes=3, rng=2)
    means = {1: [], 2: []}
    for i in range(len(data)):
        s = data[i]
        for m, label in zip(s["masks"], s["labels"]):
            means[int(label)].append(s["image"][m].mean(axis=0))
    # Mean colours of circles and of rectangles are alike: colours are drawn independently of the class.
    gap = np.abs(np.mean(means[1], axis=0) - np.mean(means[2], axis=0))
    assert gap.max() < 40


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"n": -1}, ValueError, "n must be"),
        ({"n": 2.5}, TypeError, "n must be an int"),
        ({"n": 2, "size": 4}, ValueError, "size must be"),
        ({"n": 2, "size": (32, 32, 3)}, ValueError, "size must be"),
        ({"n": 2, "num_classes": 7}, ValueError, "num_classes must be in [2, 6], got 7"),
        ({"n": 2, "max_instances": 0}, ValueError, "max_instances must be"),
        ({"n": 2, "rng": "seed"}, TypeError, "rng must be"),
        ({"n": 2, "rng": -3}, TypeError, "rng must be"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, fragment):
    with pytest.raises(error, match=None) as info:
        shapes(**kwargs)
    assert fragment in str(info.value)


def test_index_checks():
    data = shapes(3, 16, rng=0)
    assert _equal(data[-1], data[2])
    with pytest.raises(IndexError, match="out of range for 3 samples"):
        data[3]
    with pytest.raises(TypeError, match="index must be an int"):
        data["0"]
