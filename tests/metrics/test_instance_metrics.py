"""Symmetric best Dice and difference in count (CVPPP): hand examples, empty cases, loop reference."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
from segcore.metrics import best_dice, difference_in_count, symmetric_best_dice

GT = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]])
# Instances 5 (3 px inside gt 1), 9 (1 px inside gt 1), 7 (3 px inside gt 2): labels need not be consecutive.
PRED = np.array([[5, 5, 0, 0], [5, 9, 0, 0], [0, 0, 7, 7], [0, 0, 7, 0]])


def test_hand_computed_best_dice():
    # Dice(5, 1) = 2*3/(3+4) = 6/7, Dice(9, 1) = 2*1/(1+4) = 2/5, Dice(7, 2) = 6/7, every other pair 0.
    assert best_dice(PRED, GT) == pytest.approx((6 / 7 + 2 / 5 + 6 / 7) / 3)
    assert best_dice(GT, PRED) == pytest.approx((6 / 7 + 6 / 7) / 2)
    assert symmetric_best_dice(PRED, GT) == pytest.approx((6 / 7 + 2 / 5 + 6 / 7) / 3)
    assert symmetric_best_dice(GT, PRED) == symmetric_best_dice(PRED, GT)
    assert symmetric_best_dice(GT, GT) == 1.0
    # Relabelling instances changes nothing.
    assert symmetric_best_dice(np.where(PRED > 0, 100 - PRED, 0), GT) == pytest.approx(symmetric_best_dice(PRED, GT))


def test_hand_computed_difference_in_count():
    assert difference_in_count(PRED, GT) == 1
    assert difference_in_count(PRED, GT, signed=True) == 1  # one instance too many
    assert difference_in_count(GT, PRED, signed=True) == -1
    assert difference_in_count(GT, PRED) == 1
    assert difference_in_count(GT, GT, signed=True) == 0


def test_empty_cases():
    empty = np.zeros_like(GT)
    assert symmetric_best_dice(empty, empty) == 1.0  # nothing to find and nothing found
    assert symmetric_best_dice(empty, GT) == 0.0
    assert symmetric_best_dice(GT, empty) == 0.0
    assert best_dice(empty, empty) == 1.0 and best_dice(empty, GT) == 0.0 and best_dice(GT, empty) == 0.0
    assert difference_in_count(empty, GT, signed=True) == -2
    assert difference_in_count(empty, GT) == 2
    assert difference_in_count(empty, empty) == 0


def _loop_best_dice(a, b):
    labels_a = [v for v in np.unique(a) if v != 0]
    labels_b = [v for v in np.unique(b) if v != 0]
    total = 0.0
    for i in labels_a:
        best = 0.0
        for j in labels_b:
            ma, mb = a == i, b == j
            best = max(best, 2 * np.sum(ma & mb) / (ma.sum() + mb.sum()))
        total += best
    return total / len(labels_a)


@pytest.mark.parametrize("seed", range(3))
def test_matches_loop_reference_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 6, size=(24, 30))
    # A noisy, relabelled copy of the ground truth with a few merged and split instances.
    pred = np.where(rng.random(gt.shape) < 0.2, rng.integers(0, 9, size=gt.shape), gt * 3)
    expected = min(_loop_best_dice(pred, gt), _loop_best_dice(gt, pred))
    assert symmetric_best_dice(pred, gt) == pytest.approx(expected)
    assert best_dice(pred, gt) == pytest.approx(_loop_best_dice(pred, gt))
    assert difference_in_count(pred, gt, signed=True) == len(set(pred.ravel()) - {0}) - len(set(gt.ravel()) - {0})


def test_accepts_segcore_tensors():
    assert symmetric_best_dice(segcore.tensor(PRED), segcore.tensor(GT)) == pytest.approx(symmetric_best_dice(PRED, GT))
    assert difference_in_count(segcore.tensor(PRED), GT, signed=True) == 1


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"same shape, got \(4, 4\) and \(4, 3\)"):
        symmetric_best_dice(PRED, GT[:, :3])
    with pytest.raises(ValueError, match=r"pred must be a 2-D \(H, W\) label map, got shape \(1, 4, 4\)"):
        difference_in_count(PRED[None], GT[None])
    with pytest.raises(TypeError, match="gt_instances must hold integer labels"):
        symmetric_best_dice(PRED, GT.astype(np.float32))
