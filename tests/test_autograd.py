"""The autograd engine: graph walk order, gradient accumulation, graph freeing, grad mode, backends."""

import sys

import numpy as np
import pytest

import segcore
from segcore import functional as F
from segcore.autograd import Function
from segcore.backend import Backend, _load_numpy_namespace, _unregister_backend, register_backend


def leaf(values):
    return segcore.tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


def test_long_chain_needs_no_recursion():
    a = leaf([1.0, 2.0])
    x = a
    assert sys.getrecursionlimit() < 5000  # a recursive walk over this chain would overflow the stack
    for _ in range(5000):
        x = x * 1.0001
    x.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [1.0001**5000] * 2, rtol=1e-9)


def test_reused_tensor_accumulates_before_its_producer_runs():
    a = leaf([1.0, -2.0, 3.0])
    b = a + a
    c = b * b
    c.sum().backward()
    # c = 4 a^2, so dc/da = 8 a; a wrong walk order would propagate b's gradient twice or only once.
    np.testing.assert_array_equal(a.grad.numpy(), [8.0, -16.0, 24.0])


def test_diamond_graph():
    a = leaf([2.0, 3.0])
    left = a * 3
    right = F.exp(a)
    top = left * right  # 3 a e^a -> derivative 3 e^a (1 + a)
    (top + a).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), 3 * np.exp([2.0, 3.0]) * (1 + np.array([2.0, 3.0])) + 1)


def test_diamond_with_unequal_path_lengths():
    a = leaf([1.5])
    long = a
    for _ in range(5):
        long = long + 1.0  # a + 5
    out = long * a  # a^2 + 5a -> 2a + 5
    out.backward(segcore.tensor(np.array([1.0])))
    np.testing.assert_allclose(a.grad.numpy(), [2 * 1.5 + 5])


def test_no_grad_records_nothing():
    a = leaf([1.0, 2.0])
    with segcore.no_grad():
        b = a * 2
        assert not segcore.is_grad_enabled()
        with segcore.enable_grad():
            c = a * 2
    assert segcore.is_grad_enabled()
    assert b.requires_grad is False and b.grad_fn is None and b._node is None
    assert c.requires_grad and c.grad_fn == "Mul"
    with pytest.raises(RuntimeError, match=r"does not require grad"):
        b.sum().backward()


def test_no_grad_as_decorator():
    @segcore.no_grad()
    def double(t):
        return t * 2

    out = double(leaf([1.0]))
    assert not out.requires_grad and out.grad_fn is None


def test_detach_cuts_the_graph_and_shares_data():
    a = leaf([1.0, 2.0])
    b = a * 3
    d = b.detach()
    assert d.is_leaf and not d.requires_grad and d.data is b.data
    (b * d).sum().backward()  # d is a constant: d(b * d)/da = 3 * d
    np.testing.assert_array_equal(a.grad.numpy(), [9.0, 18.0])


def test_requires_grad_on_non_leaf_is_an_error():
    b = leaf([1.0]) * 2
    with pytest.raises(RuntimeError, match=r"only be changed on leaf tensors"):
        b.requires_grad_(False)
    with pytest.raises(TypeError, match=r"needs a floating-point tensor, got dtype int64"):
        segcore.tensor([1, 2]).requires_grad_()


def test_backward_twice_needs_retain_graph():
    a = leaf([1.0, 2.0])
    out = (a * a).sum()
    out.backward(retain_graph=True)
    out.backward()
    # Two passes accumulate: 2 * 2a.
    np.testing.assert_array_equal(a.grad.numpy(), [4.0, 8.0])
    with pytest.raises(RuntimeError, match=r"backward through the graph a second time.*retain_graph=True"):
        out.backward()


def test_gradients_accumulate_across_backward_calls_until_zeroed():
    a = leaf([1.0, 2.0])
    (a * 3).sum().backward()
    (a * a).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [3.0 + 2.0, 3.0 + 4.0])
    a.zero_grad()
    (a * 5).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [5.0, 5.0])


def test_saved_arrays_are_released_after_backward():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    product = a * b
    node = product._node
    assert len(node.saved) == 2 and all(s is not None for s in node.saved)
    product.sum().backward()
    assert node.saved == ()


def test_saved_arrays_kept_with_retain_graph():
    a = leaf([1.0, 2.0])
    product = a * a
    node = product._node
    product.sum().backward(retain_graph=True)
    assert len(node.saved) == 2


def test_leaf_grad_does_not_alias_the_incoming_gradient():
    a = leaf([1.0, 2.0])
    seed = segcore.tensor(np.array([1.0, 1.0]))
    a.backward(seed)
    a.backward(seed)  # accumulation must not have written into `seed`
    np.testing.assert_array_equal(seed.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 2.0])


def test_backward_gradient_shape_is_checked():
    out = leaf([1.0, 2.0]) * 2
    with pytest.raises(ValueError, match=r"gradient has shape \(3,\), expected \(2,\)"):
        out.backward(np.ones(3))
    with pytest.raises(RuntimeError, match=r"needs a one-element tensor, got shape \(2,\)"):
        out.backward()


class MinMax(Function):
    """Two outputs: element-wise min and max of a pair (used to test multi-output nodes)."""

    @staticmethod
    def forward(ctx, a, b):
        xp = ctx.xp
        ctx.save_for_backward(a < b)
        return xp.minimum(a, b), xp.maximum(a, b)

    @staticmethod
    def backward(ctx, g_min, g_max):
        xp = ctx.xp
        (a_smaller,) = ctx.saved
        return xp.where(a_smaller, g_min, g_max), xp.where(a_smaller, g_max, g_min)


def test_multi_output_function_with_one_output_used():
    a, b = leaf([1.0, 5.0]), leaf([3.0, 2.0])
    low, high = MinMax.apply(a, b)
    (high * 10).sum().backward()
    # The unused output contributes zeros.
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, 10.0])
    np.testing.assert_array_equal(b.grad.numpy(), [10.0, 0.0])


def test_multi_output_function_both_outputs_used_once_each():
    a, b = leaf([1.0, 5.0]), leaf([3.0, 2.0])
    low, high = MinMax.apply(a, b)
    (low * 2 + high * 7).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 7.0])
    np.testing.assert_array_equal(b.grad.numpy(), [7.0, 2.0])


def test_integer_outputs_never_require_grad():
    values, indices = F.max(leaf([[1.0, 3.0]]), dim=1)
    assert values.requires_grad and not indices.requires_grad and indices.grad_fn is None


@pytest.fixture
def second_backend():
    backend = Backend("numpy-copy", _load_numpy_namespace)
    register_backend(backend, provider="tests")
    yield backend
    _unregister_backend("numpy-copy")


def test_mixed_backends_are_an_error_naming_both(second_backend):
    here = segcore.tensor([1.0, 2.0])
    there = segcore.tensor([1.0, 2.0], backend="numpy-copy")
    assert there.backend is second_backend
    with pytest.raises(segcore.BackendMismatchError, match=r"'numpy'.*'numpy-copy'"):
        here + there
    with pytest.raises(ValueError, match=r"'numpy-copy'.*'numpy'"):
        F.matmul(there, here)
    with pytest.raises(segcore.BackendMismatchError, match=r"numpy"):
        F.cat([here, there])
    with pytest.raises(segcore.BackendMismatchError, match=r"index lives on backend 'numpy' and the tensor on 'numpy-c"):
        there[segcore.tensor([0])]
    # Same backend on both sides is fine.
    np.testing.assert_array_equal((there * there).numpy(), [1.0, 4.0])


def test_grad_dtype_matches_leaf_dtype():
    a = segcore.tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    b = segcore.tensor(np.array([3.0, 4.0]), requires_grad=True)
    out = a * b
    assert out.dtype == np.float64
    out.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_array_equal(a.grad.numpy(), [3.0, 4.0])


def test_size_and_numel_follow_torch():
    t = segcore.tensor(np.zeros((2, 3, 4), dtype=np.float32))
    assert t.size() == (2, 3, 4) == t.shape
    assert (t.size(0), t.size(-1), t.size(np.int64(1))) == (2, 4, 3)
    assert t.numel() == 24  # NumPy's element count lives under torch's name
    with pytest.raises(IndexError, match=r"dim 3 is out of range for a 3-d tensor \(expected -3..2\)"):
        t.size(3)
    with pytest.raises(IndexError, match="dim -4"):
        t.size(-4)
    with pytest.raises(TypeError, match="dim must be an int or None, got float"):
        t.size(1.0)
    assert segcore.tensor(1.0).size() == ()
