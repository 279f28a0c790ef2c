"""linear(input, weight, bias): values against an explicit sum, gradients by hand and by central differences."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import segcore
from segcore import functional as F
from segcore.testing import gradcheck


def leaf(array, requires_grad=True):
    return segcore.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


def linear_reference(x, w, b):
    out = np.zeros(x.shape[:-1] + (w.shape[0],))
    for lead in itertools.product(*(range(n) for n in x.shape[:-1])):
        for o in range(w.shape[0]):
            out[lead + (o,)] = sum(x[lead + (i,)] * w[o, i] for i in range(w.shape[1])) + (0 if b is None else b[o])
    return out


@given(
    lead=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3),
    in_features=st.integers(1, 5),
    out_features=st.integers(1, 5),
    with_bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_forward_and_gradients(lead, in_features, out_features, with_bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lead + (in_features,))
    w = rng.standard_normal((out_features, in_features))
    b = rng.standard_normal(out_features) if with_bias else None
    expected = linear_reference(x, w, b)
    as32 = lambda a: None if a is None else segcore.tensor(a.astype(np.float32))  # noqa: E731
    out = F.linear(as32(x), as32(w), as32(b))
    assert out.dtype == np.float32 and out.shape == lead + (out_features,)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    inputs = [leaf(x), leaf(w)] + ([leaf(b)] if with_bias else [])
    gradcheck(lambda *ts: F.linear(*ts), inputs, rng=rng)


def test_linear_gradients_by_hand():
    x = leaf([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    w = leaf([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = leaf([0.5, -0.5, 1.0])
    out = F.linear(x, w, b)
    np.testing.assert_array_equal(out.numpy(), [[1.5, 1.5, 4.0], [3.5, 3.5, 8.0], [5.5, 5.5, 12.0]])
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((3, 2), 2.0))  # column sums of w
    np.testing.assert_array_equal(w.grad.numpy(), np.tile([9.0, 12.0], (3, 1)))  # column sums of x
    np.testing.assert_array_equal(b.grad.numpy(), [3.0, 3.0, 3.0])


def test_linear_only_weight_requires_grad():
    x = leaf([[1.0, 2.0]], requires_grad=False)
    w = leaf([[3.0, 4.0]])
    F.linear(x, w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [[1.0, 2.0]])
    assert x.grad is None


def test_linear_errors():
    x = segcore.tensor(np.zeros((2, 3), np.float32))
    w = segcore.tensor(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"input shape \(2, 3\) must end in in_features = 2"):
        F.linear(x, segcore.tensor(np.zeros((4, 2), np.float32)))
    with pytest.raises(ValueError, match=r"weight must be 2-D"):
        F.linear(x, segcore.tensor(np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\) to match weight \(4, 3\), got \(3,\)"):
        F.linear(x, w, segcore.tensor(np.zeros(3, np.float32)))
    with pytest.raises(TypeError, match=r"share one floating dtype, got input=float32, weight=float64"):
        F.linear(x, segcore.tensor(np.zeros((4, 3))))
    with pytest.raises(TypeError, match=r"linear: weight must be a Tensor, got ndarray"):
        F.linear(x, np.zeros((4, 3)))
