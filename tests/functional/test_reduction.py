"""Reductions: sum/mean/max/min/argmax/argmin against NumPy and explicit loops, gradients by hand and by
central differences, torch's dim/keepdim conventions and tie rules."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import segcore
from segcore import functional as F
from segcore.testing import gradcheck

seeds = st.integers(0, 2**32 - 1)
shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5)


def leaf(array, requires_grad=True):
    return segcore.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


def distinct_values(rng, shape):
    """Values at least 1 apart, so no tie and no finite-difference step changes which element is extreme."""
    size = int(np.prod(shape))
    return rng.permutation(size).reshape(shape).astype(np.float64) + rng.uniform(0, 0.1)


@st.composite
def shape_and_dims(draw):
    shape = draw(shapes)
    ndim = len(shape)
    dims = draw(st.lists(st.integers(-ndim, ndim - 1), unique_by=lambda d: d % ndim, max_size=ndim))
    dim = None if draw(st.booleans()) else tuple(dims) if len(dims) != 1 else dims[0]
    return shape, dim


@pytest.mark.parametrize("name", ["sum", "mean"])
@given(case=shape_and_dims(), keepdim=st.booleans(), seed=seeds)
def test_sum_mean_forward_and_gradient(name, case, keepdim, seed):
    shape, dim = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    op = getattr(F, name)
    # torch reads an empty dim tuple as "every dimension", as None.
    axis = dim if dim is None or isinstance(dim, int) else tuple(dim) or None
    expected = getattr(np, name)(x, axis=axis, keepdims=keepdim)
    out = op(segcore.tensor(x.astype(np.float32)), dim, keepdim)
    assert out.dtype == np.float32 and out.shape == np.shape(expected)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    gradcheck(lambda t: op(t, dim, keepdim), [leaf(x)], rng=rng)


def test_mean_gradient_by_hand_and_integer_input_rejected():
    x = leaf(np.arange(6.0).reshape(2, 3))
    x.mean(dim=1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 3), 1 / 3))
    assert F.sum(x, dim=()).item() == 15.0  # torch: an empty dim list reduces everything
    assert F.mean(x, dim=[], keepdim=True).shape == (1, 1)
    with pytest.raises(TypeError, match=r"mean: input must be floating point, got dtype int64"):
        F.mean(segcore.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"dim=2 is out of range for a tensor with 2 dimensions"):
        F.sum(x, dim=2)


def _loop_extremum(x, dim, largest):
    """max/min and the first index along ``dim`` by explicit iteration over every other position."""
    moved = np.moveaxis(x, dim, -1)
    values = np.empty(moved.shape[:-1])
    indices = np.empty(moved.shape[:-1], dtype=np.int64)
    for pos in itertools.product(*(range(n) for n in moved.shape[:-1])):
        row = moved[pos]
        best = 0
        for i in range(1, len(row)):
            if (row[i] > row[best]) if largest else (row[i] < row[best]):
                best = i
        values[pos], indices[pos] = row[best], best
    return values, indices


@pytest.mark.parametrize("name", ["max", "min"])
@given(shape=shapes, data=st.data(), keepdim=st.booleans(), seed=seeds)
def test_max_min_along_dim_values_indices_and_gradient(name, shape, data, keepdim, seed):
    rng = np.random.default_rng(seed)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    # Small integers make ties likely: indices must be the first occurrence, like the loop.
    x = rng.integers(0, 3, shape).astype(np.float32)
    values, indices = _loop_extremum(x, dim % len(shape), name == "max")
    if keepdim:
        values, indices = np.expand_dims(values, dim), np.expand_dims(indices, dim)
    result = getattr(F, name)(segcore.tensor(x), dim, keepdim)
    assert result.values.dtype == np.float32 and result.indices.dtype == np.int64
    np.testing.assert_array_equal(result.values.numpy(), values)
    np.testing.assert_array_equal(result.indices.numpy(), indices)
    assert not result.indices.requires_grad
    # The gradient goes to the returned index only, even where there are ties.
    t = segcore.tensor(x.astype(np.float64), requires_grad=True)
    out = getattr(t, name)(dim=dim, keepdim=keepdim)
    weight = rng.standard_normal(out.values.shape)
    (out.values * segcore.tensor(weight)).sum().backward()
    expected = np.zeros(shape)
    idx = indices if keepdim else np.expand_dims(indices, dim)
    np.put_along_axis(expected, idx, weight if keepdim else np.expand_dims(weight, dim), axis=dim)
    np.testing.assert_allclose(t.grad.numpy(), expected)
    gradcheck(lambda u: getattr(F, name)(u, dim, keepdim).values, [leaf(distinct_values(rng, shape))], rng=rng)


@pytest.mark.parametrize("name", ["max", "min"])
@given(shape=shapes, seed=seeds)
def test_max_min_over_all_elements(name, shape, seed):
    rng = np.random.default_rng(seed)
    x = distinct_values(rng, shape)
    out = getattr(F, name)(segcore.tensor(x.astype(np.float32)))
    assert out.shape == () and out.dtype == np.float32
    assert out.item() == getattr(np, name)(x.astype(np.float32))
    gradcheck(getattr(F, name), [leaf(x)], rng=rng)


def test_max_over_all_elements_shares_ties_evenly():
    x = leaf([[1.0, 3.0, 3.0], [0.0, 3.0, 2.0]])
    F.max(x).backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 1 / 3, 1 / 3], [0, 1 / 3, 0]])
    y = leaf([2.0, -1.0, -1.0])
    (y.min() * 4).backward()
    np.testing.assert_allclose(y.grad.numpy(), [0.0, 2.0, 2.0])


def test_max_propagates_nan_and_sends_gradient_to_it():
    x = leaf([1.0, np.nan, 3.0])
    out = F.max(x)
    assert np.isnan(out.item())
    out.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 0.0])


def test_max_with_tensor_is_elementwise_maximum():
    a, b = leaf([1.0, 5.0]), leaf([3.0, 2.0])
    out = F.max(a, b)
    np.testing.assert_array_equal(out.numpy(), [3.0, 5.0])
    out.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, 1.0])
    np.testing.assert_array_equal(F.min(a, b).numpy(), [1.0, 2.0])


def test_max_min_argument_errors():
    x = segcore.tensor([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"keepdim=True needs a dim"):
        F.max(x, keepdim=True)
    with pytest.raises(TypeError, match=r"dim must be an int.*\(0, 1\)"):
        F.min(x, dim=(0, 1))
    with pytest.raises(ValueError, match=r"empty tensor of shape \(0, 3\)"):
        F.max(segcore.tensor(np.zeros((0, 3))))
    with pytest.raises(ValueError, match=r"dim=3 is out of range"):
        x.max(3)


def test_max_of_zero_dim_tensor_with_dim():
    values, indices = F.max(segcore.tensor(2.5), 0)
    assert values.item() == 2.5 and indices.item() == 0 and indices.dtype == np.int64


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@given(shape=shapes, data=st.data(), keepdim=st.booleans(), seed=seeds)
def test_argmax_argmin(name, shape, data, keepdim, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, shape).astype(np.float32)
    largest = name == "argmax"
    dim = data.draw(st.none() | st.integers(-len(shape), len(shape) - 1), label="dim")
    out = getattr(F, name)(segcore.tensor(x), dim, keepdim)
    assert out.dtype == np.int64 and not out.requires_grad
    if dim is None:
        _, flat = _loop_extremum(x.reshape(-1), 0, largest)
        assert out.shape == ((1,) * len(shape) if keepdim else ())
        assert out.numpy().reshape(()) == flat
    else:
        _, expected = _loop_extremum(x, dim % len(shape), largest)
        if keepdim:
            expected = np.expand_dims(expected, dim)
        np.testing.assert_array_equal(out.numpy(), expected)
        np.testing.assert_array_equal(getattr(segcore.tensor(x), name)(dim, keepdim).numpy(), expected)


def test_argmax_integer_input_and_errors():
    x = segcore.tensor([[3, 9, 9], [7, 1, 7]])
    assert F.argmax(x).item() == 1
    np.testing.assert_array_equal(F.argmin(x, dim=1).numpy(), [0, 1])
    with pytest.raises(TypeError, match=r"argmax: dim must be an int or None, got \(0, 1\)"):
        F.argmax(x, dim=(0, 1))
    with pytest.raises(ValueError, match=r"argmin: cannot reduce an empty tensor"):
        F.argmin(segcore.tensor(np.zeros((2, 0))))
