"""The erfc reference kernel against scipy.special, to the dtype's precision, tails included."""

import array_api_compat.numpy as xp_numpy
import numpy as np
import pytest
import scipy.special

from segcore.kernels import special

@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-13), (np.float32, 1e-6)])
def test_erfc_kernel_matches_scipy(dtype, rtol):
    x = np.concatenate([np.linspace(-7, 7, 4001), [0.0, 1e-8, -1e-8]])
    if dtype == np.float64:
        x = np.concatenate([x, [15.0, 26.0]])  # deep tail, erfc(26) ~ 6e-296: relative accuracy must hold
    x = x.astype(dtype)
    got = special.erfc(xp_numpy, x)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, scipy.special.erfc(x.astype(np.float64)), rtol=rtol, atol=0)
    np.testing.assert_array_equal(special.erfc(xp_numpy, np.array([np.inf, -np.inf])), [0.0, 2.0])
