"""batch_norm / group_norm / layer_norm against explicit NumPy loops and hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
import segcore.functional as F
from segcore.testing import gradcheck

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def _t(array, requires_grad=False):
    return segcore.tensor(np.asarray(array), requires_grad=requires_grad)


# -- independent references (loops over channels / samples / groups) -----------------------------------------
def ref_batch_norm(x, mean, var, weight, bias, eps):
    out = np.empty_like(x, dtype=np.float64)
    for c in range(x.shape[1]):
        y = (x[:, c].astype(np.float64) - mean[c]) / math.sqrt(var[c] + eps)
        if weight is not None:
            y = y * weight[c]
        if bias is not None:
            y = y + bias[c]
        out[:, c] = y
    return out


def ref_channel_stats(x):
    means, biased, unbiased = [], [], []
    for c in range(x.shape[1]):
        values = x[:, c].astype(np.float64).ravel()
        m = values.sum() / values.size
        ss = ((values - m) ** 2).sum()
        means.append(m)
        biased.append(ss / values.size)
        unbiased.append(ss / (values.size - 1))
    return np.array(means), np.array(biased), np.array(unbiased)


def ref_group_norm(x, groups, weight, bias, eps):
    n, c = x.shape[:2]
    per = c // groups
    out = np.empty(x.shape, dtype=np.float64)
    for i in range(n):
        for g in range(groups):
            block = x[i, g * per : (g + 1) * per].astype(np.float64)
            m = block.mean()
            v = ((block - m) ** 2).mean()
            out[i, g * per : (g + 1) * per] = (block - m) / math.sqrt(v + eps)
    for ch in range(c):
        if weight is not None:
            out[:, ch] *= weight[ch]
        if bias is not None:
            out[:, ch] += bias[ch]
    return out


def ref_layer_norm(x, k, weight, bias, eps):
    lead = x.shape[: x.ndim - k]
    flat = x.reshape(lead + (-1,)).astype(np.float64).reshape(-1, int(np.prod(x.shape[x.ndim - k :])))
    out = np.empty_like(flat)
    for r in range(flat.shape[0]):
        m = flat[r].mean()
        v = ((flat[r] - m) ** 2).mean()
        out[r] = (flat[r] - m) / math.sqrt(v + eps)
    out = out.reshape(x.shape)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


shapes_nc = st.tuples(
    st.integers(1, 3), st.integers(1, 4), st.lists(st.integers(1, 4), min_size=0, max_size=2)
).map(lambda t: (t[0], t[1], *t[2]))


# -- batch_norm -----------------------------------------------------------------------------------------------
def test_batch_norm_training_step_by_hand():
    # One channel, values 1, 3, 5, 7: mean 4, biased var 5, unbiased var 20/3.
    x = _t(np.array([[[1.0, 3.0]], [[5.0, 7.0]]]))
    rm, rv = _t(np.zeros(1)), _t(np.ones(1))
    out = F.batch_norm(x, rm, rv, training=True, momentum=0.1, eps=0.0)
    expected = (np.array([[[1.0, 3.0]], [[5.0, 7.0]]]) - 4.0) / math.sqrt(5.0)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(rm.numpy(), [0.4], rtol=1e-12)
    np.testing.assert_allclose(rv.numpy(), [0.9 + 0.1 * 20.0 / 3.0], rtol=1e-12)
    # A second step keeps averaging: rm = 0.9 * 0.4 + 0.1 * 4.
    F.batch_norm(x, rm, rv, training=True, momentum=0.1, eps=0.0)
    np.testing.assert_allclose(rm.numpy(), [0.76], rtol=1e-12)


def test_batch_norm_eval_by_hand():
    x = _t(np.array([[2.0, -1.0], [4.0, 3.0]]))
    rm, rv = _t(np.array([1.0, -1.0])), _t(np.array([4.0, 0.25]))
    w, b = _t(np.array([2.0, 1.0])), _t(np.array([0.5, -0.5]))
    out = F.batch_norm(x, rm, rv, w, b, training=False, eps=0.0)
    # channel 0: (x - 1) / 2 * 2 + 0.5 ; channel 1: (x + 1) / 0.5 - 0.5
    np.testing.assert_allclose(out.numpy(), [[1.5, -0.5], [3.5, 7.5]], rtol=1e-12)
    np.testing.assert_array_equal(rm.numpy(), [1.0, -1.0])  # eval never touches the running statistics


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes_nc, affine=st.booleans(), seed=st.integers(0, 2**16))
def test_batch_norm_training_matches_reference(dtype, shape, affine, seed):
    rng = np.random.default_rng(seed)
    if int(np.prod(shape)) // shape[1] < 2:
        shape = (shape[0] + 1,) + shape[1:]
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    c = shape[1]
    w = rng.standard_normal(c).astype(dtype) if affine else None
    b = rng.standard_normal(c).astype(dtype) if affine else None
    rm0, rv0 = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    rm, rv = _t(rm0), _t(rv0)
    out = F.batch_norm(
        _t(x), rm, rv, None if w is None else _t(w), None if b is None else _t(b), training=True, momentum=0.3
    )
    mean, biased, unbiased = ref_channel_stats(x)
    assert out.dtype == dtype and rm.dtype == dtype and rv.dtype == dtype
    np.testing.assert_allclose(out.numpy(), ref_batch_norm(x, mean, biased, w, b, 1e-5), **TOL[dtype])
    np.testing.assert_allclose(rm.numpy(), 0.7 * rm0 + 0.3 * mean, **TOL[dtype])
    np.testing.assert_allclose(rv.numpy(), 0.7 * rv0 + 0.3 * unbiased, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes_nc, seed=st.integers(0, 2**16))
def test_batch_norm_eval_matches_reference(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    rm, rv = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    out = F.batch_norm(_t(x), _t(rm), _t(rv), _t(w), _t(b), training=False, eps=1e-3)
    assert out.dtype == dtype
    np.testing.assert_allclose(out.numpy(), ref_batch_norm(x, rm, rv, w, b, 1e-3), **TOL[dtype])


@pytest.mark.parametrize("training", [True, False])
@given(shape=shapes_nc, seed=st.integers(0, 2**16))
def test_batch_norm_gradcheck(training, shape, seed):
    rng = np.random.default_rng(seed)
    if int(np.prod(shape)) // shape[1] < 2:
        shape = (shape[0] + 1,) + shape[1:]
    c = shape[1]
    x = _t(rng.standard_normal(shape) * 2, requires_grad=True)
    w = _t(rng.standard_normal(c), requires_grad=True)
    b = _t(rng.standard_normal(c), requires_grad=True)
    rm, rv = _t(rng.standard_normal(c)), _t(rng.uniform(0.5, 2, c))

    def fn(x, w, b):
        # Fresh buffers per call: training updates them, and the check must see a pure function.
        return F.batch_norm(x, _t(rm.numpy()), _t(rv.numpy()), w, b, training=training, eps=1e-3)

    gradcheck(fn, [x, w, b], rng=rng)


def test_batch_norm_gradcheck_without_affine_and_without_running_stats():
    rng = np.random.default_rng(3)
    x = _t(rng.standard_normal((4, 3, 5)), requires_grad=True)
    gradcheck(lambda x: F.batch_norm(x, None, None, training=True), [x], rng=rng)
    # Only the weight requires grad: the kernel skips the others and the weight gradient is still right.
    w = _t(rng.standard_normal(3), requires_grad=True)
    gradcheck(lambda w: F.batch_norm(x.detach(), None, None, w, training=True), [w], rng=rng)


def test_batch_norm_training_sum_has_zero_input_gradient():
    # Without affine, every channel of the output sums to exactly 0 whatever x is, so d(sum)/dx = 0.
    x = _t(np.random.default_rng(0).standard_normal((3, 2, 4)), requires_grad=True)
    F.batch_norm(x, None, None, training=True).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 0.0, atol=1e-12)


def test_batch_norm_running_stats_keep_their_dtype_and_stay_off_the_graph():
    rng = np.random.default_rng(1)
    x = _t(rng.standard_normal((4, 2, 3)), requires_grad=True)  # float64 input
    rm, rv = _t(np.zeros(2, np.float32)), _t(np.ones(2, np.float32))
    out = F.batch_norm(x, rm, rv, training=True)
    assert rm.dtype == np.float32 and rv.dtype == np.float32
    assert not rm.requires_grad and rm.grad_fn is None
    mean, _, unbiased = ref_channel_stats(x.numpy())
    np.testing.assert_allclose(rm.numpy(), 0.1 * mean, rtol=1e-6)
    np.testing.assert_allclose(rv.numpy(), 0.9 + 0.1 * unbiased, rtol=1e-6)
    out.sum().backward()
    assert rm.grad is None


def test_batch_norm_updates_running_stats_under_no_grad():
    rm, rv = _t(np.zeros(1)), _t(np.ones(1))
    with segcore.no_grad():
        F.batch_norm(_t(np.array([[2.0], [4.0]])), rm, rv, training=True, momentum=0.5)
    np.testing.assert_allclose(rm.numpy(), [1.5])
    np.testing.assert_allclose(rv.numpy(), [0.5 + 0.5 * 2.0])


def test_batch_norm_errors():
    x = _t(np.zeros((2, 3, 4)))
    rm, rv = _t(np.zeros(3)), _t(np.ones(3))
    with pytest.raises(ValueError, match="momentum=None"):
        F.batch_norm(x, rm, rv, training=True, momentum=None)
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\], got 1.5"):
        F.batch_norm(x, rm, rv, training=True, momentum=1.5)
    with pytest.raises(ValueError, match="required when training=False"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match="both be given"):
        F.batch_norm(x, rm, None, training=True)
    with pytest.raises(ValueError, match=r"running_var must have shape \(3,\).*got \(4,\)"):
        F.batch_norm(x, rm, _t(np.ones(4)))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\).*got \(2,\)"):
        F.batch_norm(x, rm, rv, _t(np.ones(2)))
    with pytest.raises(TypeError, match="bias has dtype float32 but input has dtype float64"):
        F.batch_norm(x, rm, rv, None, _t(np.ones(3, np.float32)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(_t(np.zeros((1, 3))), None, None, training=True)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        F.batch_norm(_t(np.zeros(3)), rm, rv)
    with pytest.raises(TypeError, match="floating-point"):
        F.batch_norm(_t(np.zeros((2, 3), np.int64)), rm, rv)
    with pytest.raises(ValueError, match="eps must be a non-negative number, got -1"):
        F.batch_norm(x, rm, rv, eps=-1)


# -- group_norm -----------------------------------------------------------------------------------------------
group_shapes = st.tuples(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.lists(st.integers(1, 4), min_size=0, max_size=2)
)


@pytest.mark.parametrize("dtype", DTYPES)
@given(spec=group_shapes, affine=st.booleans(), seed=st.integers(0, 2**16))
def test_group_norm_matches_reference(dtype, spec, affine, seed):
    n, groups, per, spatial = spec
    rng = np.random.default_rng(seed)
    c = groups * per
    x = (rng.standard_normal((n, c, *spatial)) * 2 - 1).astype(dtype)
    w = rng.standard_normal(c).astype(dtype) if affine else None
    b = rng.standard_normal(c).astype(dtype) if affine else None
    out = F.group_norm(_t(x), groups, None if w is None else _t(w), None if b is None else _t(b), eps=1e-4)
    assert out.dtype == dtype
    np.testing.assert_allclose(out.numpy(), ref_group_norm(x, groups, w, b, 1e-4), **TOL[dtype])


@given(spec=group_shapes, seed=st.integers(0, 2**16))
def test_group_norm_gradcheck(spec, seed):
    n, groups, per, spatial = spec
    rng = np.random.default_rng(seed)
    c = groups * per
    x = _t(rng.standard_normal((n, c, *spatial)), requires_grad=True)
    w = _t(rng.standard_normal(c), requires_grad=True)
    b = _t(rng.standard_normal(c), requires_grad=True)
    gradcheck(lambda x, w, b: F.group_norm(x, groups, w, b, eps=1e-3), [x, w, b], rng=rng)


def test_group_norm_by_hand_and_errors():
    # Two channels (0, 2) and (1, 1). Two groups: (0, 2) -> (-1, 1); (1, 1) has zero variance -> (0, 0)
    # (eps keeps it finite). One group: mean 1, var 0.5 over all four values.
    x = _t(np.array([[[0.0, 2.0], [1.0, 1.0]]]))
    np.testing.assert_allclose(F.group_norm(x, 2, eps=1e-12).numpy(), [[[-1.0, 1.0], [0.0, 0.0]]], atol=1e-9)
    s = math.sqrt(2.0)
    np.testing.assert_allclose(F.group_norm(x, 1, eps=0.0).numpy(), [[[-s, s], [0.0, 0.0]]], rtol=1e-12)
    with pytest.raises(ValueError, match="number of channels 2 .* not divisible by num_groups=3"):
        F.group_norm(x, 3)
    with pytest.raises(ValueError, match="num_groups must be a positive int, got 0"):
        F.group_norm(x, 0)
    with pytest.raises(ValueError, match=r"weight must have shape \(2,\)"):
        F.group_norm(x, 1, _t(np.ones(3)))


# -- layer_norm -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    data=st.data(),
    affine=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_layer_norm_matches_reference(dtype, shape, data, affine, seed):
    k = data.draw(st.integers(1, len(shape)), label="normalized_ndim")
    rng = np.random.default_rng(seed)
    normalized = tuple(shape[len(shape) - k :])
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    w = rng.standard_normal(normalized).astype(dtype) if affine else None
    b = rng.standard_normal(normalized).astype(dtype) if affine else None
    arg = normalized[0] if k == 1 and data.draw(st.booleans(), label="int shape") else list(normalized)
    out = F.layer_norm(_t(x), arg, None if w is None else _t(w), None if b is None else _t(b), eps=1e-4)
    assert out.dtype == dtype
    np.testing.assert_allclose(out.numpy(), ref_layer_norm(x, k, w, b, 1e-4), **TOL[dtype])


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data(), seed=st.integers(0, 2**16))
def test_layer_norm_gradcheck(shape, data, seed):
    k = data.draw(st.integers(1, len(shape)), label="normalized_ndim")
    rng = np.random.default_rng(seed)
    normalized = tuple(shape[len(shape) - k :])
    x = _t(rng.standard_normal(shape), requires_grad=True)
    w = _t(rng.standard_normal(normalized), requires_grad=True)
    b = _t(rng.standard_normal(normalized), requires_grad=True)
    gradcheck(lambda x, w, b: F.layer_norm(x, normalized, w, b, eps=1e-3), [x, w, b], rng=rng)
    gradcheck(lambda x: F.layer_norm(x, normalized, eps=1e-3), [x], rng=rng)


def test_layer_norm_errors():
    x = _t(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"input shape \(2, 3, 4\) does not end in normalized_shape=\(3,\)"):
        F.layer_norm(x, 3)
    with pytest.raises(ValueError, match=r"weight must have shape \(3, 4\)"):
        F.layer_norm(x, (3, 4), _t(np.ones(4)))
    with pytest.raises(ValueError, match="normalized_shape must be an int or a sequence of ints, got 'a'"):
        F.layer_norm(x, "a")
    with pytest.raises(ValueError, match="at least 4 dimensions"):
        F.layer_norm(x, (1, 2, 3, 4))


