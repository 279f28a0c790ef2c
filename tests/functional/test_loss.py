"""cross_entropy and nll_loss against hand calculations and explicit per-position loops (torch's formulas)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
import segcore.functional as F
from segcore.testing import gradcheck

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
IGNORE = 255


def _t(array, requires_grad=False):
    return segcore.tensor(np.asarray(array), requires_grad=requires_grad)


# -- independent reference: one position at a time, written from torch's documentation ------------------------
def _positions(shape):
    """Index tuples over every position (the shape without the class axis)."""
    return list(itertools.product(*[range(n) for n in shape]))


def _scores_at(x, pos):
    # The class axis is 0 for (K,) input, else 1: insert a full slice there.
    if x.ndim == 1:
        return x.astype(np.float64)
    return x[(pos[0], slice(None)) + tuple(pos[1:])].astype(np.float64)


def _log_softmax_1d(z):
    m = max(z)
    return [v - m - math.log(sum(math.exp(u - m) for u in z)) for v in z]


def ref_cross_entropy(x, target, weight=None, ignore_index=-100, reduction="mean", eps=0.0):
    k = x.shape[0] if x.ndim == 1 else x.shape[1]
    w = [1.0] * k if weight is None else [float(v) for v in weight]
    losses, total_weight = {}, 0.0
    for pos in _positions(target.shape):
        y = int(target[pos])
        if y == ignore_index:
            losses[pos] = 0.0
            continue
        logp = _log_softmax_1d(list(_scores_at(x, pos)))
        nll = -w[y] * logp[y]
        smooth = -sum(w[c] * logp[c] for c in range(k))
        losses[pos] = (1 - eps) * nll + eps / k * smooth
        total_weight += w[y]
    return _reduce(losses, target.shape, reduction, total_weight)


def ref_cross_entropy_probs(x, probs, weight=None, reduction="mean", eps=0.0):
    k = x.shape[0] if x.ndim == 1 else x.shape[1]
    w = [1.0] * k if weight is None else [float(v) for v in weight]
    shape = x.shape[:1] + x.shape[2:] if x.ndim > 1 else ()
    losses = {}
    for pos in _positions(shape):
        logp = _log_softmax_1d(list(_scores_at(x, pos)))
        p = _scores_at(probs, pos) * (1 - eps) + eps / k
        losses[pos] = -sum(w[c] * p[c] * logp[c] for c in range(k))
    return _reduce(losses, shape, reduction, float(len(losses)))


def ref_nll(logp, target, weight=None, ignore_index=-100, reduction="mean"):
    k = logp.shape[0] if logp.ndim == 1 else logp.shape[1]
    w = [1.0] * k if weight is None else [float(v) for v in weight]
    losses, total_weight = {}, 0.0
    for pos in _positions(target.shape):
        y = int(target[pos])
        if y == ignore_index:
            losses[pos] = 0.0
            continue
        losses[pos] = -w[y] * _scores_at(logp, pos)[y]
        total_weight += w[y]
    return _reduce(losses, target.shape, reduction, total_weight)


def _reduce(losses, shape, reduction, total_weight):
    if reduction == "none":
        out = np.zeros(shape)
        for pos, v in losses.items():
            out[pos] = v
        return out
    total = sum(losses.values())
    if reduction == "sum":
        return total
    return total / total_weight if total_weight else 0.0  # segcore's documented rule for an all-ignored batch


# -- hand calculations ----------------------------------------------------------------------------------------
def test_cross_entropy_two_pixels_by_hand():
    # A 1x1x2 image with 2 classes: pixel 0 logits (0, ln 3) target 1; pixel 1 logits (0, 0) target 0.
    # p(target) = 3/4 and 1/2, so losses are -ln(3/4) and ln 2, and the mean is their average.
    x = _t(np.array([[[[0.0, 0.0]], [[math.log(3.0), 0.0]]]]), requires_grad=True)  # (N=1, K=2, H=1, W=2)
    target = _t(np.array([[[1, 0]]]))
    loss = F.cross_entropy(x, target)
    expected = (-math.log(0.75) + math.log(2.0)) / 2
    assert loss.shape == ()
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-14)
    loss.backward()
    # d loss / d logits = (softmax - one_hot) / 2: pixel 0 -> (1/4, -1/4)/2, pixel 1 -> (-1/2, 1/2)/2.
    np.testing.assert_allclose(x.grad.numpy()[0, :, 0, 0], [0.125, -0.125], rtol=1e-14)
    np.testing.assert_allclose(x.grad.numpy()[0, :, 0, 1], [-0.25, 0.25], rtol=1e-14)
    per_pixel = F.cross_entropy(x, target, reduction="none").numpy()
    np.testing.assert_allclose(per_pixel, [[[-math.log(0.75), math.log(2.0)]]], rtol=1e-14)
    # Class weights (1, 3): mean = (3 * -ln(3/4) + 1 * ln 2) / (3 + 1).
    weighted = F.cross_entropy(x, target, weight=_t(np.array([1.0, 3.0])))
    np.testing.assert_allclose(weighted.item(), (-3 * math.log(0.75) + math.log(2.0)) / 4, rtol=1e-14)
    # Ignoring pixel 1 leaves the first loss alone.
    ignored = F.cross_entropy(x, _t(np.array([[[1, IGNORE]]])), ignore_index=IGNORE)
    np.testing.assert_allclose(ignored.item(), -math.log(0.75), rtol=1e-14)


def test_label_smoothing_by_hand():
    # Two classes, eps = 0.2: the target is (0.1, 0.9) for class 1. Logits (0, ln 3): log p = (ln 1/4, ln 3/4).
    x = _t(np.array([[0.0, math.log(3.0)]]))
    loss = F.cross_entropy(x, _t(np.array([1])), label_smoothing=0.2)
    np.testing.assert_allclose(loss.item(), -(0.1 * math.log(0.25) + 0.9 * math.log(0.75)), rtol=1e-14)
    # With weights (2, 1) torch weights the smoothing term per class and divides by w[target] = 1:
    # 0.8 * (-1 * ln 3/4) + 0.1 * (-(2 ln 1/4 + 1 ln 3/4)).
    weighted = F.cross_entropy(x, _t(np.array([1])), weight=_t(np.array([2.0, 1.0])), label_smoothing=0.2)
    expected = 0.8 * -math.log(0.75) + 0.1 * -(2 * math.log(0.25) + math.log(0.75))
    np.testing.assert_allclose(weighted.item(), expected, rtol=1e-14)


def test_nll_loss_by_hand():
    logp = _t(np.array([[-0.5, -1.0, -2.0], [-3.0, -0.25, -4.0]]), requires_grad=True)
    target = _t(np.array([2, 1]))
    loss = F.nll_loss(logp, target, weight=_t(np.array([1.0, 2.0, 4.0])))
    np.testing.assert_allclose(loss.item(), (4 * 2.0 + 2 * 0.25) / 6, rtol=1e-14)
    loss.backward()
    np.testing.assert_allclose(logp.grad.numpy(), [[0, 0, -4 / 6], [0, -2 / 6, 0]], rtol=1e-14)


# -- against the loop reference -------------------------------------------------------------------------------
problem = st.tuples(
    st.integers(1, 3),  # N
    st.integers(1, 4),  # K
    st.lists(st.integers(1, 3), min_size=0, max_size=2),  # spatial dims
    st.sampled_from(["none", "mean", "sum"]),
    st.booleans(),  # class weights
    st.sampled_from([0.0, 0.1, 1.0]),  # label smoothing
    st.integers(0, 2**16),
)


def _draw_problem(spec, dtype):
    n, k, spatial, reduction, weighted, eps, seed = spec
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, k, *spatial)) * 3).astype(dtype)
    target = rng.integers(0, k, size=(n, *spatial))
    target = np.where(rng.random(target.shape) < 0.25, IGNORE, target)
    weight = rng.uniform(0.2, 2.0, k).astype(dtype) if weighted else None
    return rng, x, target, weight, reduction, eps


@pytest.mark.parametrize("dtype", DTYPES)
@given(spec=problem)
def test_cross_entropy_matches_reference(dtype, spec):
    _, x, target, weight, reduction, eps = _draw_problem(spec, dtype)
    out = F.cross_entropy(
        _t(x), _t(target), None if weight is None else _t(weight), IGNORE, reduction, label_smoothing=eps
    )
    assert out.dtype == dtype
    expected = ref_cross_entropy(x, target, weight, IGNORE, reduction, eps)
    np.testing.assert_allclose(out.numpy(), expected, **TOL[dtype])


@given(spec=problem)
def test_cross_entropy_gradcheck(spec):
    rng, x, target, weight, reduction, eps = _draw_problem(spec, np.float64)
    t, w = _t(target), None if weight is None else _t(weight)
    logits = _t(x, requires_grad=True)
    gradcheck(lambda z: F.cross_entropy(z, t, w, IGNORE, reduction, eps), [logits], rng=rng)


@pytest.mark.parametrize("dtype", DTYPES)
@given(spec=problem)
def test_cross_entropy_probability_targets_match_reference(dtype, spec):
    rng, x, _, weight, reduction, eps = _draw_problem(spec, dtype)
    probs = rng.dirichlet(np.ones(x.shape[1]), size=x.shape[:1] + x.shape[2:])
    probs = np.moveaxis(probs, -1, 1).astype(dtype)
    w = None if weight is None else _t(weight)
    out = F.cross_entropy(_t(x), _t(probs), w, reduction=reduction, label_smoothing=eps)
    expected = ref_cross_entropy_probs(x, probs, weight, reduction, eps)
    np.testing.assert_allclose(out.numpy(), expected, **TOL[dtype])


@given(spec=problem)
def test_cross_entropy_probability_targets_gradcheck(spec):
    rng, x, _, weight, reduction, eps = _draw_problem(spec, np.float64)
    probs = np.moveaxis(rng.dirichlet(np.ones(x.shape[1]), size=x.shape[:1] + x.shape[2:]), -1, 1)
    w = None if weight is None else _t(weight)
    logits, p = _t(x, requires_grad=True), _t(probs, requires_grad=True)
    gradcheck(lambda z, q: F.cross_entropy(z, q, w, reduction=reduction, label_smoothing=eps), [logits, p], rng=rng)


@pytest.mark.parametrize("dtype", DTYPES)
@given(spec=problem)
def test_nll_loss_matches_reference_and_gradcheck(dtype, spec):
    rng, x, target, weight, reduction, _ = _draw_problem(spec, dtype)
    out = F.nll_loss(_t(x), _t(target), None if weight is None else _t(weight), IGNORE, reduction)
    assert out.dtype == dtype
    np.testing.assert_allclose(out.numpy(), ref_nll(x, target, weight, IGNORE, reduction), **TOL[dtype])
    if dtype == np.float64:
        w, t = None if weight is None else _t(weight), _t(target)
        gradcheck(lambda z: F.nll_loss(z, t, w, IGNORE, reduction), [_t(x, requires_grad=True)], rng=rng)


def test_cross_entropy_equals_nll_of_log_softmax_in_gradient_too():
    rng = np.random.default_rng(0)
    x1 = _t(rng.standard_normal((3, 4, 2)), requires_grad=True)
    x2 = _t(x1.numpy(), requires_grad=True)
    t = _t(rng.integers(0, 4, (3, 2)))
    a = F.cross_entropy(x1, t)
    b = F.nll_loss(F.log_softmax(x2, dim=1), t)
    np.testing.assert_allclose(a.item(), b.item(), rtol=1e-14)
    a.backward()
    b.backward()
    np.testing.assert_allclose(x1.grad.numpy(), x2.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_unbatched_input():
    x = _t(np.array([0.0, math.log(3.0)]))
    np.testing.assert_allclose(F.cross_entropy(x, _t(np.array(1))).item(), -math.log(0.75), rtol=1e-14)
    np.testing.assert_allclose(F.nll_loss(x, _t(np.array(1))).item(), -math.log(3.0), rtol=1e-14)


# -- stability, ignored pixels, label dtypes ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits_are_stable(dtype):
    x = _t(np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]], dtype=dtype), requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = F.cross_entropy(x, _t(np.array([1, 2])), reduction="none")
        loss.sum().backward()
    # Pixel 0: log-sum-exp = 1e4 (the others vanish), loss = 1e4 - 0. Pixel 1: two tied maxima, loss = ln 2.
    np.testing.assert_allclose(loss.numpy(), [1e4, math.log(2.0)], rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), [[1.0, -1.0, 0.0], [0.0, 0.5, -0.5]], atol=1e-6)


def test_all_ignored_gives_zero_loss_and_zero_gradient():
    x = _t(np.random.default_rng(0).standard_normal((2, 3, 2, 2)), requires_grad=True)
    t = _t(np.full((2, 2, 2), IGNORE))
    for kwargs in ({}, {"label_smoothing": 0.3}, {"weight": _t(np.array([1.0, 2.0, 3.0]))}):
        x.grad = None
        loss = F.cross_entropy(x, t, ignore_index=IGNORE, **kwargs)
        assert loss.item() == 0.0
        loss.backward()
        np.testing.assert_array_equal(x.grad.numpy(), 0.0)
    loss = F.nll_loss(x, t, ignore_index=IGNORE)
    assert loss.item() == 0.0
    assert F.cross_entropy(x, t, ignore_index=IGNORE, reduction="sum").item() == 0.0


def test_uint8_label_maps_with_void_255():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 2, 2))
    labels = np.array([[[0, 255], [2, 1]]], dtype=np.uint8)
    out = F.cross_entropy(_t(x), _t(labels), ignore_index=255)
    np.testing.assert_allclose(out.item(), ref_cross_entropy(x, labels.astype(np.int64), None, 255), rtol=1e-12)
    # With the default ignore_index (-100) a uint8 255 is a real (out-of-range) class, not wrapped to -100.
    with pytest.raises(ValueError, match="target contains class 255 outside"):
        F.cross_entropy(_t(x), _t(labels))


# -- validation -----------------------------------------------------------------------------------------------
def test_target_validation():
    x = _t(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"target contains class 3 outside \[0, 3\).*ignore_index=-100"):
        F.cross_entropy(x, _t(np.array([[0, 1, 2, 3], [0, 0, 0, 0]])))
    with pytest.raises(ValueError, match=r"target contains class -1 outside"):
        F.nll_loss(x, _t(np.array([[0, 1, 2, -1], [0, 0, 0, 0]])))
    with pytest.raises(ValueError, match=r"target shape \(2, 3\) does not match input shape \(2, 3, 4\): expected"):
        F.cross_entropy(x, _t(np.zeros((2, 3), np.int64)))
    with pytest.raises(TypeError, match="class targets must have an integer dtype"):
        F.cross_entropy(x, _t(np.zeros((2, 4))))
    with pytest.raises(TypeError, match="holds class probabilities and must be floating point, got dtype int64"):
        F.cross_entropy(x, _t(np.zeros((2, 3, 4), np.int64)))
    with pytest.raises(ValueError, match="ignore_index=255 is not supported with probability targets"):
        F.cross_entropy(x, _t(np.zeros((2, 3, 4))), ignore_index=255)
    with pytest.raises(TypeError, match="target must be a Tensor, got list"):
        F.cross_entropy(x, [0, 1])


def test_argument_validation():
    x = _t(np.zeros((2, 3)))
    t = _t(np.array([0, 1]))
    with pytest.raises(ValueError, match=r"reduction must be one of \('none', 'mean', 'sum'\), got 'avg'"):
        F.cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\], got 1.5"):
        F.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\).*got \(2,\)"):
        F.cross_entropy(x, t, weight=_t(np.ones(2)))
    with pytest.raises(TypeError, match="weight has dtype float32 but input has dtype float64"):
        F.nll_loss(x, t, weight=_t(np.ones(3, np.float32)))
    with pytest.raises(TypeError, match="input must be a floating-point tensor, got dtype int64"):
        F.cross_entropy(t, t)
    with pytest.raises(TypeError, match="ignore_index must be an int, got 1.5"):
        F.cross_entropy(x, t, ignore_index=1.5)
