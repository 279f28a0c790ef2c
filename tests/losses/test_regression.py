"""l1_loss, mse_loss, smooth_l1_loss (torch's definitions) and the Fast R-CNN detection_loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
import segcore.functional as F
from segcore.losses import DetectionLoss, L1Loss, MSELoss, SmoothL1Loss, detection_loss
from segcore.testing import gradcheck


def _t(a, requires_grad=False):
    return segcore.tensor(a, requires_grad=requires_grad)


def ref_smooth_l1(d, beta):
    if beta == 0:
        return np.abs(d)
    return np.where(np.abs(d) < beta, 0.5 * d**2 / beta, np.abs(d) - 0.5 * beta)


def _reduce(loss, reduction):
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def test_regression_losses_by_hand():
    x = _t([0.5, -2.0, 3.0], requires_grad=True)
    y = _t([0.0, 0.0, 3.0])
    np.testing.assert_allclose(F.l1_loss(x, y).item(), 2.5 / 3, rtol=1e-6)
    np.testing.assert_allclose(F.mse_loss(x, y, reduction="sum").item(), 4.25, rtol=1e-6)
    # beta = 1: 0.5 * 0.25 (quadratic part), 2 - 0.5 (linear part), 0.
    loss = F.smooth_l1_loss(x, y, reduction="none")
    np.testing.assert_allclose(loss.numpy(), [0.125, 1.5, 0.0], rtol=1e-6)
    loss.sum().backward()
    # d/dx: d / beta inside, sign(d) outside, 0 at d = 0.
    np.testing.assert_allclose(x.grad.numpy(), [0.5, -1.0, 0.0], rtol=1e-6)
    # beta = 0 is the L1 loss, as in torch.
    np.testing.assert_allclose(F.smooth_l1_loss(x, y, beta=0.0, reduction="sum").item(), 2.5, rtol=1e-6)


@given(
    shape=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    beta=st.sampled_from([0.0, 1.0 / 9.0, 0.5, 2.0]),
    reduction=st.sampled_from(["none", "mean", "sum"]),
    seed=st.integers(0, 2**16),
)
def test_regression_losses_match_numpy(shape, beta, reduction, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=shape), rng.normal(size=shape)
    d = x - y
    np.testing.assert_allclose(F.l1_loss(_t(x), _t(y), reduction).numpy(), _reduce(np.abs(d), reduction), rtol=1e-12)
    np.testing.assert_allclose(F.mse_loss(_t(x), _t(y), reduction).numpy(), _reduce(d**2, reduction), rtol=1e-12)
    out = F.smooth_l1_loss(_t(x), _t(y), reduction, beta=beta)
    np.testing.assert_allclose(out.numpy(), _reduce(ref_smooth_l1(d, beta), reduction), rtol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_regression_gradcheck(beta, reduction):
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    assert np.min(np.abs(np.abs(x - y) - beta)) > 1e-3 and np.min(np.abs(x - y)) > 1e-3  # away from the kinks
    for loss in (F.l1_loss, F.mse_loss, lambda a, b, r: F.smooth_l1_loss(a, b, r, beta=beta)):
        gradcheck(lambda a, b: loss(a, b, reduction), [_t(x, requires_grad=True), _t(y, requires_grad=True)])


def test_regression_edge_cases_and_errors():
    empty = _t(np.zeros((0, 4), dtype=np.float32), requires_grad=True)
    assert F.mse_loss(empty, _t(np.zeros((0, 4), dtype=np.float32))).item() == 0.0  # torch: NaN
    big = _t(np.array([1e4, -1e4], dtype=np.float32), requires_grad=True)
    loss = F.smooth_l1_loss(big, _t(np.zeros(2, dtype=np.float32)))
    np.testing.assert_allclose(loss.item(), 1e4 - 0.5, rtol=1e-6)
    loss.backward()
    np.testing.assert_allclose(big.grad.numpy(), [0.5, -0.5])
    x = _t(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="target shape \\(3,\\) must equal the input shape \\(2, 3\\)"):
        F.l1_loss(x, _t(np.zeros(3, dtype=np.float32)))
    with pytest.raises(ValueError, match="beta must be a finite number >= 0.0, got -1"):
        F.smooth_l1_loss(x, x, beta=-1)
    with pytest.raises(ValueError, match="SmoothL1Loss: beta"):
        SmoothL1Loss(beta=float("inf"))
    np.testing.assert_allclose(L1Loss(reduction="sum")(_t([1.0, -2.0]), _t([0.0, 0.0])).item(), 3.0)
    np.testing.assert_allclose(MSELoss()(_t([1.0, -2.0]), _t([0.0, 0.0])).item(), 2.5)
    np.testing.assert_allclose(SmoothL1Loss(beta=0.5)(_t([0.25]), _t([0.0])).item(), 0.0625)


# -- detection loss -------------------------------------------------------------------------------------------
def ref_detection(logits, labels, boxes, targets, box_weight, beta):
    """torchvision's fastrcnn_loss written out: mean CE, smooth-L1 sum over positives divided by R."""
    r, k = logits.shape
    log_p = logits - logits.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    cls = -np.mean(log_p[np.arange(r), labels]) if r else 0.0
    box = 0.0
    for i in range(r):
        if labels[i] > 0:
            c = labels[i] if boxes.shape[1] == 4 * k else 0
            box += ref_smooth_l1(boxes[i, 4 * c : 4 * c + 4] - targets[i], beta).sum()
    box = box / r if r else 0.0
    return cls + box_weight * box, cls, box


def test_detection_loss_by_hand():
    logits = _t([[0.0, 0.0], [0.0, 0.0]])
    labels = _t([0, 1])
    boxes = _t([[9.0] * 8, [7.0, 7.0, 7.0, 7.0, 0.05, 0.5, 0.0, 0.0]], requires_grad=True)
    targets = _t(np.zeros((2, 4), dtype=np.float32))
    out = detection_loss(logits, labels, boxes, targets, box_weight=2.0)
    assert isinstance(out, DetectionLoss)
    # Only row 1 (label 1) regresses, with its class-1 columns 4:8. beta = 1/9:
    # 0.5 * 0.05^2 * 9 + (0.5 - 1/18) = 0.01125 + 0.4444..., divided by R = 2.
    box = (0.01125 + 0.5 - 1 / 18) / 2
    np.testing.assert_allclose(out.classification.item(), math.log(2), rtol=1e-6)
    np.testing.assert_allclose(out.box_regression.item(), box, rtol=1e-6)
    np.testing.assert_allclose(out.loss.item(), math.log(2) + 2 * box, rtol=1e-6)
    out.loss.backward()
    expected = np.zeros((2, 8))
    expected[1, 4:8] = [2 * 0.05 * 9 / 2, 2 * 1.0 / 2, 0.0, 0.0]  # box_weight * d/beta (or sign) / R
    np.testing.assert_allclose(boxes.grad.numpy(), expected, rtol=1e-5, atol=1e-7)


@given(
    r=st.integers(0, 6),
    k=st.integers(1, 4),
    agnostic=st.booleans(),
    box_weight=st.sampled_from([0.0, 1.0, 2.5]),
    seed=st.integers(0, 2**16),
)
def test_detection_loss_matches_reference(r, k, agnostic, box_weight, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(r, k))
    labels = rng.integers(0, k, r)
    boxes = rng.normal(size=(r, 4 if agnostic else 4 * k))
    targets = rng.normal(size=(r, 4))
    out = detection_loss(_t(logits), _t(labels), _t(boxes), _t(targets), box_weight=box_weight, beta=0.2)
    expected = ref_detection(logits, labels, boxes, targets, box_weight, 0.2)
    np.testing.assert_allclose([t.item() for t in out], expected, rtol=1e-10, atol=1e-12)


def test_detection_loss_gradcheck():
    rng = np.random.default_rng(13)
    labels = _t(np.array([0, 2, 1, 2]))
    targets = _t(rng.normal(size=(4, 4)))
    logits = _t(rng.normal(size=(4, 3)), requires_grad=True)
    boxes = _t(rng.normal(size=(4, 12)), requires_grad=True)
    gradcheck(lambda a, b: detection_loss(a, labels, b, targets, box_weight=1.5, beta=0.1).loss, [logits, boxes])


def test_detection_loss_errors():
    logits, labels = _t(np.zeros((3, 2), dtype=np.float32)), _t([0, 1, 1])
    boxes = _t(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="box_regression must be \\(3, 8\\) .* or \\(3, 4\\)"):
        detection_loss(logits, labels, _t(np.zeros((3, 6), dtype=np.float32)), boxes)
    with pytest.raises(ValueError, match="box_targets must be \\(3, 4\\)"):
        detection_loss(logits, labels, boxes, _t(np.zeros((2, 4), dtype=np.float32)))
    with pytest.raises(ValueError, match="labels contains class 2 outside \\[0, 2\\) for class_logits"):
        detection_loss(logits, _t([0, 2, 1]), boxes, boxes)
    with pytest.raises(TypeError, match="box_targets has dtype float64 but class_logits has dtype float32"):
        detection_loss(logits, labels, boxes, _t(np.zeros((3, 4))))
