"""Every backend's max pooling (values, indices, backward) and bilinear resizing against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segcore.testing import assert_backend_agrees, backend_params, pool_geometries, run_kernel


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("backend", backend_params())
@given(geo=pool_geometries(), seed=st.integers(0, 2**32 - 1), ties=st.booleans())
def test_max_pool2d_values_indices_and_backward_agree(backend, dtype, geo, seed, ties):
    rng = np.random.default_rng(seed)
    shape = (geo["n"], geo["c"], geo["h"], geo["w"])
    # Rounded values make ties, which must go to the first maximum in window order on every backend.
    x = rng.standard_normal(shape)
    x = (np.round(x) if ties else x).astype(dtype)
    args = (geo["kernel"], geo["stride"], geo["padding"], geo["dilation"], geo["ceil_mode"])
    out, indices = assert_backend_agrees("max_pool2d", backend, x, *args)
    grad = rng.standard_normal(out.shape).astype(dtype)
    assert_backend_agrees("max_pool2d_backward", backend, grad, indices, shape)


@pytest.mark.parametrize("backend", backend_params())
def test_max_pool2d_nan_wins_like_torch(backend):
    x = np.array([[[[1.0, np.nan, 3.0], [4.0, 5.0, np.nan], [7.0, 8.0, 9.0]]]], dtype=np.float32)
    out, indices = assert_backend_agrees("max_pool2d", backend, x, (2, 2), (1, 1), (0, 0), (1, 1), False)
    assert np.isnan(out[0, 0, 0, 0]) and indices[0, 0, 0, 1] == 5


@pytest.mark.parametrize("backend", backend_params())
def test_max_pool2d_backward_sums_overlapping_windows(backend):
    x = np.zeros((1, 1, 3, 3), dtype=np.float32)
    x[0, 0, 1, 1] = 1.0  # the centre is the max of all four overlapping 2x2 windows
    out, indices = run_kernel("max_pool2d", backend, x, (2, 2), (1, 1), (0, 0), (1, 1), False)
    grad = np.full((1, 1, 2, 2), 0.25, dtype=np.float32)
    dx = assert_backend_agrees("max_pool2d_backward", backend, grad, np.asarray(indices), x.shape)
    assert dx[0, 0, 1, 1] == 1.0 and dx.sum() == 1.0
