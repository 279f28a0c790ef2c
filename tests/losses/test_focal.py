"""sigmoid_focal_loss (torchvision's definition) and softmax_focal_loss (Lin et al.) against hand values and
naive NumPy formulas; gradients by central differences, also where gamma < 1 meets saturated logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
import segcore.functional as F
from segcore.losses import FocalLoss, SigmoidFocalLoss, sigmoid_focal_loss, softmax_focal_loss
from segcore.testing import gradcheck

IGNORE = 255


def _t(a, requires_grad=False):
    return segcore.tensor(a, requires_grad=requires_grad)


def ref_sigmoid_focal(x, t, alpha=0.25, gamma=2.0, reduction="none"):
    # torchvision.ops.sigmoid_focal_loss written out with the textbook sigmoid and BCE.
    p = 1.0 / (1.0 + np.exp(-x))
    ce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def ref_softmax_focal(x, target, gamma=2.0, alpha=None, ignore_index=IGNORE, reduction="mean"):
    """Pixel by pixel: -alpha_y (1 - p_y)^gamma log p_y with p = softmax over axis 1."""
    k = x.shape[1]
    scores = np.moveaxis(x, 1, -1).reshape(-1, k)
    labels = target.reshape(-1)
    out = []
    for row, y in zip(scores, labels):
        if y == ignore_index:
            out.append(0.0)
            continue
        m = max(row)
        log_p = row[y] - m - math.log(sum(math.exp(v - m) for v in row))
        a = 1.0 if alpha is None else alpha[y]
        out.append(-a * (1 - math.exp(log_p)) ** gamma * log_p)
    out = np.array(out).reshape(target.shape)
    valid = int(np.sum(target != ignore_index))
    return {"none": out, "sum": out.sum(), "mean": out.sum() / valid if valid else 0.0}[reduction]


# -- sigmoid focal --------------------------------------------------------------------------------------------
def test_sigmoid_focal_by_hand():
    # x = 0: p = p_t = 1/2, ce = log 2, (1 - p_t)^2 = 1/4; alpha_t = 0.25 for t = 1, 0.75 for t = 0.
    x = _t([0.0, 0.0], requires_grad=True)
    loss = sigmoid_focal_loss(x, _t([1.0, 0.0]))
    assert loss.shape == (2,) and loss.dtype == np.float32  # torchvision's default reduction is 'none'
    np.testing.assert_allclose(loss.numpy(), [math.log(2) / 16, 3 * math.log(2) / 16], rtol=1e-6)
    loss.sum().backward()
    # d/dx alpha (1 - s)^2 (-log s) at s = 1/2: alpha (-(1/4) log 2 - 1/8); mirrored for t = 0.
    np.testing.assert_allclose(
        x.grad.numpy(), [0.25 * (-0.25 * math.log(2) - 0.125), 0.75 * (0.25 * math.log(2) + 0.125)], rtol=1e-6
    )
    # alpha < 0 disables the weighting; gamma = 0 leaves the plain BCE.
    plain = sigmoid_focal_loss(x, _t([1.0, 0.0]), alpha=-1, gamma=0, reduction="sum")
    np.testing.assert_allclose(plain.item(), 2 * math.log(2), rtol=1e-6)


@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    alpha=st.sampled_from([0.25, 0.5, -1.0]),
    gamma=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5]),
    reduction=st.sampled_from(["none", "mean", "sum"]),
    seed=st.integers(0, 2**16),
)
def test_sigmoid_focal_matches_torchvision_formula(shape, alpha, gamma, reduction, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, shape)
    t = np.where(rng.random(shape) < 0.5, rng.integers(0, 2, shape), rng.random(shape))  # hard and soft labels
    out = sigmoid_focal_loss(_t(x), _t(t), alpha=alpha, gamma=gamma, reduction=reduction)
    np.testing.assert_allclose(out.numpy(), ref_sigmoid_focal(x, t, alpha, gamma, reduction), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [0.25, -1.0])
def test_sigmoid_focal_gradcheck(gamma, alpha):
    rng = np.random.default_rng(7)
    x = _t(rng.normal(0, 2, (3, 4)), requires_grad=True)
    t = np.where(rng.random((3, 4)) < 0.5, 1.0, rng.random((3, 4)))
    gradcheck(lambda x: sigmoid_focal_loss(x, _t(t), alpha=alpha, gamma=gamma, reduction="mean"), [x])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_focal_extreme_logits(gamma):
    x = _t(np.array([1e4, -1e4, 1e4, -1e4], dtype=np.float32), requires_grad=True)
    t = _t(np.array([1.0, 0.0, 0.0, 1.0], dtype=np.float32))
    loss = sigmoid_focal_loss(x, t)
    # Right and confident: 0. Wrong and confident: alpha_t * |x| (p_t = 0, so the focal factor is 1).
    np.testing.assert_allclose(loss.numpy(), [0.0, 0.0, 0.75e4, 0.25e4], rtol=1e-6)
    loss.sum().backward()
    grad = x.grad.numpy()
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [0.0, 0.0, 0.75, -0.25], atol=1e-6)


# -- softmax focal --------------------------------------------------------------------------------------------
def test_softmax_focal_by_hand():
    # Two classes, logits (0, ln 3): p = (1/4, 3/4). Target 1: -(1/4)^2 log(3/4); target 0: -(3/4)^2 log(1/4).
    x = _t([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    y = _t([1, 0])
    per_pixel = softmax_focal_loss(x, y, reduction="none")
    expected = [-(1 / 16) * math.log(0.75), -(9 / 16) * math.log(0.25)]
    np.testing.assert_allclose(per_pixel.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(softmax_focal_loss(x, y).item(), sum(expected) / 2, rtol=1e-6)
    # Per-class alpha multiplies by alpha[y]; the mean stays over pixels.
    weighted = softmax_focal_loss(x, y, alpha=[0.5, 2.0])
    np.testing.assert_allclose(weighted.item(), (2 * expected[0] + 0.5 * expected[1]) / 2, rtol=1e-6)


@given(
    n=st.integers(1, 2),
    k=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    gamma=st.sampled_from([0.0, 0.5, 2.0]),
    use_alpha=st.booleans(),
    reduction=st.sampled_from(["none", "mean", "sum"]),
    seed=st.integers(0, 2**16),
)
def test_softmax_focal_matches_loop(n, k, spatial, gamma, use_alpha, reduction, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (n, k, *spatial))
    y = rng.integers(0, k, (n, *spatial))
    y[rng.random(y.shape) < 0.25] = IGNORE
    alpha = list(rng.random(k)) if use_alpha else None
    out = softmax_focal_loss(_t(x), _t(y), gamma=gamma, alpha=alpha, reduction=reduction)
    expected = ref_softmax_focal(x, y, gamma, alpha, reduction=reduction)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-13)


def test_softmax_focal_with_gamma_zero_is_cross_entropy():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(2, 3, 4, 4)), rng.integers(0, 3, (2, 4, 4))
    y[0, 0] = IGNORE
    np.testing.assert_allclose(
        softmax_focal_loss(_t(x), _t(y), gamma=0.0).item(),
        F.cross_entropy(_t(x), _t(y), ignore_index=IGNORE).item(),
        rtol=1e-12,
    )


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_softmax_focal_gradcheck(gamma, reduction):
    rng = np.random.default_rng(9)
    x = _t(rng.normal(0, 2, (2, 3, 3, 2)), requires_grad=True)
    y = rng.integers(0, 3, (2, 3, 2))
    y[1, 0, 0] = IGNORE
    alpha = _t(rng.random(3) + 0.1)
    gradcheck(lambda x: softmax_focal_loss(x, _t(y), gamma=gamma, alpha=alpha, reduction=reduction), [x])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_softmax_focal_extreme_logits(gamma):
    x = _t(np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0]], dtype=np.float32), requires_grad=True)
    loss = softmax_focal_loss(x, _t([0, 1]), gamma=gamma, reduction="none")
    # Confident and right: 0. Confident and wrong: -log p_y = 2e4 (p_y = 0, so (1 - p_y)^gamma = 1).
    np.testing.assert_allclose(loss.numpy(), [0.0, 2e4], rtol=1e-6)
    loss.sum().backward()
    grad = x.grad.numpy()
    assert np.all(np.isfinite(grad))
    # Row 0: saturated, zero gradient even for gamma < 1. Row 1: -(onehot - p) = (1, -1, 0).
    np.testing.assert_allclose(grad, [[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]], atol=1e-6)


def test_softmax_focal_edge_cases():
    x = _t(np.random.default_rng(10).normal(size=(2, 3, 2, 2)).astype(np.float32), requires_grad=True)
    loss = softmax_focal_loss(x, _t(np.full((2, 2, 2), IGNORE)))
    assert loss.item() == 0.0
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0.0)
    # One class: p_y = 1 everywhere, so the loss and its gradient are 0.
    single = _t(np.full((1, 1, 2, 2), 3.0, dtype=np.float32), requires_grad=True)
    loss = softmax_focal_loss(single, _t(np.zeros((1, 2, 2), dtype=np.int64)), gamma=0.5)
    assert loss.item() == 0.0
    loss.backward()
    np.testing.assert_array_equal(single.grad.numpy(), 0.0)


def test_modules_and_bad_arguments():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(2, 3, 2, 2)), rng.integers(0, 3, (2, 2, 2))
    np.testing.assert_allclose(
        FocalLoss(gamma=1.0, alpha=[1.0, 2.0, 3.0])(_t(x), _t(y)).item(),
        ref_softmax_focal(x, y, 1.0, [1.0, 2.0, 3.0]),
        rtol=1e-12,
    )
    t = rng.random((2, 3))
    # The module averages (a training loss is a scalar); the function keeps torchvision's 'none'.
    np.testing.assert_allclose(
        SigmoidFocalLoss()(_t(x[:, :, 0, 0]), _t(t)).item(), ref_sigmoid_focal(x[:, :, 0, 0], t).mean(), rtol=1e-12
    )
    with pytest.raises(ValueError, match="alpha must list one weight per class \\(3\\), got 2"):
        softmax_focal_loss(_t(x), _t(y), alpha=[1.0, 2.0])
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0.0, got -1"):
        softmax_focal_loss(_t(x), _t(y), gamma=-1)
    with pytest.raises(TypeError, match="targets has dtype float32 but input has dtype float64"):
        sigmoid_focal_loss(_t(x), _t(x.astype(np.float32)))
    with pytest.raises(ValueError, match="FocalLoss: alpha\\[1\\] must be a finite number >= 0.0"):
        FocalLoss(alpha=[1.0, -2.0])
