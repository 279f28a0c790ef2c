"""binary_cross_entropy(_with_logits) against hand values and the naive textbook formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
import segcore.functional as F
from segcore.losses import BCELoss, BCEWithLogitsLoss, binary_cross_entropy_with_logits
from segcore.testing import gradcheck


def _t(a, requires_grad=False):
    return segcore.tensor(a, requires_grad=requires_grad)


def _reduce(loss, reduction):
    return {"none": loss, "mean": loss.mean() if loss.size else 0.0, "sum": loss.sum()}[reduction]


def ref_bce_logits(x, t, w=None, pw=None, reduction="mean"):
    # The definition, -w [pw t log s + (1 - t) log(1 - s)] with s = 1 / (1 + e^-x): fine for moderate logits.
    s = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    pw = 1.0 if pw is None else pw
    loss = -(pw * t * np.log(s) + (1 - t) * np.log(1 - s))
    if w is not None:
        loss = loss * w
    return _reduce(loss, reduction)


def test_bce_with_logits_by_hand():
    # x = 0: s = 1/2; x = ln 3: s = 3/4. Targets 1 and 0 give log 2 and -log(1/4) = log 4.
    x = _t([0.0, math.log(3.0)], requires_grad=True)
    target = _t([1.0, 0.0])
    loss = F.binary_cross_entropy_with_logits(x, target)
    assert loss.dtype == np.float32 and loss.shape == ()
    np.testing.assert_allclose(loss.item(), (math.log(2) + math.log(4)) / 2, rtol=1e-6)
    loss.backward()
    # d/dx = (s - t) / 2: (1/2 - 1) / 2 and (3/4 - 0) / 2.
    np.testing.assert_allclose(x.grad.numpy(), [-0.25, 0.375], rtol=1e-6)
    # pos_weight 3 triples the positive term only: 3 log 2 and log 4.
    weighted = F.binary_cross_entropy_with_logits(x, target, pos_weight=_t([3.0, 3.0]), reduction="none")
    np.testing.assert_allclose(weighted.numpy(), [3 * math.log(2), math.log(4)], rtol=1e-6)
    # weight scales each element: 2 log 2 + 0.5 log 4 summed.
    summed = F.binary_cross_entropy_with_logits(x, target, weight=_t([2.0, 0.5]), reduction="sum")
    np.testing.assert_allclose(summed.item(), 2 * math.log(2) + 0.5 * math.log(4), rtol=1e-6)


@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    reduction=st.sampled_from(["none", "mean", "sum"]),
    use_weight=st.booleans(),
    use_pos_weight=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_bce_with_logits_matches_definition(shape, reduction, use_weight, use_pos_weight, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, shape)
    t = rng.random(shape)  # soft targets
    w = rng.random(shape[-1:]) if use_weight else None  # broadcast along the last dimension
    pw = rng.random(shape[-1:]) * 3 if use_pos_weight else None
    out = F.binary_cross_entropy_with_logits(
        _t(x), _t(t), None if w is None else _t(w), None if pw is None else _t(pw), reduction=reduction
    )
    np.testing.assert_allclose(out.numpy(), ref_bce_logits(x, t, w, pw, reduction), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_with_logits_gradcheck(reduction):
    rng = np.random.default_rng(1)
    x = _t(rng.normal(0, 2, (3, 4)), requires_grad=True)
    t = _t(rng.random((3, 4)), requires_grad=True)
    w, pw = _t(rng.random((3, 1))), _t(rng.random(4) + 0.5)
    gradcheck(lambda x, t: F.binary_cross_entropy_with_logits(x, t, w, pw, reduction=reduction), [x, t])
    gradcheck(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction), [x, t])


def test_bce_with_logits_target_gradient_by_hand():
    # d/dt [(1 - t) x + (1 + (pw - 1) t) softplus(-x)] = -x + (pw - 1) softplus(-x); x = 0: softplus = log 2.
    x = _t([0.0, 2.0])
    t = _t([0.5, 0.25], requires_grad=True)
    F.binary_cross_entropy_with_logits(x, t, pos_weight=_t([3.0, 1.0]), reduction="sum").backward()
    np.testing.assert_allclose(t.grad.numpy(), [2 * math.log(2), -2.0], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_extreme_logits(dtype):
    x = _t(np.array([1e4, -1e4, 1e4, -1e4, 1e4], dtype=dtype), requires_grad=True)
    t = _t(np.array([0.0, 1.0, 1.0, 0.0, 0.5], dtype=dtype))
    loss = F.binary_cross_entropy_with_logits(x, t, pos_weight=_t(np.full(5, 2.0, dtype=dtype)), reduction="none")
    # Wrong and confident: the loss is the logit's magnitude (times pos_weight for a positive target).
    np.testing.assert_allclose(loss.numpy(), [1e4, 2e4, 0.0, 0.0, 5e3], rtol=1e-6)
    loss.sum().backward()
    # (1 - t) - (1 + (pw - 1) t) sigmoid(-x): 1, -2, 0, 0, 0.5.
    np.testing.assert_allclose(x.grad.numpy(), [1.0, -2.0, 0.0, 0.0, 0.5], atol=1e-6)


def test_bce_with_logits_keeps_tiny_losses():
    # Right and confident: the loss log1p(exp(-20)) = 2.06e-9 must survive in float32 (it would round away in
    # (1 - t) x + softplus(-x), where -20 + 20.000000002 cancels).
    x = _t(np.array([-20.0, 20.0], dtype=np.float32))
    loss = F.binary_cross_entropy_with_logits(x, _t(np.array([0.0, 1.0], dtype=np.float32)), reduction="none")
    np.testing.assert_allclose(loss.numpy(), [math.log1p(math.exp(-20.0))] * 2, rtol=1e-5)


def test_bce_on_probabilities_by_hand_and_clamp():
    p = _t([0.5, 0.25, 0.0, 1.0, 0.0], requires_grad=True)
    t = _t([1.0, 0.0, 0.0, 0.0, 1.0])
    loss = F.binary_cross_entropy(p, t, reduction="none")
    # log 2, -log(3/4), exactly 0, and torch's clamp of log(0) at -100 for the confident mistakes.
    np.testing.assert_allclose(loss.numpy(), [math.log(2), -math.log(0.75), 0.0, 100.0, 100.0], rtol=1e-6)
    loss.sum().backward()
    # torch's backward (p - t) / max(p (1 - p), 1e-12): -2, 4/3, 0, 1e12, -1e12: finite everywhere.
    np.testing.assert_allclose(p.grad.numpy(), [-2.0, 4 / 3, 0.0, 1e12, -1e12], rtol=1e-5)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_on_probabilities_matches_definition_and_gradcheck(reduction):
    rng = np.random.default_rng(2)
    p = rng.uniform(0.05, 0.95, (4, 3))
    t = rng.random((4, 3))
    w = rng.random(3)
    expected = _reduce(-w * (t * np.log(p) + (1 - t) * np.log(1 - p)), reduction)
    out = F.binary_cross_entropy(_t(p), _t(t), _t(w), reduction=reduction)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    pt, tt = _t(p, requires_grad=True), _t(t, requires_grad=True)
    gradcheck(lambda p, t: F.binary_cross_entropy(p, t, _t(w), reduction=reduction), [pt, tt])


def test_modules_call_the_functions():
    rng = np.random.default_rng(3)
    x, t, w = rng.normal(size=(2, 5)), rng.random((2, 5)), rng.random(5)
    module = BCEWithLogitsLoss(weight=_t(w), pos_weight=_t(w + 1))
    np.testing.assert_allclose(module(_t(x), _t(t)).item(), ref_bce_logits(x, t, w, w + 1), rtol=1e-12)
    p = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(BCELoss(reduction="sum")(_t(p), _t(t)).item(), ref_bce_logits(x, t, reduction="sum"))


def test_empty_input_mean_is_zero():
    x = _t(np.zeros((0, 3)), requires_grad=True)
    loss = binary_cross_entropy_with_logits(x, _t(np.zeros((0, 3))))
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad.shape == (0, 3)


def test_bad_arguments_are_named():
    x = _t(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="target shape"):
        F.binary_cross_entropy_with_logits(x, _t(np.zeros((3, 2), dtype=np.float32)))
    with pytest.raises(TypeError, match="target has dtype float64"):
        F.binary_cross_entropy_with_logits(x, _t(np.zeros((2, 3))))
    with pytest.raises(ValueError, match="pos_weight of shape \\(2,\\) does not broadcast"):
        F.binary_cross_entropy_with_logits(x, x, pos_weight=_t(np.ones(2, dtype=np.float32)))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.binary_cross_entropy_with_logits(x, x, reduction="avg")
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        F.binary_cross_entropy_with_logits(_t(np.zeros((2, 3), dtype=np.int64)), x)
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\], got 1 element"):
        F.binary_cross_entropy(_t(np.array([0.5, 1.5], dtype=np.float32)), _t(np.zeros(2, dtype=np.float32)))
    with pytest.raises(ValueError, match="BCEWithLogitsLoss: reduction"):
        BCEWithLogitsLoss(reduction="avg")
