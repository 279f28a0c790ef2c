"""Every backend's convolution kernels against the NumPy reference (forward, both gradients, transposed).

Parametrised over ``segcore.testing.backend_params()``: each installed backend runs here, and one that cannot
run on this machine is reported as skipped with its reason.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segcore.testing import assert_backend_agrees, backend_params, conv_geometries

DTYPES = [np.float16, np.float32, np.float64]


def _operands(geo: dict, dtype, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((geo["n"], geo["c"], geo["h"], geo["w"])).astype(dtype)
    w = rng.standard_normal((geo["out_channels"], geo["c"] // geo["groups"]) + geo["kernel"]).astype(dtype)
    g = rng.standard_normal((geo["n"], geo["out_channels"]) + geo["output"]).astype(dtype)
    return x, w, g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", backend_params())
@given(geo=conv_geometries(), seed=st.integers(0, 2**32 - 1))
def test_conv2d_and_its_gradients_agree(backend, dtype, geo, seed):
    x, w, g = _operands(geo, dtype, seed)
    args = (geo["stride"], geo["padding"], geo["dilation"], geo["groups"])
    assert_backend_agrees("conv2d", backend, x, w, *args)
    assert_backend_agrees("conv2d_grad_input", backend, g, w, x.shape, *args)
    assert_backend_agrees("conv2d_grad_weight", backend, x, g, w.shape, *args)


@pytest.mark.parametrize("backend", backend_params())
@given(geo=conv_geometries(), extra=st.tuples(st.integers(0, 2), st.integers(0, 2)), seed=st.integers(0, 2**32 - 1))
def test_transposed_convolution_with_output_padding_agrees(backend, geo, extra, seed):
    # conv_transpose2d is conv2d_grad_input onto an output grown by output_padding (< max(stride, dilation)):
    # the rows it adds are read by no window, which a backend must leave at zero.
    x, w, g = _operands(geo, np.float32, seed)
    sizes = zip((geo["h"], geo["w"]), extra, geo["stride"], geo["dilation"])
    grown = tuple(size + min(e, max(s, d) - 1) for size, e, s, d in sizes)
    args = (geo["stride"], geo["padding"], geo["dilation"], geo["groups"])
    out = assert_backend_agrees("conv2d_grad_input", backend, g, w, x.shape[:2] + grown, *args)
    assert out.shape == x.shape[:2] + grown
    bigger = np.random.default_rng(seed).standard_normal(x.shape[:2] + grown).astype(np.float32)
    assert_backend_agrees("conv2d_grad_weight", backend, bigger, g, w.shape, *args)


@given(geo=conv_geometries(max_channels=64, min_channels=16))
def test_wide_geometries_have_the_channels_asked_for(geo):
    per_group = geo["c"] // geo["groups"]
    assert geo["c"] % geo["groups"] == 0 and geo["out_channels"] % geo["groups"] == 0
    assert 16 <= per_group and geo["c"] <= 64 and geo["out_channels"] <= 64


def test_wide_geometries_reject_a_minimum_above_the_maximum():
    with pytest.raises(ValueError, match="got 7 and 6"):
        conv_geometries(max_channels=6, min_channels=7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", backend_params())
@given(geo=conv_geometries(max_channels=64, min_channels=16), seed=st.integers(0, 2**32 - 1))
def test_wide_layers_agree(backend, dtype, geo, seed):
    # 16 to 64 input channels, at least 16 per group: the paths a backend keeps for wide layers (numba: the
    # strided input gradient by phase from 16 input channels per group, the implicit weight gradient from 12
    # output channels and 32 channels per run), which the default geometries' 6 channels never reach.
    x, w, g = _operands(geo, dtype, seed)
    args = (geo["stride"], geo["padding"], geo["dilation"], geo["groups"])
    # float32 sums of up to 64 * 9 terms (forward, input gradient) or N * Ho * Wo (weight gradient): an absolute
    # tolerance that grows with the square root of the number of terms.
    rtol, atol = (None, None) if dtype == np.float64 else (1e-4, 1e-4)
    scale = np.sqrt(max(w[0].size, w.shape[0] * w.shape[2] * w.shape[3], g[:, 0].size))
    atol = atol if atol is None else atol * scale
    assert_backend_agrees("conv2d", backend, x, w, *args, rtol=rtol, atol=atol)
    assert_backend_agrees("conv2d_grad_input", backend, g, w, x.shape, *args, rtol=rtol, atol=atol)
    assert_backend_agrees("conv2d_grad_weight", backend, x, g, w.shape, *args, rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend", backend_params())
def test_resnet_sized_layer_agrees_in_float32(backend):
    # A layer large enough for blocked/banded code paths: 3x3, 32 -> 48 channels, 40x40, stride 1 and 2.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 32, 40, 40)).astype(np.float32)
    w = (rng.standard_normal((48, 32, 3, 3)) / 17).astype(np.float32)
    for stride in ((1, 1), (2, 2)):
        args = (stride, (1, 1), (1, 1), 1)
        y = assert_backend_agrees("conv2d", backend, x, w, *args)
        g = rng.standard_normal(y.shape).astype(np.float32)
        assert_backend_agrees("conv2d_grad_input", backend, g, w, x.shape, *args)
        # The weight gradient sums 2 * 40 * 40 products per element: scale the tolerance with that sum.
        assert_backend_agrees("conv2d_grad_weight", backend, x, g, w.shape, *args, atol=1e-4 * np.sqrt(x[:, 0].size))
