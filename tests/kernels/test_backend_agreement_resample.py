"""Every backend's bilinear interpolation, forward and backward, against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segcore.testing import assert_backend_agrees, backend_params, interpolate_geometries


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("backend", backend_params())
@given(geo=interpolate_geometries(), seed=st.integers(0, 2**32 - 1))
def test_bilinear_forward_and_backward_agree(backend, dtype, geo, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((geo["n"], geo["c"], geo["h"], geo["w"])).astype(dtype)
    out = assert_backend_agrees("interpolate_bilinear", backend, x, geo["output"], geo["align_corners"], geo["scales"])
    assert out.shape == x.shape[:2] + geo["output"]
    grad = rng.standard_normal(out.shape).astype(dtype)
    size = (geo["h"], geo["w"])
    assert_backend_agrees("interpolate_bilinear_backward", backend, grad, size, geo["align_corners"], geo["scales"])


@pytest.mark.parametrize("backend", backend_params())
def test_bilinear_of_a_segmentation_sized_map_agrees(backend):
    # The decoder's x4 upsampling of 21-class logits, large enough for every parallel split to matter.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 21, 33, 33)).astype(np.float32)
    out = assert_backend_agrees("interpolate_bilinear", backend, x, (129, 129), False, (None, None))
    assert_backend_agrees("interpolate_bilinear_backward", backend, out, (33, 33), False, (None, None))
