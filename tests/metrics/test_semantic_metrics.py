"""Semantic segmentation metrics: hand example, absent-class policy, accumulation, ignore_index, loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

import segcore
from segcore.metrics import SemanticMetric, semantic

# 3x3 example. (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,1) (2,2) (2,0) (2,2), last pixel ignored.
TARGET = np.array([[0, 0, 1], [1, 2, 2], [2, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 1, 2], [0, 2, 1]])


def test_hand_computed_3x3():
    r = semantic(PRED, TARGET, num_classes=3)
    np.testing.assert_array_equal(r.confusion_matrix, [[1, 1, 0], [0, 2, 0], [1, 1, 2]])
    # gt counts 2, 2, 4; pred counts 2, 4, 2; true positives 1, 2, 2 over 8 valid pixels.
    np.testing.assert_allclose(r.iou, [1 / 3, 2 / 4, 2 / 4])
    assert r.miou == pytest.approx(4 / 9)
    assert r.pixel_accuracy == pytest.approx(5 / 8)
    np.testing.assert_allclose(r.class_accuracy, [1 / 2, 1, 2 / 4])
    assert r.mean_class_accuracy == pytest.approx(2 / 3)
    assert r.fwiou == pytest.approx(2 / 8 * 1 / 3 + 2 / 8 * 1 / 2 + 4 / 8 * 1 / 2)
    np.testing.assert_allclose(r.dice, [2 / 4, 4 / 6, 4 / 6])
    assert r.mean_dice == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)


def test_class_absent_from_both_is_nan_and_excluded_from_means():
    three = semantic(PRED, TARGET, num_classes=3)
    five = semantic(PRED, TARGET, num_classes=5)  # classes 3 and 4 appear nowhere
    assert np.isnan(five.iou[3:]).all() and np.isnan(five.dice[3:]).all() and np.isnan(five.class_accuracy[3:]).all()
    assert five.miou == pytest.approx(three.miou)
    assert five.mean_dice == pytest.approx(three.mean_dice)
    assert five.mean_class_accuracy == pytest.approx(three.mean_class_accuracy)
    assert five.fwiou == pytest.approx(three.fwiou)


def test_class_predicted_but_absent_from_ground_truth():
    pred = PRED.copy()
    pred[0, 1] = 3  # a gt-0 pixel predicted as class 3, which is not in the ground truth
    r = semantic(pred, TARGET, num_classes=4)
    assert r.iou[3] == 0.0 and r.dice[3] == 0.0
    assert np.isnan(r.class_accuracy[3])
    # Class 1 loses a false positive (pred count 4 -> 3): IoU 2/3; classes 0 and 2 are unchanged.
    # IoU 0 counts in the mean; class accuracy NaN does not.
    np.testing.assert_allclose(r.iou, [1 / 3, 2 / 3, 1 / 2, 0])
    assert r.miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2 + 0) / 4)
    assert r.mean_class_accuracy == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)


def test_all_pixels_ignored_gives_nan_everywhere():
    r = semantic(PRED, np.full_like(TARGET, 255), num_classes=3)
    assert r.confusion_matrix.sum() == 0
    for value in (r.miou, r.pixel_accuracy, r.mean_class_accuracy, r.fwiou, r.mean_dice):
        assert math.isnan(value)


def test_ignored_pixels_are_excluded_whatever_their_prediction():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=(5, 20, 20))
    pred = rng.integers(0, 4, size=(5, 20, 20))
    ignored = rng.random(target.shape) < 0.3
    full = semantic(pred, np.where(ignored, 255, target), num_classes=4)
    kept = semantic(pred[~ignored], target[~ignored], num_classes=4)
    np.testing.assert_array_equal(full.confusion_matrix, kept.confusion_matrix)
    other = semantic(np.where(ignored, (pred + 1) % 4, pred), np.where(ignored, 255, target), num_classes=4)
    np.testing.assert_array_equal(full.confusion_matrix, other.confusion_matrix)
    # A different ignore value works the same way, negative included.
    negative = semantic(pred, np.where(ignored, -1, target), num_classes=4, ignore_index=-1)
    np.testing.assert_array_equal(full.confusion_matrix, negative.confusion_matrix)


def _loop_reference(pred, target, num_classes, ignore_index):
    """Per-class computation with boolean masks, written independently of the confusion matrix."""
    valid = target != ignore_index
    iou, dice, acc, freq = [], [], [], []
    for c in range(num_classes):
        p = (pred == c) & valid
        g = (target == c) & valid
        inter, union = np.sum(p & g), np.sum(p | g)
        iou.append(inter / union if union else np.nan)
        dice.append(2 * inter / (p.sum() + g.sum()) if union else np.nan)
        acc.append(inter / g.sum() if g.sum() else np.nan)
        freq.append(g.sum() / valid.sum())
    correct = np.sum((pred == target) & valid) / valid.sum()
    fw = sum(f * i for f, i in zip(freq, iou) if f > 0)
    return np.array(iou), np.array(dice), np.array(acc), correct, fw


@pytest.mark.parametrize("seed", range(4))
def test_matches_per_class_loop_on_random_data(seed):
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 8))
    shape = (int(rng.integers(1, 4)), int(rng.integers(5, 30)), int(rng.integers(5, 30)))
    # Skewed class probabilities so that some classes are rare or absent.
    probs = rng.dirichlet(np.full(num_classes, 0.5))
    target = rng.choice(num_classes, size=shape, p=probs)
    pred = np.where(rng.random(shape) < 0.6, target, rng.choice(num_classes, size=shape, p=probs))
    target[rng.random(shape) < 0.1] = 255
    r = semantic(pred, target, num_classes)
    iou, dice, acc, pixel_acc, fw = _loop_reference(pred, target, num_classes, 255)
    np.testing.assert_allclose(r.iou, iou)
    np.testing.assert_allclose(r.dice, dice)
    np.testing.assert_allclose(r.class_accuracy, acc)
    assert r.miou == pytest.approx(np.nanmean(iou))
    assert r.mean_dice == pytest.approx(np.nanmean(dice))
    assert r.mean_class_accuracy == pytest.approx(np.nanmean(acc))
    assert r.pixel_accuracy == pytest.approx(pixel_acc)
    assert r.fwiou == pytest.approx(fw)


def test_accumulated_metric_equals_one_shot():
    rng = np.random.default_rng(7)
    batches = []
    for _ in range(4):
        h, w = rng.integers(3, 15, size=2)
        target = rng.integers(0, 5, size=(2, h, w))
        target[rng.random(target.shape) < 0.2] = 255
        batches.append((rng.integers(0, 5, size=(2, h, w)), target))
    metric = SemanticMetric(num_classes=5)
    for pred, target in batches:
        metric.update(pred, target)
    accumulated = metric.compute()
    one_shot = semantic(
        np.concatenate([p.ravel() for p, _ in batches]), np.concatenate([t.ravel() for _, t in batches]), 5
    )
    np.testing.assert_array_equal(accumulated.confusion_matrix, one_shot.confusion_matrix)
    np.testing.assert_array_equal(accumulated.iou, one_shot.iou)
    assert accumulated.miou == one_shot.miou and accumulated.fwiou == one_shot.fwiou
    # compute() does not hand out the live matrix; reset() starts over.
    accumulated.confusion_matrix[0, 0] += 1000
    assert metric.compute().confusion_matrix[0, 0] == one_shot.confusion_matrix[0, 0]
    metric.reset()
    metric.update(*batches[0])
    np.testing.assert_array_equal(metric.compute().confusion_matrix, semantic(*batches[0], 5).confusion_matrix)


def test_accepts_segcore_tensors():
    r = semantic(segcore.tensor(PRED), segcore.tensor(TARGET), num_classes=3)
    assert r.miou == pytest.approx(4 / 9)


def test_bad_inputs_raise_with_details():
    with pytest.raises(ValueError, match=r"same shape, got pred \(3, 3\) and target \(3, 2\)"):
        semantic(PRED, TARGET[:, :2], num_classes=3)
    with pytest.raises(ValueError, match=r"target holds label 7, expected labels in \[0, 3\) or ignore_index=255"):
        semantic(PRED, np.where(TARGET == 1, 7, TARGET), num_classes=3)
    with pytest.raises(ValueError, match=r"pred holds label 3, expected labels in \[0, 3\)"):
        semantic(np.where(PRED == 2, 3, PRED), TARGET, num_classes=3)
    with pytest.raises(ValueError, match=r"pred holds label -1"):
        semantic(PRED - 1, TARGET, num_classes=3)
    with pytest.raises(TypeError, match="pred must hold integer labels, got dtype float64"):
        semantic(PRED.astype(float), TARGET, num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        SemanticMetric(0)
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        semantic(PRED, TARGET, num_classes=3, ignore_index=2.5)
