"""Activations, softmax and dropout against NumPy formulas, hand values and central differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import segcore
import segcore.functional as F
from segcore.testing import gradcheck

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-6, atol=1e-6), np.float64: dict(rtol=1e-13, atol=1e-14)}


def _t(array, requires_grad=False):
    return segcore.tensor(np.asarray(array), requires_grad=requires_grad)


def _np_sigmoid(x):
    x = x.astype(np.float64)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _np_relu6(x):
    return np.minimum(np.maximum(x, 0.0), 6.0)


# Independent formulas in float64, and the points where each op has a kink (gradchecks stay away from them).
REFERENCES = {
    "relu": (F.relu, lambda x: np.maximum(x, 0.0), (0.0,)),
    "relu6": (F.relu6, _np_relu6, (0.0, 6.0)),
    "leaky_relu": (lambda t: F.leaky_relu(t, 0.2), lambda x: np.where(x > 0, x, 0.2 * x), (0.0,)),
    "leaky_relu_default": (F.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x), (0.0,)),
    "elu": (lambda t: F.elu(t, alpha=1.5), lambda x: np.where(x > 0, x, 1.5 * (np.exp(np.minimum(x, 0)) - 1)), (0.0,)),
    "gelu": (F.gelu, lambda x: x * 0.5 * (1.0 + scipy.special.erf(x / math.sqrt(2.0))), ()),
    "gelu_tanh": (
        lambda t: F.gelu(t, approximate="tanh"),
        lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        (),
    ),
    "sigmoid": (F.sigmoid, _np_sigmoid, ()),
    "tanh": (F.tanh, np.tanh, ()),
    "silu": (F.silu, lambda x: x * _np_sigmoid(x), ()),
    "hardsigmoid": (F.hardsigmoid, lambda x: _np_relu6(x + 3.0) / 6.0, (-3.0, 3.0)),
    "hardswish": (F.hardswish, lambda x: x * _np_relu6(x + 3.0) / 6.0, (-3.0, 3.0)),
}


def _away_from(x: np.ndarray, kinks, margin: float = 1e-3) -> np.ndarray:
    for k in kinks:
        close = np.abs(x - k) < margin
        x = np.where(close, k + np.where(x >= k, margin, -margin) * 2, x)
    return x


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), seed=st.integers(0, 2**16))
def test_activation_forward_matches_formula(name, dtype, shape, seed):
    op, ref, _ = REFERENCES[name]
    x = (np.random.default_rng(seed).standard_normal(shape) * 4).astype(dtype)
    out = op(_t(x))
    assert out.dtype == dtype and out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), ref(x.astype(np.float64)), **TOL[dtype])


@pytest.mark.parametrize("name", sorted(REFERENCES))
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), seed=st.integers(0, 2**16))
def test_activation_gradcheck(name, shape, seed):
    op, _, kinks = REFERENCES[name]
    rng = np.random.default_rng(seed)
    x = _t(_away_from(rng.standard_normal(shape) * 4, kinks), requires_grad=True)
    gradcheck(op, [x], rng=rng)


def test_activation_values_by_hand():
    x = _t(np.array([-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 7.0]))
    np.testing.assert_allclose(F.relu6(x).numpy(), [0, 0, 0, 0, 1, 3, 6])
    np.testing.assert_allclose(F.hardsigmoid(x).numpy(), [0, 0, 1 / 3, 0.5, 2 / 3, 1, 1])
    np.testing.assert_allclose(F.hardswish(x).numpy(), [0, 0, -1 / 3, 0, 2 / 3, 3, 7])
    np.testing.assert_allclose(F.elu(x).numpy()[2], math.exp(-1) - 1)
    np.testing.assert_allclose(F.silu(x).numpy()[4], 1 / (1 + math.exp(-1)))
    # GELU(1) = Phi(1) = 0.841344746068543 (standard normal table).
    np.testing.assert_allclose(F.gelu(x).numpy()[4], 0.8413447460685429, rtol=1e-14)


@pytest.mark.parametrize(
    "op, x, grad",
    [
        (F.relu, [-1.0, 0.0, 2.0], [0.0, 0.0, 1.0]),
        (F.relu6, [0.0, 3.0, 6.0, 7.0], [0.0, 1.0, 0.0, 0.0]),
        (lambda t: F.leaky_relu(t, 0.1), [-1.0, 0.0, 1.0], [0.1, 0.1, 1.0]),
        (lambda t: F.elu(t, alpha=2.0), [0.0, 1.0], [2.0, 1.0]),
        (F.hardsigmoid, [-3.0, 0.0, 3.0], [0.0, 1 / 6, 0.0]),
        (F.hardswish, [-4.0, -3.0, 0.0, 3.0, 4.0], [0.0, -0.5, 0.5, 1.5, 1.0]),
    ],
)
def test_gradient_at_kinks_follows_torch(op, x, grad):
    t = _t(np.array(x), requires_grad=True)
    op(t).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), grad, rtol=1e-15)


def test_saturating_activations_do_not_overflow():
    x = _t(np.array([-1e4, -100.0, 100.0, 1e4], dtype=np.float32), requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = F.sigmoid(x)
        np.testing.assert_array_equal(s.numpy(), [0.0, np.float32(_np_sigmoid(np.array(-100.0))), 1.0, 1.0])
        np.testing.assert_array_equal(F.silu(x).numpy()[[0, 3]], [0.0, 1e4])
        np.testing.assert_array_equal(F.elu(x).numpy(), [-1.0, -1.0, 100.0, 1e4])
        np.testing.assert_array_equal(F.gelu(x).numpy(), [0.0, 0.0, 100.0, 1e4])
        s.sum().backward()
    assert np.all(np.isfinite(x.grad.numpy()))


def test_activation_rejects_bad_arguments():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'erf'"):
        F.gelu(_t(np.ones(2)), approximate="erf")
    with pytest.raises(TypeError, match="relu: input must be a floating-point tensor, got dtype int64"):
        F.relu(_t(np.ones(2, np.int64)))
    with pytest.raises(TypeError, match="sigmoid: input must be a Tensor, got ndarray"):
        F.sigmoid(np.ones(2))
    with pytest.raises(ValueError, match="negative_slope must be a finite number, got nan"):
        F.leaky_relu(_t(np.ones(2)), float("nan"))


# -- softmax / log_softmax ------------------------------------------------------------------------------------
def _np_softmax(x, axis):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), data=st.data(), seed=st.integers(0, 2**16))
def test_softmax_and_log_softmax_match_formula(dtype, shape, data, seed):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    x = (np.random.default_rng(seed).standard_normal(shape) * 5).astype(dtype)
    sm = F.softmax(_t(x), dim=dim)
    lsm = F.log_softmax(_t(x), dim)
    assert sm.dtype == dtype and lsm.dtype == dtype
    expected = _np_softmax(x, dim)
    np.testing.assert_allclose(sm.numpy(), expected, **TOL[dtype])
    np.testing.assert_allclose(lsm.numpy(), np.log(expected), **TOL[dtype])


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), data=st.data(), seed=st.integers(0, 2**16))
def test_softmax_and_log_softmax_gradcheck(shape, data, seed):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    rng = np.random.default_rng(seed)
    x = _t(rng.standard_normal(shape) * 3, requires_grad=True)
    gradcheck(lambda x: F.softmax(x, dim), [x], rng=rng)
    gradcheck(lambda x: F.log_softmax(x, dim), [x], rng=rng)


def test_softmax_is_stable_for_huge_logits():
    x = _t(np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]], dtype=np.float32))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        sm = F.softmax(x, dim=1).numpy()
        lsm = F.log_softmax(x, dim=1).numpy()
    np.testing.assert_array_equal(sm[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(sm[1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(lsm[0], [0.0, -1e4, -2e4], rtol=1e-7)
    np.testing.assert_allclose(lsm[1], [-math.log(3)] * 3, rtol=1e-6)


def test_softmax_requires_dim():
    x = _t(np.ones((2, 3)))
    with pytest.raises(ValueError, match="softmax: dim is required"):
        F.softmax(x)
    with pytest.raises(ValueError, match="log_softmax: dim is required"):
        F.log_softmax(x)
    with pytest.raises(ValueError, match="dim=2 is out of range for a tensor with 2 dimensions"):
        F.softmax(x, 2)
    with pytest.raises(TypeError, match=r"dim must be an int, got \(0, 1\)"):
        F.softmax(x, (0, 1))


# -- dropout --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_zero_fraction_and_scaling(dtype, p):
    n = 200_000
    x = _t(np.random.default_rng(0).uniform(1.0, 2.0, n).astype(dtype))  # no zeros of its own
    out = F.dropout(x, p, rng=np.random.default_rng(1)).numpy()
    assert out.dtype == dtype
    dropped = out == 0
    # Binomial(n, p) fraction: 6 standard deviations is a false-alarm rate of ~1e-9.
    assert abs(dropped.mean() - p) < 6 * math.sqrt(p * (1 - p) / n)
    kept = ~dropped
    np.testing.assert_allclose(out[kept], x.numpy()[kept] / (1 - p), rtol=1e-6 if dtype == np.float32 else 1e-15)


def test_dropout_same_seed_same_mask_and_gradient_uses_the_mask():
    x = _t(np.ones((4, 5, 6)), requires_grad=True)
    a = F.dropout(x, 0.3, rng=np.random.default_rng(42))
    b = F.dropout(x, 0.3, rng=np.random.default_rng(42))
    c = F.dropout(x, 0.3, rng=np.random.default_rng(43))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    a.sum().backward()
    # d(sum)/dx is the mask itself: 0 where dropped, 1/(1-p) where kept (x = 1 makes out equal the mask).
    np.testing.assert_allclose(x.grad.numpy(), a.numpy(), rtol=1e-15)
    rng = np.random.default_rng(7)
    gradcheck(lambda x: F.dropout(x, 0.3, rng=np.random.default_rng(5)), [x], rng=rng)


def test_dropout_identity_cases():
    x = _t(np.random.default_rng(0).standard_normal((3, 4)))
    images = _t(np.random.default_rng(1).standard_normal((1, 2, 2, 2)))
    # Eval mode and p = 0 need no rng and change nothing.
    np.testing.assert_array_equal(F.dropout(x, 0.5, training=False).numpy(), x.numpy())
    np.testing.assert_array_equal(F.dropout(x, 0.0).numpy(), x.numpy())
    np.testing.assert_array_equal(F.dropout2d(images, 0.7, training=False).numpy(), images.numpy())
    # p = 1 drops everything (torch returns zeros rather than 0 * inf).
    np.testing.assert_array_equal(F.dropout(x, 1.0, rng=np.random.default_rng(0)).numpy(), np.zeros((3, 4)))


def test_dropout_errors():
    x = _t(np.ones((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"rng=np.random.default_rng\(seed\)"):
        F.dropout(x, 0.5)
    with pytest.raises(ValueError, match=r"dropout2d: training with p=0.2 needs an explicit random generator"):
        F.dropout2d(x, 0.2)
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\], got 1.5"):
        F.dropout(x, 1.5, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator, got RandomState"):
        F.dropout(x, 0.5, rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match=r"dropout2d: input must be 4-D \(N, C, H, W\), got shape \(3, 4, 4\)"):
        F.dropout2d(_t(np.ones((3, 4, 4))), 0.5, rng=np.random.default_rng(0))


def test_dropout2d_zeroes_whole_channels():
    n, c, p = 50, 40, 0.25
    x = _t(np.random.default_rng(0).uniform(1.0, 2.0, (n, c, 3, 2)))
    out = F.dropout2d(x, p, rng=np.random.default_rng(3)).numpy()
    per_channel_zero = (out == 0).reshape(n, c, -1)
    # Each (sample, channel) plane is either all dropped or all kept and scaled.
    assert np.all(per_channel_zero.all(axis=2) | ~per_channel_zero.any(axis=2))
    dropped = per_channel_zero.all(axis=2)
    assert abs(dropped.mean() - p) < 6 * math.sqrt(p * (1 - p) / (n * c))
    kept = ~dropped
    np.testing.assert_allclose(out[kept], x.numpy()[kept] / (1 - p), rtol=1e-15)
