"""Shape ops, indexing, pad and one_hot: values against NumPy or explicit loops, gradients by hand and by
central differences (float64) on hypothesis-drawn shapes with size-1 and odd dimensions."""

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


def weighted_backward(out, rng):
    """Backpropagate a random weighting; returns the weights (the expected gradient wrt ``out``)."""
    weight = rng.standard_normal(out.shape)
    (out * segcore.tensor(weight)).sum().backward()
    return weight


# -- reshape / view / flatten / squeeze / unsqueeze -----------------------------------------------------------------
@st.composite
def reshape_case(draw):
    shape = draw(shapes)
    size = int(np.prod(shape))
    # Split the element count into random factors, then maybe add 1s and one -1.
    target, rest = [], size
    for p in (2, 3, 5):
        while rest % p == 0 and draw(st.booleans()):
            target.append(p)
            rest //= p
    target.append(rest)
    target = draw(st.permutations(target + [1] * draw(st.integers(0, 2))))
    if draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return shape, tuple(target)


@given(case=reshape_case(), seed=seeds, use_view=st.booleans())
def test_reshape_and_view(case, seed, use_view):
    shape, target = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    op = F.view if use_view else F.reshape
    out = op(segcore.tensor(x.astype(np.float32)), target)
    expected = x.astype(np.float32).reshape(target)
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out.numpy(), expected)
    np.testing.assert_array_equal(segcore.tensor(x).reshape(*target).numpy(), x.reshape(target))
    gradcheck(lambda t: op(t, target), [leaf(x)], rng=rng)


def test_reshape_errors_name_the_shapes():
    x = segcore.tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"reshape: shape \(4, -1\) is invalid for an input of shape \(2, 3\)"):
        x.reshape(4, -1)
    with pytest.raises(ValueError, match=r"at most one -1"):
        x.view(-1, -1)
    with pytest.raises(ValueError, match=r"shape \(5,\) is invalid"):
        F.reshape(x, (5,))
    with pytest.raises(TypeError, match=r"shape must be a sequence of ints, got \(2\.0, 3\)"):
        F.reshape(x, (2.0, 3))


@given(shape=shapes, data=st.data(), seed=seeds)
def test_flatten(shape, data, seed):
    rng = np.random.default_rng(seed)
    start = data.draw(st.integers(-len(shape), len(shape) - 1), label="start")
    end = data.draw(st.integers(start % len(shape), len(shape) - 1), label="end")
    x = rng.standard_normal(shape)
    s, e = start % len(shape), end % len(shape)
    merged = 1
    for n in shape[s : e + 1]:
        merged *= n
    expected_shape = shape[:s] + (merged,) + shape[e + 1 :]
    out = F.flatten(segcore.tensor(x), start, end)
    assert out.shape == expected_shape
    np.testing.assert_array_equal(out.numpy(), x.reshape(expected_shape))
    gradcheck(lambda t: t.flatten(start, end), [leaf(x)], rng=rng)


def test_flatten_defaults_zero_dim_and_errors():
    assert F.flatten(segcore.tensor(np.zeros((2, 3, 4)))).shape == (24,)
    assert F.flatten(segcore.tensor(np.zeros((2, 3, 4))), 1).shape == (2, 12)
    assert F.flatten(segcore.tensor(3.0)).shape == (1,)
    with pytest.raises(ValueError, match=r"start_dim=2 comes after end_dim=1"):
        F.flatten(segcore.tensor(np.zeros((2, 3, 4))), 2, 1)


@given(shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=1, max_side=3), data=st.data(), seed=seeds)
def test_squeeze_and_unsqueeze(shape, data, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    expected_all = tuple(n for n in shape if n != 1)
    assert F.squeeze(segcore.tensor(x)).shape == expected_all
    if shape:
        dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
        # torch keeps a named dim whose size is not 1 instead of failing.
        expected = shape if shape[dim] != 1 else shape[: dim % len(shape)] + shape[dim % len(shape) + 1 :]
        out = segcore.tensor(x).squeeze(dim)
        assert out.shape == expected
        np.testing.assert_array_equal(out.numpy(), x.reshape(expected))
        gradcheck(lambda t: F.squeeze(t, dim), [leaf(x)], rng=rng)
    position = data.draw(st.integers(-len(shape) - 1, len(shape)), label="position")
    out = segcore.tensor(x).unsqueeze(position)
    np.testing.assert_array_equal(out.numpy(), np.expand_dims(x, position))
    gradcheck(lambda t: F.unsqueeze(t, position), [leaf(x)], rng=rng)


def test_squeeze_tuple_and_unsqueeze_range():
    x = segcore.tensor(np.zeros((1, 3, 1, 2)))
    assert F.squeeze(x, (0, 2)).shape == (3, 2)
    assert F.squeeze(x, (1, -2)).shape == (1, 3, 2)
    assert F.unsqueeze(x, -1).shape == (1, 3, 1, 2, 1)
    with pytest.raises(ValueError, match=r"unsqueeze: dim=5 is out of range for a tensor with 4 .*\(expected -5..4\)"):
        F.unsqueeze(x, 5)


# -- permute / transpose --------------------------------------------------------------------------------------------
@given(shape=shapes, data=st.data(), seed=seeds)
def test_permute_and_transpose(shape, data, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    dims = data.draw(st.permutations(range(len(shape))), label="dims")
    out = F.permute(segcore.tensor(x), dims)
    # Explicit definition: out[i_0, ..., i_k] = x[j] where j[dims[a]] = i_a.
    for index in itertools.islice(itertools.product(*(range(n) for n in out.shape)), 50):
        source = [0] * len(shape)
        for a, i in enumerate(index):
            source[dims[a]] = i
        assert out.numpy()[index] == x[tuple(source)]
    assert out.shape == tuple(shape[d] for d in dims)
    gradcheck(lambda t: t.permute(*dims), [leaf(x)], rng=rng)
    d0 = data.draw(st.integers(-len(shape), len(shape) - 1), label="d0")
    d1 = data.draw(st.integers(-len(shape), len(shape) - 1), label="d1")
    np.testing.assert_array_equal(F.transpose(segcore.tensor(x), d0, d1).numpy(), np.swapaxes(x, d0, d1))
    gradcheck(lambda t: t.transpose(d0, d1), [leaf(x)], rng=rng)


def test_permute_errors_and_T():
    x = segcore.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(x.T.numpy(), [[0, 3], [1, 4], [2, 5]])
    assert segcore.tensor([1.0, 2.0]).T.shape == (2,)
    with pytest.raises(ValueError, match=r"\.T .* at most 2 dimensions, got shape \(1, 2, 3\)"):
        segcore.tensor(np.zeros((1, 2, 3))).T
    with pytest.raises(ValueError, match=r"permute: dims \(0, 0\) repeat a dimension"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match=r"permute: dims \(0,\) must name each of the 2 dimensions"):
        x.permute(0)


# -- cat / stack / split --------------------------------------------------------------------------------------------
@given(shape=shapes, data=st.data(), seed=seeds)
def test_cat_and_stack(shape, data, seed):
    rng = np.random.default_rng(seed)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=4), label="sizes")
    arrays = []
    for n in sizes:
        s = list(shape)
        s[dim] = n
        arrays.append(rng.standard_normal(s))
    out = F.cat([segcore.tensor(a) for a in arrays], dim)
    np.testing.assert_array_equal(out.numpy(), np.concatenate(arrays, axis=dim))
    leaves = [leaf(a) for a in arrays]
    weight = weighted_backward(F.cat(leaves, dim), rng)
    offset = 0
    for a, t in zip(arrays, leaves):
        n = a.shape[dim]
        np.testing.assert_array_equal(t.grad.numpy(), np.take(weight, np.arange(offset, offset + n), axis=dim))
        offset += n
    gradcheck(lambda *ts: F.cat(list(ts), dim), [leaf(a) for a in arrays], rng=rng)

    new_dim = data.draw(st.integers(-len(shape) - 1, len(shape)), label="new_dim")
    same = [rng.standard_normal(shape) for _ in sizes]
    out = F.stack([segcore.tensor(a) for a in same], new_dim)
    np.testing.assert_array_equal(out.numpy(), np.stack(same, axis=new_dim))
    gradcheck(lambda *ts: F.stack(ts, new_dim), [leaf(a) for a in same], rng=rng)


def test_cat_promotes_and_validates():
    out = F.cat([segcore.tensor([1, 2]), segcore.tensor([0.5])])
    assert out.dtype == np.float32 and out.tolist() == [1.0, 2.0, 0.5]
    assert F.concat([segcore.tensor(np.ones(1)), segcore.tensor([2.0])]).dtype == np.float64
    mismatch = r"cat: tensors\[1\] has shape \(2, 4\), which does not match tensors\[0\] shape \(2, 3\) outside dim 0"
    with pytest.raises(ValueError, match=mismatch):
        F.cat([segcore.tensor(np.zeros((2, 3))), segcore.tensor(np.zeros((2, 4)))])
    with pytest.raises(ValueError, match=r"cat: tensors must not be empty"):
        F.cat([])
    with pytest.raises(TypeError, match=r"cat: tensors must be a list or tuple of Tensors, got Tensor"):
        F.cat(segcore.tensor([1.0]))
    with pytest.raises(ValueError, match=r"stack: tensors\[1\] has shape \(3,\), expected \(2,\)"):
        F.stack([segcore.tensor([1.0, 2.0]), segcore.tensor([1.0, 2.0, 3.0])])


@given(shape=shapes, data=st.data(), seed=seeds)
def test_split(shape, data, seed):
    rng = np.random.default_rng(seed)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    length = shape[dim]
    x = rng.standard_normal(shape)
    if data.draw(st.booleans(), label="int size"):
        step = data.draw(st.integers(1, length + 1), label="step")
        bounds = list(range(0, length, step)) + [length]
    else:
        cuts = sorted(data.draw(st.lists(st.integers(0, length), max_size=3), label="cuts"))
        bounds = [0] + cuts + [length]
        step = [b - a for a, b in zip(bounds, bounds[1:])]
    pieces = F.split(segcore.tensor(x), step, dim)
    assert isinstance(pieces, tuple) and len(pieces) == len(bounds) - 1
    for piece, lo, hi in zip(pieces, bounds, bounds[1:]):
        np.testing.assert_array_equal(piece.numpy(), np.take(x, np.arange(lo, hi), axis=dim))
    gradcheck(lambda t: t.split(step, dim), [leaf(x)], rng=rng)


def test_split_with_one_piece_used_gets_zero_gradient_elsewhere():
    x = leaf(np.arange(10.0).reshape(2, 5))
    first, second, third = F.split(x, 2, dim=1)
    assert [p.shape for p in (first, second, third)] == [(2, 2), (2, 2), (2, 1)]
    (second * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 0, 3, 3, 0], [0, 0, 3, 3, 0]])
    with pytest.raises(ValueError, match=r"sections \[2, 2\] must be non-negative and sum to the size 5 of dim 1"):
        F.split(x, [2, 2], dim=1)
    with pytest.raises(ValueError, match=r"split_size must be a positive int, got 0"):
        F.split(x, 0)


# -- expand / broadcast_to ------------------------------------------------------------------------------------------
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=1, min_dims=0, max_dims=3, max_side=4), seed=seeds,
       keep=st.booleans())
def test_expand_and_broadcast_to(shapes, seed, keep):
    (shape,) = shapes.input_shapes
    target = shapes.result_shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    # -1 keeps an existing dimension.
    size = tuple(-1 if keep and i >= len(target) - len(shape) else n for i, n in enumerate(target))
    out = segcore.tensor(x).expand(*size)
    np.testing.assert_array_equal(out.numpy(), np.broadcast_to(x, target))
    t = leaf(x)
    weight = weighted_backward(F.broadcast_to(t, target), rng)
    expected = weight.sum(axis=tuple(range(len(target) - len(shape)))) if len(target) > len(shape) else weight
    expected = expected.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True) if shape else expected
    np.testing.assert_allclose(t.grad.numpy(), expected.reshape(shape))
    gradcheck(lambda u: F.expand(u, size), [leaf(x)], rng=rng)


def test_expand_errors_follow_torch():
    x = segcore.tensor(np.zeros((2, 1)))
    assert x.expand(3, -1, 4).shape == (3, 2, 4)
    with pytest.raises(ValueError, match=r"cannot expand shape \(2, 1\) to \(3, 3\): dimension 0 has size 2"):
        x.expand(3, 3)
    with pytest.raises(ValueError, match=r"-1 is not allowed for the new leading dimension 0"):
        x.expand(-1, 2, 1)


# -- indexing -------------------------------------------------------------------------------------------------------
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4), data=st.data(), seed=seeds)
def test_getitem_basic(shape, data, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True), label="index")
    out = segcore.tensor(x)[index]
    expected = np.asarray(x[index])
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out.numpy(), expected)
    t = leaf(x)
    weight = weighted_backward(t[index], rng)
    grad = np.zeros(shape)
    grad[index] = weight  # a basic index never repeats an element
    np.testing.assert_array_equal(t.grad.numpy(), grad)
    gradcheck(lambda u: u[index], [leaf(x)], rng=rng)


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), data=st.data(), seed=seeds)
def test_getitem_integer_arrays_accumulate_repeats(shape, data, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    result_shapes = hnp.array_shapes(min_dims=1, max_dims=2, max_side=5)
    index = data.draw(hnp.integer_array_indices(shape, result_shape=result_shapes), label="index")
    out = segcore.tensor(x)[tuple(segcore.tensor(i.astype(np.int64)) for i in index)]
    np.testing.assert_array_equal(out.numpy(), x[index])
    t = leaf(x)
    weight = weighted_backward(t[index], rng)
    grad = np.zeros(shape)
    for position in itertools.product(*(range(n) for n in weight.shape)):
        grad[tuple(int(i[position]) for i in index)] += weight[position]
    np.testing.assert_allclose(t.grad.numpy(), grad, atol=1e-12)
    gradcheck(lambda u: u[index], [leaf(x)], rng=rng)


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), seed=seeds)
def test_getitem_boolean_mask(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    mask = rng.random(shape) < 0.5
    out = segcore.tensor(x)[segcore.tensor(mask)]
    np.testing.assert_array_equal(out.numpy(), x[mask])
    t = leaf(x)
    weight = weighted_backward(t[segcore.tensor(mask)], rng)
    grad = np.zeros(shape)
    grad[mask] = weight
    np.testing.assert_array_equal(t.grad.numpy(), grad)
    # A mask over the leading dimension only, combined with a slice.
    rows = rng.random(shape[0]) < 0.5
    np.testing.assert_array_equal(segcore.tensor(x)[rows, ...].numpy(), x[rows, ...])
    gradcheck(lambda u: u[segcore.tensor(rows)], [leaf(x)], rng=rng)


def test_getitem_mixed_advanced_and_basic_by_hand():
    x = leaf(np.arange(24.0).reshape(2, 3, 4))
    out = x[:, [2, 0, 2], 1:3]
    np.testing.assert_array_equal(out.numpy(), np.arange(24.0).reshape(2, 3, 4)[:, [2, 0, 2], 1:3])
    out.sum().backward()
    expected = np.zeros((2, 3, 4))
    expected[:, 2, 1:3] = 2.0  # row 2 was taken twice
    expected[:, 0, 1:3] = 1.0
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    y = leaf([1.0, 2.0, 3.0])
    (y[[0, 0, 0, 2]] * segcore.tensor(np.array([1.0, 2.0, 3.0, 4.0]))).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [6.0, 0.0, 4.0])
    assert x[1, 2, 3].shape == () and x[1, 2, 3].item() == 23.0
    assert x[..., None].shape == (2, 3, 4, 1)
    assert x[segcore.tensor([-1])].numpy()[0, 0, 0] == 12.0


def test_getitem_iteration_and_errors():
    x = segcore.tensor(np.arange(6.0).reshape(3, 2))
    assert [row.tolist() for row in x] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    with pytest.raises(IndexError, match=r"index 3 is out of range for dimension 0 with size 3"):
        x[3]
    with pytest.raises(IndexError, match=r"values in \[0, 5\] is out of range for dimension 1 with size 2"):
        x[:, [0, 5]]
    with pytest.raises(IndexError, match=r"boolean mask of shape \(2,\) does not match the indexed dimensions \(3,\)"):
        x[segcore.tensor(np.array([True, False]))]
    with pytest.raises(IndexError, match=r"too many indices"):
        x[0, 0, 0]
    with pytest.raises(TypeError, match=r"index arrays must hold integers or booleans, got dtype float32"):
        x[segcore.tensor([0.0])]
    with pytest.raises(TypeError, match=r"unsupported index 'a'"):
        x["a"]


# -- pad ------------------------------------------------------------------------------------------------------------
def _source(i, n, mode):
    """Which input position fills output position ``i`` (relative to the unpadded start); None: the fill value."""
    if 0 <= i < n:
        return i
    if mode == "constant":
        return None
    if mode == "reflect":
        return -i if i < 0 else 2 * (n - 1) - i
    if mode == "replicate":
        return min(max(i, 0), n - 1)
    return i % n  # circular


def _pad_reference(x, pad, mode, value):
    """Padding by explicit per-dimension index maps (negative amounts crop first), independent of np.pad."""
    out = x
    for k in range(len(pad) // 2):
        axis = x.ndim - 1 - k
        left, right = pad[2 * k], pad[2 * k + 1]
        out = np.take(out, np.arange(max(-left, 0), out.shape[axis] - max(-right, 0)), axis=axis)
        n = out.shape[axis]
        positions = range(-max(left, 0), n + max(right, 0))
        sources = [_source(i, n, mode) for i in positions]
        if n:
            taken = np.take(out, [0 if s is None else s for s in sources], axis=axis)
        else:
            taken = np.zeros(out.shape[:axis] + (len(sources),) + out.shape[axis + 1 :], out.dtype)
        fill = np.array([s is None for s in sources]).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.where(fill, value, taken)
    return out


@st.composite
def pad_case(draw):
    mode = draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    if mode == "constant":
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
        k = draw(st.integers(1, len(shape)))
    else:
        k = draw(st.integers(1, 3))
        shape = draw(hnp.array_shapes(min_dims=k + 1, max_dims=k + 2, min_side=1, max_side=5))
    pad = []
    for i in range(k):
        n = shape[-1 - i]
        # Constant mode may crop a dimension away entirely; the others need one element left to copy from.
        most = n // 2 if mode == "constant" else (n - 1) // 2
        left = draw(st.integers(-most, 3))
        right = draw(st.integers(-most, 3))
        kept = n + min(left, 0) + min(right, 0)
        limit = {"constant": 3, "reflect": kept - 1, "replicate": 3, "circular": kept}[mode]
        pad += [min(left, limit), min(right, limit)]
    return shape, tuple(pad), mode


@given(case=pad_case(), seed=seeds)
def test_pad_all_modes_forward_and_gradient(case, seed):
    shape, pad, mode = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    value = 1.5 if mode == "constant" else 0.0
    out = F.pad(segcore.tensor(x.astype(np.float32)), pad, mode=mode, value=value)
    expected = _pad_reference(x.astype(np.float32), pad, mode, value)
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_array_equal(out.numpy(), expected)
    gradcheck(lambda t: F.pad(t, pad, mode=mode, value=value), [leaf(x)], rng=rng)


def test_pad_gradient_by_hand():
    x = leaf([[[1.0, 2.0, 3.0]]])
    F.pad(x, (2, 1), mode="reflect").sum().backward()
    # Output is [3, 2, 1, 2, 3, 2]: x0 once, x1 three times, x2 twice.
    np.testing.assert_array_equal(x.grad.numpy(), [[[1.0, 3.0, 2.0]]])
    x.grad = None
    F.pad(x, (2, 1), mode="replicate").sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[[3.0, 1.0, 2.0]]])
    x.grad = None
    F.pad(x, (-1, 2), value=7.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[[0.0, 1.0, 1.0]]])
    np.testing.assert_array_equal(F.pad(x, (3, 0), mode="circular").numpy(), [[[1, 2, 3, 1, 2, 3]]])


def test_pad_torch_order_last_dimension_first():
    x = segcore.tensor(np.ones((1, 2, 3)))
    assert F.pad(x, (1, 2)).shape == (1, 2, 6)
    assert F.pad(x, (1, 2, 3, 4)).shape == (1, 9, 6)
    assert F.pad(x, (0, 0, 0, 0, 1, 1)).shape == (3, 2, 3)


def test_pad_errors():
    x = segcore.tensor(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"even number of ints, at most 2 \* ndim = 6"):
        F.pad(x, (1, 1, 1))
    with pytest.raises(ValueError, match=r"mode must be one of constant, reflect, replicate, circular; got 'edge'"):
        F.pad(x, (1, 1), mode="edge")
    with pytest.raises(ValueError, match=r"reflect padding \(3, 0\) must be smaller than dimension 2 of size 3"):
        F.pad(x, (3, 0), mode="reflect")
    with pytest.raises(ValueError, match=r"circular padding \(0, 4\) must not exceed dimension 2 of size 3"):
        F.pad(x, (0, 4), mode="circular")
    with pytest.raises(ValueError, match=r"a pad of length 6 needs a 4-D or 5-D input, got shape \(1, 2, 3\)"):
        F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate")
    with pytest.raises(ValueError, match=r"cropping \(-2, -2\) from dimension 2 of size 3 leaves a negative size"):
        F.pad(x, (-2, -2))
    with pytest.raises(ValueError, match=r"replicate padding needs a non-empty dimension 2"):
        F.pad(x, (-3, 1), mode="replicate")
    with pytest.raises(ValueError, match=r"mode 'reflect' does not take a fill value"):
        F.pad(x, (1, 1), mode="reflect", value=1.0)


# -- one_hot --------------------------------------------------------------------------------------------------------
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4), seed=seeds, extra=st.integers(0, 2))
def test_one_hot(shape, seed, extra):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, shape)
    classes = int(labels.max()) + 1 + extra
    out = F.one_hot(segcore.tensor(labels), classes)
    assert out.dtype == np.int64 and out.shape == tuple(shape) + (classes,) and not out.requires_grad
    expected = np.zeros(tuple(shape) + (classes,), dtype=np.int64)
    for position in itertools.product(*(range(n) for n in shape)):
        expected[position + (labels[position],)] = 1
    np.testing.assert_array_equal(out.numpy(), expected)
    np.testing.assert_array_equal(F.one_hot(segcore.tensor(labels)).numpy(), expected[..., : int(labels.max()) + 1])


def test_one_hot_errors():
    with pytest.raises(TypeError, match=r"one_hot: tensor must hold integer class indices, got dtype float32"):
        F.one_hot(segcore.tensor([1.0]))
    with pytest.raises(ValueError, match=r"values must lie in \[0, 3\) for num_classes=3, got values in \[0, 3\]"):
        F.one_hot(segcore.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match=r"got values in \[-1, 0\]"):
        F.one_hot(segcore.tensor([-1, 0]), 3)
    with pytest.raises(ValueError, match=r"cannot infer num_classes from an empty tensor"):
        F.one_hot(segcore.tensor(np.zeros(0, dtype=np.int64)))
