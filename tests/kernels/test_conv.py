"""Reference conv kernels against explicit loops, scipy.signal and the adjoint identities.

The loop references below index the padded input tap by tap from the textbook definitions; they share no
code or layout trick with the kernels (no im2col, no as_strided, no flipping).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import scipy.signal
from hypothesis import assume, given
from hypothesis import strategies as st

from segcore.backend import get_backend
from segcore.kernels import conv as conv_kernels
from segcore.kernels import reference_kernels

xp = get_backend("numpy").xp

TOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


# -- independent references ---------------------------------------------------------------------------------


def out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def loop_conv2d(x, w, stride, padding, dilation, groups):
    """out[n, o, y, z] = sum_{c, i, j} w[o, c, i, j] x[n, g(o)*Cg + c, y*s - p + i*d, z*s - p + j*d]."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    ho, wo = (out_size(h, kh, stride[0], padding[0], dilation[0]), out_size(wd, kw, stride[1], padding[1], dilation[1]))
    out = np.zeros((n, o, ho, wo))
    for y in range(ho):
        for z in range(wo):
            for i in range(kh):
                for j in range(kw):
                    r = y * stride[0] - padding[0] + i * dilation[0]
                    q = z * stride[1] - padding[1] + j * dilation[1]
                    if not (0 <= r < h and 0 <= q < wd):
                        continue
                    for g in range(groups):
                        xs = x[:, g * cg : (g + 1) * cg, r, q]  # (N, Cg)
                        ws = w[g * og : (g + 1) * og, :, i, j]  # (Og, Cg)
                        out[:, g * og : (g + 1) * og, y, z] += xs @ ws.T
    return out


def loop_grad_input(grad_out, w, input_shape, stride, padding, dilation, groups):
    """Scatter each output's gradient back through every tap to the input pixel the tap read."""
    grad_out, w = grad_out.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = input_shape
    o, cg, kh, kw = w.shape
    og = o // groups
    dx = np.zeros(input_shape)
    for y in range(grad_out.shape[2]):
        for z in range(grad_out.shape[3]):
            for i in range(kh):
                for j in range(kw):
                    r = y * stride[0] - padding[0] + i * dilation[0]
                    q = z * stride[1] - padding[1] + j * dilation[1]
                    if not (0 <= r < h and 0 <= q < wd):
                        continue
                    for g in range(groups):
                        gs = grad_out[:, g * og : (g + 1) * og, y, z]  # (N, Og)
                        dx[:, g * cg : (g + 1) * cg, r, q] += gs @ w[g * og : (g + 1) * og, :, i, j]
    return dx


def loop_grad_weight(x, grad_out, weight_shape, stride, padding, dilation, groups):
    x, grad_out = x.astype(np.float64), grad_out.astype(np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = weight_shape
    og = o // groups
    dw = np.zeros(weight_shape)
    for y in range(grad_out.shape[2]):
        for z in range(grad_out.shape[3]):
            for i in range(kh):
                for j in range(kw):
                    r = y * stride[0] - padding[0] + i * dilation[0]
                    q = z * stride[1] - padding[1] + j * dilation[1]
                    if not (0 <= r < h and 0 <= q < wd):
                        continue
                    for g in range(groups):
                        gs = grad_out[:, g * og : (g + 1) * og, y, z]  # (N, Og)
                        xs = x[:, g * cg : (g + 1) * cg, r, q]  # (N, Cg)
                        dw[g * og : (g + 1) * og, :, i, j] += gs.T @ xs
    return dw


@contextmanager
def block_elements(value):
    """Shrink the kernels' block size so that images split into several row bands and partial blocks."""
    saved = conv_kernels._BLOCK_ELEMENTS
    conv_kernels._BLOCK_ELEMENTS = value
    try:
        yield
    finally:
        conv_kernels._BLOCK_ELEMENTS = saved


# -- hypothesis strategy ------------------------------------------------------------------------------------


@st.composite
def conv_cases(draw, max_size=8):
    """A valid conv configuration: odd and size-1 dims, stride > kernel, dilation, groups, depthwise."""
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise", "pointwise"]))
    if kind == "dense":
        groups, cg, og = 1, draw(st.integers(1, 3)), draw(st.integers(1, 3))
    elif kind == "grouped":
        groups, cg, og = draw(st.integers(2, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    elif kind == "depthwise":
        groups, cg, og = draw(st.integers(1, 4)), 1, draw(st.integers(1, 2))
    else:
        groups, cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if kind == "pointwise":
        kernel, stride, padding, dilation = (1, 1), (1, 1), (0, 0), (1, 1)
    else:
        kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    # Smallest input that still leaves one output pixel, then a few more rows for odd sizes.
    size = tuple(
        draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), max(1, d * (k - 1) + 1 - 2 * p) + max_size))
        for k, p, d in zip(kernel, padding, dilation)
    )
    return dict(
        n=draw(st.integers(1, 3)),
        c=groups * cg,
        o=groups * og,
        size=size,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        block=draw(st.sampled_from([5, 97, 1 << 20])),
        seed=draw(st.integers(0, 2**16)),
    )


def make_arrays(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"]) + case["size"]).astype(case["dtype"])
    w = rng.standard_normal((case["o"], case["c"] // case["groups"]) + case["kernel"]).astype(case["dtype"])
    return rng, x, w


def geometry(case):
    return case["stride"], case["padding"], case["dilation"], case["groups"]


# -- forward ------------------------------------------------------------------------------------------------


@given(conv_cases())
def test_conv2d_matches_explicit_loops(case):
    _, x, w = make_arrays(case)
    with block_elements(case["block"]):
        out = conv_kernels.conv2d(xp, x, w, *geometry(case))
    expected = loop_conv2d(x, w, *geometry(case))
    assert out.dtype == case["dtype"]
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, **TOL[case["dtype"]])


@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    o=st.integers(1, 3),
    h=st.integers(3, 9),
    w=st.integers(3, 9),
    k=st.integers(1, 3),
    pad=st.integers(0, 2),
    dil=st.integers(1, 3),
)
def test_conv2d_matches_scipy_correlate(n, c, o, h, w, k, pad, dil):
    # Dilation through scipy: correlate with the kernel spread out by zeros between taps.
    assume(dil * (k - 1) + 1 <= min(h, w) + 2 * pad)
    rng = np.random.default_rng(n * 1000 + c * 100 + h * 10 + w)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((o, c, k, k))
    spread = np.zeros((o, c, dil * (k - 1) + 1, dil * (k - 1) + 1))
    spread[:, :, ::dil, ::dil] = wt
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    expected = np.zeros((n, o, h + 2 * pad - dil * (k - 1), w + 2 * pad - dil * (k - 1)))
    for b in range(n):
        for oi in range(o):
            for ci in range(c):
                expected[b, oi] += scipy.signal.correlate(xpad[b, ci], spread[oi, ci], mode="valid")
    out = conv_kernels.conv2d(xp, x, wt, (1, 1), (pad, pad), (dil, dil), 1)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)


def test_conv2d_hand_computed():
    # 3x3 input 0..8, 2x2 kernel of ones, stride 1: each output is the sum of a 2x2 window.
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 2, 2), dtype=np.float32)
    out = conv_kernels.conv2d(xp, x, w, (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_array_equal(out, [[[[0 + 1 + 3 + 4, 1 + 2 + 4 + 5], [3 + 4 + 6 + 7, 4 + 5 + 7 + 8]]]])
    # Stride 2, padding 1: windows start at padded (0, 0), (0, 2), (2, 0), (2, 2); the zero border drops terms.
    out = conv_kernels.conv2d(xp, x, w, (2, 2), (1, 1), (1, 1), 1)
    np.testing.assert_array_equal(out, [[[[0, 1 + 2], [3 + 6, 4 + 5 + 7 + 8]]]])


@pytest.mark.parametrize(
    "c, o, groups, kernel, stride, padding, dilation",
    [
        (4, 6, 1, (1, 1), (1, 1), (0, 0), (1, 1)),  # pointwise: plain matmul path
        (4, 6, 2, (1, 1), (1, 1), (0, 0), (1, 1)),  # grouped pointwise
        (4, 4, 4, (3, 3), (1, 1), (1, 1), (1, 1)),  # depthwise
        (3, 6, 3, (3, 2), (2, 1), (1, 0), (2, 1)),  # depthwise with channel multiplier 2
        (6, 4, 2, (3, 3), (5, 4), (2, 1), (1, 2)),  # grouped, stride larger than the kernel
        (3, 5, 1, (1, 1), (2, 3), (1, 0), (1, 1)),  # 1x1 but strided and padded: not the matmul path
    ],
)
@pytest.mark.parametrize("block", [7, 1 << 20])
def test_each_kernel_path_forward_and_backward(c, o, groups, kernel, stride, padding, dilation, block):
    rng = np.random.default_rng(3)
    # Column-major spatial layout: kernels must not assume C-contiguous inputs (the pointwise path reshapes).
    x = np.swapaxes(np.ascontiguousarray(np.swapaxes(rng.standard_normal((2, c, 9, 8)), 2, 3)), 2, 3)
    w = rng.standard_normal((o, c // groups) + kernel)
    args = (stride, padding, dilation, groups)
    with block_elements(block):
        out = conv_kernels.conv2d(xp, x, w, *args)
        g = np.swapaxes(np.ascontiguousarray(np.swapaxes(rng.standard_normal(out.shape), 2, 3)), 2, 3)
        dx = conv_kernels.conv2d_grad_input(xp, g, w, x.shape, *args)
        dw = conv_kernels.conv2d_grad_weight(xp, x, g, w.shape, *args)
    np.testing.assert_allclose(out, loop_conv2d(x, w, *args), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, loop_grad_input(g, w, x.shape, *args), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, loop_grad_weight(x, g, w.shape, *args), rtol=1e-10, atol=1e-10)


# -- backward -----------------------------------------------------------------------------------------------


@given(conv_cases(), st.integers(0, 2), st.integers(0, 2))
def test_grad_input_matches_scatter_loops(case, drop_rows, drop_cols):
    rng, x, w = make_arrays(case)
    full = loop_conv2d(x, w, *geometry(case)).shape
    # The kernel takes its output geometry from grad_out: fewer rows/columns than the input allows must work
    # (conv_transpose2d with output_padding >= stride relies on it).
    ho, wo = max(1, full[2] - drop_rows), max(1, full[3] - drop_cols)
    g = rng.standard_normal((full[0], full[1], ho, wo)).astype(case["dtype"])
    with block_elements(case["block"]):
        dx = conv_kernels.conv2d_grad_input(xp, g, w, x.shape, *geometry(case))
    assert dx.dtype == case["dtype"]
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, loop_grad_input(g, w, x.shape, *geometry(case)), **TOL[case["dtype"]])


@given(conv_cases(), st.integers(0, 2), st.integers(0, 2))
def test_grad_weight_matches_loops(case, drop_rows, drop_cols):
    rng, x, w = make_arrays(case)
    full = loop_conv2d(x, w, *geometry(case)).shape
    ho, wo = max(1, full[2] - drop_rows), max(1, full[3] - drop_cols)
    g = rng.standard_normal((full[0], full[1], ho, wo)).astype(case["dtype"])
    with block_elements(case["block"]):
        dw = conv_kernels.conv2d_grad_weight(xp, x, g, w.shape, *geometry(case))
    assert dw.dtype == case["dtype"]
    assert dw.shape == w.shape
    np.testing.assert_allclose(dw, loop_grad_weight(x, g, w.shape, *geometry(case)), **TOL[case["dtype"]])


@given(conv_cases(max_size=20))
def test_adjoint_identities_on_larger_inputs(case):
    # <conv(x, w), g> = <x, dx(g, w)> = <w, dw(x, g)>: ties the three kernels together on sizes the loops
    # would be slow for, with blocks that split images into row bands.
    case = dict(case, dtype=np.float64)
    rng, x, w = make_arrays(case)
    with block_elements(case["block"]):
        out = conv_kernels.conv2d(xp, x, w, *geometry(case))
        g = rng.standard_normal(out.shape)
        dx = conv_kernels.conv2d_grad_input(xp, g, w, x.shape, *geometry(case))
        dw = conv_kernels.conv2d_grad_weight(xp, x, g, w.shape, *geometry(case))
    lhs = float(np.sum(out * g))
    assert np.isclose(lhs, float(np.sum(x * dx)), rtol=1e-10, atol=1e-10)
    assert np.isclose(lhs, float(np.sum(w * dw)), rtol=1e-10, atol=1e-10)


def test_blocking_does_not_change_results_on_a_resnet_like_layer():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 16, 15, 13)).astype(np.float32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    g = rng.standard_normal((3, 8, 8, 7)).astype(np.float32)
    args = ((2, 2), (1, 1), (1, 1), 1)
    results = []
    for block in (1 << 20, 16 * 9 * 7 * 3, 100):  # whole batch, row bands of 3, one row per block
        with block_elements(block):
            results.append(
                (
                    conv_kernels.conv2d(xp, x, w, *args),
                    conv_kernels.conv2d_grad_input(xp, g, w, x.shape, *args),
                    conv_kernels.conv2d_grad_weight(xp, x, g, w.shape, *args),
                )
            )
    expected = (loop_conv2d(x, w, *args), loop_grad_input(g, w, x.shape, *args), loop_grad_weight(x, g, w.shape, *args))
    for got in results:
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_empty_batch():
    x = np.zeros((0, 4, 5, 5), dtype=np.float32)
    w = np.ones((6, 2, 3, 3), dtype=np.float32)
    args = ((1, 1), (1, 1), (1, 1), 2)
    out = conv_kernels.conv2d(xp, x, w, *args)
    assert out.shape == (0, 6, 5, 5)
    assert conv_kernels.conv2d_grad_input(xp, out, w, x.shape, *args).shape == x.shape
    dw = conv_kernels.conv2d_grad_weight(xp, x, out, w.shape, *args)
    np.testing.assert_array_equal(dw, np.zeros_like(w))


def test_kernels_are_registered_for_backends():
    table = reference_kernels()
    backend = get_backend("numpy")
    for name in ("conv2d", "conv2d_grad_input", "conv2d_grad_weight"):
        assert table[name] is getattr(conv_kernels, name)
        assert backend.kernel(name) is getattr(conv_kernels, name)
