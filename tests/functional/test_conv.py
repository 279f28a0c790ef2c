"""segcore.functional.conv2d / conv_transpose2d: torch semantics, gradients and argument errors.

Forward values are checked against explicit loops written from the definitions (a gather over taps for
conv2d, a scatter over input pixels for conv_transpose2d), shared with nothing in segcore; gradients
against central differences (segcore.testing.gradcheck, float64).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
import segcore.functional as F
from segcore.testing import gradcheck


def t(array, requires_grad=False):
    return segcore.tensor(np.asarray(array), requires_grad=requires_grad)


# -- independent references ---------------------------------------------------------------------------------


def loop_conv2d(x, w, b, stride, pad_top_left, pad_bottom_right, dilation, groups):
    """Gather definition with possibly asymmetric zero padding (what 'same' does for odd totals)."""
    x = np.pad(
        x.astype(np.float64),
        ((0, 0), (0, 0), (pad_top_left[0], pad_bottom_right[0]), (pad_top_left[1], pad_bottom_right[1])),
    )
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    ho = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, ho, wo))
    for y in range(ho):
        for z in range(wo):
            for i in range(kh):
                for j in range(kw):
                    r, q = y * stride[0] + i * dilation[0], z * stride[1] + j * dilation[1]
                    for g in range(groups):
                        out[:, g * og : (g + 1) * og, y, z] += (
                            x[:, g * cg : (g + 1) * cg, r, q] @ w[g * og : (g + 1) * og, :, i, j].T
                        )
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def loop_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    """Scatter definition: input pixel (r, q) adds x * w[..., i, j] at (r*s - p + i*d, q*s - p + j*d)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    cg = c // groups
    ho = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    wo = (wd - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    out = np.zeros((n, og * groups, ho, wo))
    for r in range(h):
        for q in range(wd):
            for i in range(kh):
                for j in range(kw):
                    y = r * stride[0] - padding[0] + i * dilation[0]
                    z = q * stride[1] - padding[1] + j * dilation[1]
                    if not (0 <= y < ho and 0 <= z < wo):
                        continue
                    for g in range(groups):
                        out[:, g * og : (g + 1) * og, y, z] += (
                            x[:, g * cg : (g + 1) * cg, r, q] @ w[g * cg : (g + 1) * cg, :, i, j]
                        )
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


# -- strategies ---------------------------------------------------------------------------------------------


@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    cg = 1 if depthwise else draw(st.integers(1, 3))
    og = draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    size = tuple(
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 5)) for k, p, d in zip(kernel, padding, dilation)
    )
    return dict(
        n=draw(st.integers(1, 2)),
        c=groups * cg,
        o=groups * og,
        size=size,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def transpose_cases(draw):
    groups = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    # torch: output_padding < stride or < dilation, per dimension.
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    # Padding may remove at most what the transposed convolution produces (output size >= 1).
    padding = tuple(
        draw(st.integers(0, max(0, min(2, ((n - 1) * s + d * (k - 1) + op) // 2))))
        for n, s, d, k, op in zip(size, stride, dilation, kernel, output_padding)
    )
    return dict(
        n=draw(st.integers(1, 2)),
        c=groups * cg,
        og=og,
        size=size,
        kernel=kernel,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def conv_arrays(case, dtype=np.float64):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"]) + case["size"]).astype(dtype)
    w = rng.standard_normal((case["o"], case["c"] // case["groups"]) + case["kernel"]).astype(dtype)
    b = rng.standard_normal(case["o"]).astype(dtype) if case["bias"] else None
    return x, w, b


def transpose_arrays(case, dtype=np.float64):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"]) + case["size"]).astype(dtype)
    w = rng.standard_normal((case["c"], case["og"]) + case["kernel"]).astype(dtype)
    b = rng.standard_normal(case["og"] * case["groups"]).astype(dtype) if case["bias"] else None
    return x, w, b


# -- conv2d forward -----------------------------------------------------------------------------------------


@given(conv_cases(), st.sampled_from([np.float32, np.float64]))
def test_conv2d_matches_loops(case, dtype):
    x, w, b = conv_arrays(case, dtype)
    out = F.conv2d(
        t(x), t(w), None if b is None else t(b), case["stride"], case["padding"], case["dilation"], case["groups"]
    )
    expected = loop_conv2d(x, w, b, case["stride"], case["padding"], case["padding"], case["dilation"], case["groups"])
    assert out.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out.numpy(), expected, rtol=tol, atol=tol)


@given(
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    size=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    groups=st.integers(1, 2),
)
def test_conv2d_padding_same_keeps_size_and_pads_extra_bottom_right(kernel, dilation, size, groups):
    rng = np.random.default_rng(sum(kernel) + 10 * sum(size))
    x = rng.standard_normal((2, 2 * groups) + size)
    w = rng.standard_normal((3 * groups, 2) + kernel)
    out = F.conv2d(t(x), t(w), padding="same", dilation=dilation, groups=groups)
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    top_left = [p // 2 for p in total]
    bottom_right = [p - p // 2 for p in total]  # torch: the odd one out goes bottom/right
    expected = loop_conv2d(x, w, None, (1, 1), top_left, bottom_right, dilation, groups)
    assert out.shape == (2, 3 * groups) + size
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_conv2d_padding_same_hand_computed():
    # 1x4 row, kernel [1, 10] (total padding 1 -> all of it on the right): out[i] = x[i] + 10 x[i+1].
    x = t(np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4))
    w = t(np.array([1.0, 10.0]).reshape(1, 1, 1, 2))
    np.testing.assert_allclose(F.conv2d(x, w, padding="same").numpy().ravel(), [21, 32, 43, 4])


def test_conv2d_padding_valid_is_zero_padding():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 6, 5)), rng.standard_normal((3, 2, 3, 2))
    out = F.conv2d(t(x), t(w), padding="valid", stride=(2, 1))
    np.testing.assert_allclose(out.numpy(), loop_conv2d(x, w, None, (2, 1), (0, 0), (0, 0), (1, 1), 1), atol=1e-10)


def test_conv2d_bias_hand_computed():
    x = t(np.ones((1, 2, 3, 3), dtype=np.float32))
    w = t(np.ones((2, 2, 3, 3), dtype=np.float32))
    b = t(np.array([0.5, -1.0], dtype=np.float32))
    out = F.conv2d(x, w, b, padding=1).numpy()
    # Centre sees all 9 taps of both channels (18), a corner 4 taps (8), an edge 6 (12).
    np.testing.assert_allclose(out[0, 0], [[8.5, 12.5, 8.5], [12.5, 18.5, 12.5], [8.5, 12.5, 8.5]])
    np.testing.assert_allclose(out[0, 1], out[0, 0] - 1.5)


# -- conv_transpose2d forward -------------------------------------------------------------------------------


@given(transpose_cases(), st.sampled_from([np.float32, np.float64]))
def test_conv_transpose2d_matches_scatter_loops(case, dtype):
    x, w, b = transpose_arrays(case, dtype)
    out = F.conv_transpose2d(
        t(x),
        t(w),
        None if b is None else t(b),
        case["stride"],
        case["padding"],
        case["output_padding"],
        case["groups"],
        case["dilation"],
    )
    expected = loop_conv_transpose2d(
        x, w, b, case["stride"], case["padding"], case["output_padding"], case["groups"], case["dilation"]
    )
    assert out.dtype == dtype
    assert out.shape == expected.shape
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out.numpy(), expected, rtol=tol, atol=tol)


def test_conv_transpose2d_hand_computed():
    # Stride 2 with a 2x2 kernel of ones blows each pixel up into a 2x2 block; output_padding=1 adds a zero
    # row/column (plus bias) at the bottom/right.
    x = t(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32).reshape(1, 1, 2, 2))
    w = t(np.ones((1, 1, 2, 2), dtype=np.float32))
    b = t(np.array([0.5], dtype=np.float32))
    out = F.conv_transpose2d(x, w, b, stride=2, output_padding=1).numpy()[0, 0]
    expected = np.array(
        [
            [1, 1, 2, 2, 0],
            [1, 1, 2, 2, 0],
            [3, 3, 4, 4, 0],
            [3, 3, 4, 4, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(out, expected + 0.5)


def test_conv_transpose2d_argument_order_is_torchs():
    # torch: (input, weight, bias, stride, padding, output_padding, groups, dilation).
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 4, 3, 3)), rng.standard_normal((4, 1, 3, 3))
    out = F.conv_transpose2d(t(x), t(w), None, 2, 1, 1, 2, 2)
    expected = loop_conv_transpose2d(x, w, None, (2, 2), (1, 1), (1, 1), 2, (2, 2))
    assert out.shape == (1, 2, (3 - 1) * 2 - 2 + 2 * 2 + 1 + 1, 8)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-10)


@given(conv_cases())
def test_conv_transpose2d_is_the_adjoint_of_conv2d(case):
    # <conv2d(x, w), y> = <x, conv_transpose2d(y, w)> when output_padding restores x's size.
    x, w, _ = conv_arrays(case)
    args = (case["stride"], case["padding"], case["dilation"], case["groups"])
    y_shape = F.conv2d(t(x), t(w), None, *args).shape
    rng = np.random.default_rng(case["seed"] + 1)
    y = rng.standard_normal(y_shape)
    natural = [
        (n - 1) * s - 2 * p + d * (k - 1) + 1
        for n, s, p, d, k in zip(y_shape[2:], case["stride"], case["padding"], case["dilation"], case["kernel"])
    ]
    output_padding = tuple(size - nat for size, nat in zip(case["size"], natural))
    back = F.conv_transpose2d(
        t(y), t(w), None, case["stride"], case["padding"], output_padding, case["groups"], case["dilation"]
    )
    assert back.shape == x.shape
    lhs = float(np.sum(F.conv2d(t(x), t(w), None, *args).numpy() * y))
    assert np.isclose(lhs, float(np.sum(x * back.numpy())), rtol=1e-10, atol=1e-10)


# -- gradients ----------------------------------------------------------------------------------------------


@given(conv_cases(), st.booleans())
def test_conv2d_gradcheck(case, same):
    if same:
        case = dict(case, stride=(1, 1))
    x, w, b = conv_arrays(case)
    padding = "same" if same else case["padding"]
    tensors = [t(x, True), t(w, True)] + ([t(b, True)] if b is not None else [])

    def fn(x, w, b=None):
        return F.conv2d(x, w, b, case["stride"], padding, case["dilation"], case["groups"])

    gradcheck(fn, tensors, rng=np.random.default_rng(case["seed"]))


@given(transpose_cases())
def test_conv_transpose2d_gradcheck(case):
    x, w, b = transpose_arrays(case)
    tensors = [t(x, True), t(w, True)] + ([t(b, True)] if b is not None else [])

    def fn(x, w, b=None):
        return F.conv_transpose2d(
            x, w, b, case["stride"], case["padding"], case["output_padding"], case["groups"], case["dilation"]
        )

    gradcheck(fn, tensors, rng=np.random.default_rng(case["seed"]))


def test_gradients_of_bias_and_input_by_hand():
    # out = sum over the 3x3 valid window of x * 1 + b on a 3x3 input: one output pixel.
    x = t(np.arange(9.0).reshape(1, 1, 3, 3), True)
    w = t(np.full((1, 1, 3, 3), 2.0), True)
    b = t(np.array([1.0]), True)
    out = F.conv2d(x, w, b)
    np.testing.assert_allclose(out.numpy(), [[[[2 * 36 + 1]]]])
    out.backward(np.array([[[[3.0]]]]))
    np.testing.assert_allclose(x.grad.numpy(), np.full((1, 1, 3, 3), 6.0))
    np.testing.assert_allclose(w.grad.numpy(), 3 * np.arange(9.0).reshape(1, 1, 3, 3))
    np.testing.assert_allclose(b.grad.numpy(), [3.0])


def test_float32_gradients_stay_float32_and_only_needed_arrays_are_saved():
    rng = np.random.default_rng(0)
    x = t(rng.standard_normal((2, 4, 6, 6)).astype(np.float32), True)
    w = t(rng.standard_normal((4, 2, 3, 3)).astype(np.float32))  # frozen weight
    out = F.conv2d(x, w, stride=2, padding=1, groups=2)
    saved_x, saved_w = out._node.saved
    assert saved_x is None  # no weight gradient wanted: the input is not kept alive
    assert saved_w is not None
    out.sum().backward()
    assert x.grad.dtype == np.float32 and w.grad is None
    # d(sum out)/dx[n, c, r, q] = sum of the weights of the taps that read (r, q): checked by the loop adjoint.
    expected = np.zeros((2, 4, 6, 6))
    wn = w.numpy().astype(np.float64)
    for y in range(3):
        for z in range(3):
            for i in range(3):
                for j in range(3):
                    r, q = 2 * y - 1 + i, 2 * z - 1 + j
                    if 0 <= r < 6 and 0 <= q < 6:
                        for g in range(2):
                            expected[:, 2 * g : 2 * g + 2, r, q] += wn[2 * g : 2 * g + 2, :, i, j].sum(axis=0)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_empty_batch_forward_and_backward():
    x = t(np.zeros((0, 3, 5, 5)), True)
    w = t(np.ones((2, 3, 3, 3)), True)
    out = F.conv2d(x, w, padding=1)
    assert out.shape == (0, 2, 5, 5)
    out.sum().backward()
    assert x.grad.shape == (0, 3, 5, 5)
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros((2, 3, 3, 3)))


# -- argument errors ----------------------------------------------------------------------------------------

X = np.zeros((1, 4, 5, 5), dtype=np.float32)
W = np.zeros((6, 2, 3, 3), dtype=np.float32)  # groups=2


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((X[0], W), {"groups": 2}, ValueError, "input must be 4-D"),
        ((X, W[0]), {"groups": 2}, ValueError, "weight must be 4-D"),
        ((X.astype(np.int64), W), {"groups": 2}, TypeError, "input must be a floating-point"),
        ((X, W.astype(np.float64)), {"groups": 2}, TypeError, "weight dtype float64 does not match input dtype"),
        ((X, W, np.zeros(5, np.float32)), {"groups": 2}, ValueError, "bias must have shape (6,)"),
        ((X, W, np.zeros(6, np.float64)), {"groups": 2}, TypeError, "bias dtype float64"),
        ((X, W), {"groups": 2, "stride": 0}, ValueError, "stride must be >= 1, got 0"),
        ((X, W), {"groups": 2, "stride": (1, 2, 3)}, ValueError, "stride must be an int or a sequence of 2 ints"),
        ((X, W), {"groups": 2, "padding": -1}, ValueError, "padding must be >= 0, got -1"),
        ((X, W), {"groups": 2, "padding": "full"}, ValueError, "padding must be 'same', 'valid'"),
        ((X, W), {"groups": 2, "padding": "same", "stride": 2}, ValueError, "padding='same' needs stride=1"),
        ((X, W), {"groups": 2, "dilation": (1, 0)}, ValueError, "dilation must be >= 1"),
        ((X, W), {"groups": 0}, ValueError, "groups must be >= 1, got 0"),
        ((X, W), {"groups": 1.5}, TypeError, "groups must be an int, got 1.5"),
        ((X, W), {"groups": 3}, ValueError, "input channels (4) must be divisible by groups (3)"),
        ((X, W[:5]), {"groups": 2}, ValueError, "output channels (5, dim 0) must be divisible by groups (2)"),
        ((X, W), {"groups": 1}, ValueError, "expects 2 input channels"),
        ((X[:, :, :2, :2], W), {"groups": 2}, ValueError, "output size would be 0x0"),
        ((X, W), {"groups": 2, "dilation": 3}, ValueError, "output size would be -1x-1"),
        ((X[:, :, :, :0], W), {"groups": 2}, ValueError, "non-empty channel and spatial dimensions"),
    ],
)
def test_conv2d_errors_name_the_argument(args, kwargs, error, message):
    tensors = [segcore.tensor(a) for a in args]
    with pytest.raises(error) as info:
        F.conv2d(*tensors, **kwargs)
    assert message in str(info.value)


XT = np.zeros((1, 4, 3, 3), dtype=np.float32)
WT = np.zeros((4, 3, 3, 3), dtype=np.float32)  # groups=2 -> C_out = 6


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((XT, WT[:3]), {"groups": 2}, ValueError, "expects 3 input channels (dim 0 = C_in), but input has 4"),
        ((XT, WT), {"groups": 3}, ValueError, "input channels (4) must be divisible by groups (3)"),
        ((XT, WT, np.zeros(3, np.float32)), {"groups": 2}, ValueError, "bias must have shape (6,)"),
        ((XT, WT), {"stride": 2, "output_padding": 2}, ValueError, "output_padding must be smaller than either"),
        ((XT, WT), {"output_padding": 1}, ValueError, "got output_padding=1 with stride=(1, 1), dilation=(1, 1)"),
        ((XT, WT), {"padding": "same"}, ValueError, "padding must be an int or a pair of ints"),
        ((XT, WT), {"padding": 3}, ValueError, "output size would be -1x-1"),
        ((XT[0], WT), {}, ValueError, "input must be 4-D"),
        ((XT, WT), {"groups": -1}, ValueError, "groups must be >= 1, got -1"),
    ],
)
def test_conv_transpose2d_errors_name_the_argument(args, kwargs, error, message):
    tensors = [segcore.tensor(a) for a in args]
    with pytest.raises(error) as info:
        F.conv_transpose2d(*tensors, **kwargs)
    assert message in str(info.value)


def test_conv_transpose2d_output_padding_below_dilation_is_allowed():
    # output_padding=1 >= stride=1 but < dilation=2: allowed by torch; the extra row gets real contributions
    # through padding=1 and the scatter definition says which.
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((2, 2, 3, 3))
    out = F.conv_transpose2d(t(x), t(w), None, 1, 1, 1, 1, 2)
    expected = loop_conv_transpose2d(x, w, None, (1, 1), (1, 1), (1, 1), 1, (2, 2))
    assert out.shape == (1, 2, 6, 6)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-10)


def test_non_tensor_bias_and_input_are_type_errors():
    with pytest.raises(TypeError, match="bias must be a Tensor or None, got ndarray"):
        F.conv2d(segcore.tensor(X), segcore.tensor(W), np.zeros(6, np.float32), groups=2)
    with pytest.raises(TypeError, match="input must be a Tensor, got ndarray"):
        F.conv2d(X, segcore.tensor(W), groups=2)
