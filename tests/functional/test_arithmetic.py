"""Element-wise arithmetic, matmul and where: values against NumPy, gradients against hand-derived partials
and central differences, broadcasting in every binary op, scalar operands on both sides, dtype rules."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import segcore
from segcore import functional as F
from segcore.testing import gradcheck

seeds = st.integers(0, 2**32 - 1)
pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=4)
triples = hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, min_side=1, max_side=4)


def leaf(array, requires_grad=True):
    return segcore.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


def reduce_to(grad, shape):
    """Sum a full-shape gradient back to a broadcast input's shape (written independently of the engine)."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def normal(rng, shape):
    return rng.standard_normal(shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


def away_from_zero(rng, shape):
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 2.0, shape)


def grid_low(rng, shape):
    # a - b = k - 0.4 for integer k is never 0: maximum/minimum stay away from their kink.
    return rng.integers(-3, 4, shape) + 0.3


def grid_high(rng, shape):
    return rng.integers(-3, 4, shape) + 0.7


# name: (op, numpy forward, partial d/da, partial d/db, sampler for a, sampler for b)
BINARY = {
    "add": (F.add, np.add, lambda a, b: np.ones_like(a * b), lambda a, b: np.ones_like(a * b), normal, normal),
    "sub": (F.sub, np.subtract, lambda a, b: np.ones_like(a * b), lambda a, b: -np.ones_like(a * b), normal, normal),
    "mul": (F.mul, np.multiply, lambda a, b: b + 0 * a, lambda a, b: a + 0 * b, normal, normal),
    "div": (F.div, np.divide, lambda a, b: 1 / b + 0 * a, lambda a, b: -a / b**2, normal, away_from_zero),
    "pow": (F.pow, np.power, lambda a, b: b * a ** (b - 1), lambda a, b: a**b * np.log(a), positive, normal),
    "maximum": (F.maximum, np.maximum, lambda a, b: (a > b) * 1.0, lambda a, b: (b > a) * 1.0, grid_low, grid_high),
    "minimum": (F.minimum, np.minimum, lambda a, b: (a < b) * 1.0, lambda a, b: (b < a) * 1.0, grid_low, grid_high),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(shapes=pairs, seed=seeds)
def test_binary_forward_float32_matches_numpy(name, shapes, seed):
    op, ref, _, _, sample_a, sample_b = BINARY[name]
    rng = np.random.default_rng(seed)
    shape_a, shape_b = shapes.input_shapes
    a = sample_a(rng, shape_a).astype(np.float32)
    b = sample_b(rng, shape_b).astype(np.float32)
    out = op(segcore.tensor(a), segcore.tensor(b))
    assert out.dtype == np.float32
    assert out.shape == shapes.result_shape
    np.testing.assert_allclose(out.numpy(), ref(a, b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(BINARY))
@given(shapes=pairs, seed=seeds)
def test_binary_broadcast_gradients_reduce_to_input_shapes(name, shapes, seed):
    op, _, da, db, sample_a, sample_b = BINARY[name]
    rng = np.random.default_rng(seed)
    shape_a, shape_b = shapes.input_shapes
    a_np, b_np = sample_a(rng, shape_a), sample_b(rng, shape_b)
    weight = rng.standard_normal(shapes.result_shape)
    a, b = leaf(a_np), leaf(b_np)
    (op(a, b) * leaf(weight, False)).sum().backward()
    assert a.grad.shape == shape_a and b.grad.shape == shape_b
    a_full, b_full = np.broadcast_arrays(a_np, b_np)
    np.testing.assert_allclose(a.grad.numpy(), reduce_to(weight * da(a_full, b_full), shape_a), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), reduce_to(weight * db(a_full, b_full), shape_b), rtol=1e-10, atol=1e-12)
    gradcheck(op, [leaf(a_np), leaf(b_np)], rng=rng)


@pytest.mark.parametrize(
    "expression, expected, derivative",
    [
        (lambda t: 2 * t, lambda x: 2 * x, lambda x: 2 + 0 * x),
        (lambda t: t * 2, lambda x: 2 * x, lambda x: 2 + 0 * x),
        (lambda t: t / 3, lambda x: x / 3, lambda x: 1 / 3 + 0 * x),
        (lambda t: 3 / t, lambda x: 3 / x, lambda x: -3 / x**2),
        (lambda t: 1 - t, lambda x: 1 - x, lambda x: -1 + 0 * x),
        (lambda t: t - 1, lambda x: x - 1, lambda x: 1 + 0 * x),
        (lambda t: 1.5 + t, lambda x: 1.5 + x, lambda x: 1 + 0 * x),
        (lambda t: t**2, lambda x: x**2, lambda x: 2 * x),
        (lambda t: 2**t, lambda x: 2**x, lambda x: 2**x * math.log(2)),
        (lambda t: -t, lambda x: -x, lambda x: -1 + 0 * x),
        (lambda t: np.float32(2) * t, lambda x: 2 * x, lambda x: 2 + 0 * x),
    ],
)
def test_scalar_operands_on_both_sides_keep_float32(expression, expected, derivative):
    x = np.array([0.5, 1.25, 2.0, 3.5], dtype=np.float32)
    t = segcore.tensor(x, requires_grad=True)
    out = expression(t)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), expected(x.astype(np.float64)), rtol=1e-6)
    out.sum().backward()
    assert t.grad.dtype == np.float32
    np.testing.assert_allclose(t.grad.numpy(), derivative(x.astype(np.float64)), rtol=1e-5)


def test_dtype_promotion_follows_torch():
    f32 = segcore.tensor([1.0, 2.0])
    f64 = segcore.tensor(np.array([1.0, 2.0]))
    i64 = segcore.tensor([1, 2])
    mask = segcore.tensor(np.array([True, False]))
    assert (f32 * 2.0).dtype == np.float32
    assert (f32 + np.float64(1.0)).dtype == np.float32  # NumPy scalars are weak like Python scalars
    assert (f32 + f64).dtype == np.float64
    assert (f64 * 2).dtype == np.float64
    assert (i64 + f32).dtype == np.float32  # NumPy alone would give float64
    assert (i64 * 2.5).dtype == np.float32
    np.testing.assert_array_equal((i64 * 2.5).numpy(), [2.5, 5.0])
    assert (i64 + 2).dtype == np.int64
    quotient = i64 / i64
    assert quotient.dtype == np.float32 and quotient.tolist() == [1.0, 1.0]
    shifted = mask + 2  # 2 must not become True
    assert shifted.dtype == np.int64 and shifted.tolist() == [3, 2]
    assert F.exp(i64).dtype == np.float32
    np.testing.assert_allclose(F.exp(i64).numpy(), np.exp([1.0, 2.0]), rtol=1e-6)
    clamped = F.clamp(i64, min=1.5)
    assert clamped.dtype == np.float32 and clamped.tolist() == [1.5, 2.0]
    assert F.where(mask, 1, 0).dtype == np.int64
    assert F.where(mask, 1.0, 0).dtype == np.float32
    assert F.where(mask, i64, 0.5).tolist() == [1.0, 0.5]


def _matmul_reference(a, b):
    """Matrix product by broadcasting and summing, independent of np.matmul."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    out = (a2[..., :, :, None] * b2[..., None, :, :]).sum(axis=-2)
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


@st.composite
def matmul_shapes(draw):
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, min_side=1, max_side=3))
    batch_a, batch_b = batch.input_shapes
    vector_a, vector_b = draw(st.booleans()), draw(st.booleans())
    shape_a = (k,) if vector_a else batch_a + (m, k)
    shape_b = (k,) if vector_b else batch_b + (k, n)
    return shape_a, shape_b


@given(shapes=matmul_shapes(), seed=seeds)
def test_matmul_batch_broadcast_forward_and_gradients(shapes, seed):
    rng = np.random.default_rng(seed)
    shape_a, shape_b = shapes
    a_np, b_np = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    expected = _matmul_reference(a_np, b_np)
    out32 = F.matmul(segcore.tensor(a_np.astype(np.float32)), segcore.tensor(b_np.astype(np.float32)))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32.numpy(), expected, rtol=1e-5, atol=1e-5)
    a, b = leaf(a_np), leaf(b_np)
    out = a @ b
    assert out.shape == expected.shape
    out.sum().backward()
    assert a.grad.shape == shape_a and b.grad.shape == shape_b
    gradcheck(F.matmul, [leaf(a_np), leaf(b_np)], rng=rng)


def test_matmul_vector_gradients_by_hand():
    a = leaf([1.0, 2.0, 3.0])
    b = leaf([4.0, 5.0, 6.0])
    out = a @ b
    assert out.shape == () and out.item() == 32.0
    out.backward()
    np.testing.assert_array_equal(a.grad.numpy(), [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 2.0, 3.0])


def test_matmul_rejects_bad_operands():
    with pytest.raises(ValueError, match=r"do not align"):
        F.matmul(segcore.tensor(np.zeros((2, 3))), segcore.tensor(np.zeros((4, 2))))
    with pytest.raises(TypeError, match=r"same dtype.*float32.*float64"):
        F.matmul(segcore.tensor(np.zeros((2, 3), np.float32)), segcore.tensor(np.zeros((3, 2))))
    with pytest.raises(ValueError, match=r"at least 1 dimension"):
        F.matmul(segcore.tensor(2.0), segcore.tensor([1.0]))
    with pytest.raises(TypeError, match=r"other must be a Tensor"):
        F.matmul(segcore.tensor([1.0]), [1.0])


@given(shapes=triples, seed=seeds)
def test_where_broadcasts_condition_and_both_branches(shapes, seed):
    rng = np.random.default_rng(seed)
    shape_c, shape_a, shape_b = shapes.input_shapes
    cond = rng.random(shape_c) < 0.5
    a_np, b_np = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    condition = segcore.tensor(cond)
    a, b = leaf(a_np), leaf(b_np)
    out = F.where(condition, a, b)
    np.testing.assert_array_equal(out.numpy(), np.where(cond, a_np, b_np))
    weight = rng.standard_normal(shapes.result_shape)
    (out * leaf(weight, False)).sum().backward()
    full_cond = np.broadcast_to(cond, shapes.result_shape)
    np.testing.assert_allclose(a.grad.numpy(), reduce_to(np.where(full_cond, weight, 0.0), shape_a), atol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), reduce_to(np.where(full_cond, 0.0, weight), shape_b), atol=1e-12)
    gradcheck(lambda x, y: F.where(condition, x, y), [leaf(a_np), leaf(b_np)], rng=rng)


def test_where_rejects_non_boolean_condition():
    with pytest.raises(TypeError, match=r"condition must have dtype bool, got float32"):
        F.where(segcore.tensor([1.0]), segcore.tensor([1.0]), 0.0)


UNARY = {
    "exp": (F.exp, np.exp, normal),
    "log": (F.log, np.log, positive),
    "sqrt": (F.sqrt, np.sqrt, positive),
    "abs": (F.abs, np.abs, away_from_zero),
    "neg": (F.neg, np.negative, normal),
    "clamp": (lambda x: F.clamp(x, min=-0.5, max=0.5), lambda x: np.clip(x, -0.5, 0.5), grid_low),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=5), seed=seeds)
def test_unary_forward_and_gradient(name, shape, seed):
    op, ref, sample = UNARY[name]
    rng = np.random.default_rng(seed)
    x = sample(rng, shape)
    if name == "clamp":
        x = x / 4  # (k + 0.3) / 4 for k in -3..3: on both sides of the bounds, none within 0.07 of them
    out32 = op(segcore.tensor(x.astype(np.float32)))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32.numpy(), ref(x.astype(np.float32)), rtol=1e-6, atol=1e-7)
    gradcheck(op, [leaf(x)], rng=rng)


def test_clamp_gradient_passes_inside_closed_interval():
    x = leaf([-2.0, -1.0, 0.0, 1.0, 2.0])
    F.clamp(x, min=-1.0, max=1.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"at least one of min and max"):
        F.clamp(x)
    with pytest.raises(TypeError, match=r"clamp: min must be a real number, got 'a'"):
        F.clamp(x, min="a")


def test_maximum_and_minimum_split_ties_evenly():
    a, b = leaf([1.0, 2.0, 3.0]), leaf([1.0, 0.0, 4.0])
    F.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(b.grad.numpy(), [0.5, 0.0, 1.0])
    a, b = leaf([1.0, 2.0, 3.0]), leaf([1.0, 0.0, 4.0])
    F.minimum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(b.grad.numpy(), [0.5, 1.0, 0.0])


def test_pow_gradients_at_zero_follow_torch():
    # d/da a^b = b a^(b-1) is 0 * inf at a = b = 0: torch defines it as 0; d/db at a = 0 is 0, not nan.
    a, b = leaf([0.0, 0.0, 2.0]), leaf([0.0, 2.0, 3.0])
    F.pow(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, 0.0, 12.0])
    np.testing.assert_allclose(b.grad.numpy(), [0.0, 0.0, 8.0 * math.log(2.0)])


def test_add_and_sub_alpha():
    a, b = leaf([1.0, 2.0]), leaf([10.0, 20.0])
    out = F.add(a, b, alpha=0.5) - F.sub(a, b, alpha=2)
    np.testing.assert_allclose(out.numpy(), [(1 + 5) - (1 - 20), (2 + 10) - (2 - 40)])
    out.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [0.0, 0.0])
    np.testing.assert_allclose(b.grad.numpy(), [2.5, 2.5])


def test_binary_op_rejects_non_numbers():
    with pytest.raises(TypeError, match=r"other must be a Tensor or a number, got str"):
        segcore.tensor([1.0]) + "1"
    with pytest.raises(TypeError, match=r"alpha must be a real number"):
        F.add(segcore.tensor([1.0]), 1.0, alpha=None)


def test_float64_stays_float64():
    x = leaf([0.25, 4.0])
    out = F.sqrt(x) * 3 + F.log(x) - 1 / x
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), np.sqrt([0.25, 4.0]) * 3 + np.log([0.25, 4.0]) - 1 / np.array([0.25, 4.0]))


def test_comparisons_broadcast_and_stay_off_the_graph():
    a = leaf([[1.0], [2.0], [3.0]])
    b = leaf([2.0, 3.0])
    expected = {
        "__lt__": [[True, True], [False, True], [False, False]],
        "__le__": [[True, True], [True, True], [False, True]],
        "__gt__": [[False, False], [False, False], [True, False]],
        "__ge__": [[False, False], [True, False], [True, True]],
        "__eq__": [[False, False], [True, False], [False, True]],
        "__ne__": [[True, True], [False, True], [True, False]],
    }
    for name, values in expected.items():
        out = getattr(a, name)(b)
        assert out.dtype == np.bool_ and not out.requires_grad and out.grad_fn is None
        np.testing.assert_array_equal(out.numpy(), values)
    mask = segcore.tensor(np.array([True, False]))
    assert (mask == 2).tolist() == [False, False]  # 2 is not True
    assert (mask == 1).tolist() == [True, False]
    assert (a > 1.5).numpy().ravel().tolist() == [False, True, True]
