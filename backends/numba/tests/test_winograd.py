"""The numba backend's Winograd F(2x2, 3x3) convolutions (``segcore_numba.cpu.winograd``).

Checked against an independent computation (the convolution and its gradients written as nine shifted sums,
in float64), against the NumPy reference kernels, and through the adjoint identities that tie the three
kernels together; the transform loops against the F(2x2, 3x3) matrices; and the dispatch in ``cpu.conv``.
"""

from __future__ import annotations

import numpy as np
import pytest

from segcore.backend import get_backend
from segcore.testing import assert_backend_agrees
from segcore_numba.cpu import winograd

DILATION_GROUPS = ((1, 1), 1)  # every Winograd case: dilation 1, one group (and stride 1)


def _direct(x, w, padding):
    """Forward, input gradient and weight gradient operators written as the nine shifted sums, float64."""
    (ph, pw), (h, wd) = padding, x.shape[2:]
    ho, wo = h + 2 * ph - 2, wd + 2 * pw - 2
    # Pad generously so that padding 3 (an output larger than the input) still slices in range.
    big = 3
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (big, big), (big, big)))
    w = w.astype(np.float64)
    taps = [
        (i, j, slice(big - ph + i, big - ph + i + ho), slice(big - pw + j, big - pw + j + wo))
        for i in range(3)
        for j in range(3)
    ]

    def forward():
        return sum(np.einsum("ncyx,oc->noyx", xp[:, :, r, c], w[:, :, i, j]) for i, j, r, c in taps)

    def grad_input(g):
        dx = np.zeros_like(xp)
        for i, j, r, c in taps:
            dx[:, :, r, c] += np.einsum("noyx,oc->ncyx", g, w[:, :, i, j])
        return dx[:, :, big : big + h, big : big + wd]

    def grad_weight(g):
        dw = np.zeros_like(w)
        for i, j, r, c in taps:
            dw[:, :, i, j] = np.einsum("noyx,ncyx->oc", g, xp[:, :, r, c])
        return dw

    return forward, grad_input, grad_weight


def _operands(n, c, o, h, w, padding, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    k = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    g = rng.standard_normal((n, o, h + 2 * padding[0] - 2, w + 2 * padding[1] - 2)).astype(dtype)
    return x, k, g


def _tolerance(dtype, reduction: int):
    """(rtol, atol): float64 to near machine precision; float32 like segcore.testing, with the absolute part
    grown with the square root of the number of summed products (as the reference agreement tests do)."""
    if dtype == np.float64:
        return 1e-10, 1e-10 * np.sqrt(reduction)
    return 1e-4, 1e-4 * np.sqrt(reduction)


def _kernels():
    backend = get_backend("numba")
    return backend.xp, [backend.kernel(name) for name in ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")]


CASES = [
    # (n, c, o, h, w, padding): odd and even sizes, padding 0/1/2, one image and several, C != O.
    (1, 2, 3, 4, 4, (0, 0)),
    (2, 3, 5, 7, 6, (1, 1)),
    (3, 4, 2, 5, 9, (2, 2)),
    (1, 5, 4, 8, 7, (1, 0)),
    (2, 6, 6, 3, 3, (0, 2)),
    (1, 3, 2, 6, 5, (3, 3)),  # the input gradient's correlation then crops (offset 2 - 3 = -1)
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "c", "o", "h", "w", "padding"), CASES)
def test_forward_and_gradients_match_the_shifted_sums(dtype, n, c, o, h, w, padding):
    x, k, g = _operands(n, c, o, h, w, padding, dtype)
    forward, grad_input, grad_weight = _direct(x, k, padding)
    xp, (conv, conv_gi, conv_gw) = _kernels()
    y = conv(xp, x, k, (1, 1), padding, *DILATION_GROUPS)
    dx = conv_gi(xp, g, k, x.shape, (1, 1), padding, *DILATION_GROUPS)
    dw = conv_gw(xp, x, g, k.shape, (1, 1), padding, *DILATION_GROUPS)
    assert y.dtype == dx.dtype == dw.dtype == dtype
    for got, want, reduction in ((y, forward(), 9 * c), (dx, grad_input(g), 9 * o), (dw, grad_weight(g), g[:, 0].size)):
        rtol, atol = _tolerance(dtype, reduction)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_three_kernels_are_adjoint(dtype):
    # <conv(x, w), g> = <x, grad_input(g, w)> = <w, grad_weight(x, g)>: ties both gradients to the forward
    # without any other implementation.
    x, k, g = _operands(2, 7, 5, 9, 10, (1, 2), dtype, seed=3)
    xp, (conv, conv_gi, conv_gw) = _kernels()
    args = ((1, 1), (1, 2), *DILATION_GROUPS)
    forward = np.vdot(conv(xp, x, k, *args).astype(np.float64), g)
    via_input = np.vdot(x.astype(np.float64), conv_gi(xp, g, k, x.shape, *args))
    via_weight = np.vdot(k.astype(np.float64), conv_gw(xp, x, g, k.shape, *args))
    rel = 1e-12 if dtype == np.float64 else 1e-5
    assert via_input == pytest.approx(forward, rel=rel)
    assert via_weight == pytest.approx(forward, rel=rel)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows_per_block", [1, 2, 3])
def test_tile_blocks_cover_every_tile(monkeypatch, dtype, rows_per_block):
    # 3 images of 4 tile rows (an odd 7x9 output): blocks of 2 or 3 tile rows cross image boundaries and the
    # last one is partial. The block budget counts the larger channel side (6).
    n, c, o, h, w, padding = 3, 4, 6, 9, 11, (0, 0)
    tiles_per_row = (w - 2 + 1) // 2
    monkeypatch.setattr(winograd, "BLOCK_ELEMENTS", 16 * max(c, o) * tiles_per_row * rows_per_block)
    x, k, g = _operands(n, c, o, h, w, padding, dtype, seed=rows_per_block)
    args = ((1, 1), padding, *DILATION_GROUPS)
    atol = _tolerance(dtype, g[:, 0].size)[1]
    assert_backend_agrees("conv2d", "numba", x, k, *args)
    assert_backend_agrees("conv2d_grad_input", "numba", g, k, x.shape, *args)
    assert_backend_agrees("conv2d_grad_weight", "numba", x, g, k.shape, *args, atol=atol)


def test_resnet_layer_agrees_with_the_reference_in_float32():
    # A 64-channel 14x14 layer at batch 2: long reductions, several 4x4 tiles per row, the defaults' blocks.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 64, 14, 14)).astype(np.float32)
    k = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    g = rng.standard_normal((2, 64, 14, 14)).astype(np.float32)
    args = ((1, 1), (1, 1), *DILATION_GROUPS)
    assert_backend_agrees("conv2d", "numba", x, k, *args)
    assert_backend_agrees("conv2d_grad_input", "numba", g, k, x.shape, *args)
    assert_backend_agrees("conv2d_grad_weight", "numba", x, g, k.shape, *args, atol=1e-4 * np.sqrt(2 * 14 * 14))


def test_results_are_fresh_arrays_not_scratch_views():
    xp, (conv, conv_gi, conv_gw) = _kernels()
    x1, k, g1 = _operands(2, 4, 4, 6, 6, (1, 1), np.float32, seed=1)
    x2, _, g2 = _operands(2, 4, 4, 6, 6, (1, 1), np.float32, seed=2)
    args = ((1, 1), (1, 1), *DILATION_GROUPS)
    first = [conv(xp, x1, k, *args), conv_gi(xp, g1, k, x1.shape, *args), conv_gw(xp, x1, g1, k.shape, *args)]
    kept = [a.copy() for a in first]
    second = [conv(xp, x2, k, *args), conv_gi(xp, g2, k, x2.shape, *args), conv_gw(xp, x2, g2, k.shape, *args)]
    for a, b, c in zip(first, kept, second):
        assert np.array_equal(a, b)  # the second call reused every scratch buffer without touching the results
        assert not np.shares_memory(a, c)


# -- the transform loops against the F(2x2, 3x3) matrices ---------------------------------------------------------


def test_transform_loops_match_the_matrices():
    rng = np.random.default_rng(0)
    d = rng.standard_normal((1, 1, 4, 4))
    p, base = winograd._gather_rows(d, (0, 0), 1, 2, 2, (0, 1), "test.winograd.input")
    v = np.empty((16, 1, 1))
    winograd._input_transform(p, base, 1, v)
    np.testing.assert_allclose(v.ravel(), (winograd.BT @ d[0, 0] @ winograd.BT.T).ravel(), rtol=0, atol=1e-14)

    kernel = rng.standard_normal((1, 1, 3, 3))
    u = winograd._kernel_transform(kernel, False)
    np.testing.assert_allclose(u.ravel(), (winograd.G @ kernel[0, 0] @ winograd.G.T).ravel(), atol=1e-14)
    rotated = winograd._kernel_transform(kernel, True)
    rotated_kernel = kernel[0, 0, ::-1, ::-1]
    np.testing.assert_allclose(rotated.ravel(), (winograd.G @ rotated_kernel @ winograd.G.T).ravel(), atol=1e-14)

    m = rng.standard_normal((16, 1, 1))
    out = np.empty((1, 1, 2, 2))
    winograd._output_transform(m, 1, 1, 0, 1, out)
    np.testing.assert_allclose(out[0, 0], winograd.AT @ m.reshape(4, 4) @ winograd.AT.T, atol=1e-14)

    dy = rng.standard_normal((1, 1, 2, 2))
    dm = np.empty((16, 1, 1))
    g, base = winograd._gather_rows(dy, (0, 0), 1, 1, 0, (0, 1), "test.winograd.grad")
    winograd._grad_output_transform(g, base, 1, dm)
    np.testing.assert_allclose(dm.reshape(4, 4), winograd.AT.T @ dy[0, 0] @ winograd.AT, atol=1e-14)


def test_block_copies_hold_each_tile_rows_input_rows():
    # Blocks that start and end inside images, and one of whole images: every tile row finds its four
    # (zero-padded) input rows at its base row, even and odd columns apart.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 7, 6))  # 3 images of th = 4 tile rows (padding 1: a 7x6 output)
    th, tw = 4, 3
    padded = np.pad(x, ((0, 0), (0, 0), (1, 3), (1, 1)))  # rows and columns up to 2 th + 2, 2 tw + 2
    for block in [(0, 12), (1, 6), (3, 9), (4, 8), (11, 12)]:
        p, base = winograd._gather_rows(x, (1, 1), th, tw + 1, 2, block, "test.winograd.input")
        for lr, r in enumerate(range(*block)):
            b, ty = divmod(r, th)
            rows = p[base[lr] : base[lr] + 4]  # (4, 2, tw + 1, C)
            expected = padded[b, :, 2 * ty : 2 * ty + 4, :].transpose(1, 2, 0)  # (4, 2 tw + 2, C)
            np.testing.assert_array_equal(rows[:, 0], expected[:, 0::2])
            np.testing.assert_array_equal(rows[:, 1], expected[:, 1::2])


def test_the_matrices_compute_a_3x3_correlation():
    # Y = A^T [(G g G^T) * (B^T d B)] A is the 2x2 "valid" correlation of a 4x4 tile with a 3x3 kernel.
    rng = np.random.default_rng(1)
    d, k = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    y = winograd.AT @ ((winograd.G @ k @ winograd.G.T) * (winograd.BT @ d @ winograd.BT.T)) @ winograd.AT.T
    direct = np.array([[np.sum(d[i : i + 3, j : j + 3] * k) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(y, direct, atol=1e-13)


# -- dispatch ------------------------------------------------------------------------------------------------------


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls conv.py makes into each Winograd entry point."""
    calls = {"conv2d": 0, "conv2d_grad_input": 0, "conv2d_grad_weight": 0}
    for name in calls:
        original = getattr(winograd, name)

        def counted(*args, _name=name, _original=original):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(winograd, name, counted)
    return calls


def _run_all(x, k, stride, padding, dilation, groups):
    args = (stride, padding, dilation, groups)
    y = assert_backend_agrees("conv2d", "numba", x, k, *args)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(x.dtype)
    assert_backend_agrees("conv2d_grad_input", "numba", g, k, x.shape, *args)
    # Sums over N * Ho * Wo products: a tolerance that grows with them, as for the reference agreement tests.
    assert_backend_agrees("conv2d_grad_weight", "numba", x, g, k.shape, *args, atol=1e-4 * np.sqrt(g[:, 0].size))


@pytest.mark.parametrize(("channels", "size"), [(64, 56), (128, 28), (256, 14)])
def test_benchmark_layers_take_the_winograd_path(spy, channels, size):
    # benchmarks/numba_kernels.py's conv layers (3x3, stride 1, padding 1, float32), at batch 1 to stay quick.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    k = (rng.standard_normal((channels, channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
    assert winograd.applies(k.shape, (1, 1), (1, 1), 1, np.float32)
    _run_all(x, k, (1, 1), (1, 1), (1, 1), 1)
    assert spy == {"conv2d": 1, "conv2d_grad_input": 1, "conv2d_grad_weight": 1}


@pytest.mark.parametrize(
    ("kernel", "stride", "dilation", "groups", "channels", "dtype"),
    [
        ((3, 3), (2, 2), (1, 1), 1, 8, np.float32),  # strided
        ((3, 3), (1, 2), (1, 1), 1, 8, np.float32),  # strided along one axis
        ((3, 3), (1, 1), (2, 2), 1, 8, np.float32),  # dilated
        ((3, 3), (1, 1), (1, 1), 2, 8, np.float32),  # grouped
        ((3, 3), (1, 1), (1, 1), 8, 8, np.float32),  # depthwise
        ((5, 5), (1, 1), (1, 1), 1, 8, np.float32),  # another kernel size
        ((1, 3), (1, 1), (1, 1), 1, 8, np.float32),
        ((3, 3), (1, 1), (1, 1), 1, 1, np.float32),  # one input channel: the depthwise loop's case
    ],
)
def test_other_convolutions_fall_back_to_im2col(spy, kernel, stride, dilation, groups, channels, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, channels, 11, 10)).astype(dtype)
    k = rng.standard_normal((8, channels // groups) + kernel).astype(dtype)
    assert not winograd.applies(k.shape, stride, dilation, groups, dtype)
    _run_all(x, k, stride, (1, 1), dilation, groups)
    assert spy == {"conv2d": 0, "conv2d_grad_input": 0, "conv2d_grad_weight": 0}


def test_only_float32_and_float64_qualify():
    assert winograd.applies((8, 8, 3, 3), (1, 1), (1, 1), 1, np.float64)
    assert not winograd.applies((8, 8, 3, 3), (1, 1), (1, 1), 1, np.float16)


def test_thread_shares_give_reproducible_results():
    # The tile rows are split into one share per thread. Each output element of the forward and the input
    # gradient is summed by one thread in a fixed order: the same bits for any thread count. The weight
    # gradient adds the shares' partial sums in share order: the same bits from run to run.
    numba = pytest.importorskip("numba")
    xp, (conv, conv_gi, conv_gw) = _kernels()
    x, k, g = _operands(3, 5, 6, 9, 8, (1, 1), np.float32, seed=4)
    args = ((1, 1), (1, 1), *DILATION_GROUPS)

    def run():
        return conv(xp, x, k, *args), conv_gi(xp, g, k, x.shape, *args), conv_gw(xp, x, g, k.shape, *args)

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        alone = run()
    finally:
        numba.set_num_threads(before)
    shared, again = run(), run()
    np.testing.assert_array_equal(alone[0], shared[0])
    np.testing.assert_array_equal(alone[1], shared[1])
    np.testing.assert_allclose(alone[2], shared[2], rtol=1e-5, atol=1e-5)
    for a, b in zip(shared, again):
        np.testing.assert_array_equal(a, b)
