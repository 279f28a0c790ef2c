"""Reference special functions that NumPy lacks but ops need: ``erfc`` (for the exact GELU).

Written with element-wise NumPy/CuPy API only, so every backend can fall back to them; a backend with a native
implementation overrides the kernel.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["erfc", "KERNELS"]

# Chebyshev coefficients c_k (f(u) = sum_k c_k T_k(u), numpy.polynomial's convention) of f(u) = log(erfcx(z) / t) with
# t = 2 / (2 + z), u = 2t - 1 in (-1, 1] for z >= 0, so that erfc(z) = t * exp(-z^2 + f(u)). f is smooth on the
# whole half-line, so one expansion covers [0, inf) (the method of Numerical Recipes' ``Erf``). Coefficients
# were obtained with numpy.polynomial.chebyshev.chebinterpolate(f, 28) on scipy.special.erfcx and truncated
# where they reach float64 rounding: 24 terms give |relative error| < 6e-15 on [0, 6]; the first 12 give
# < 1.1e-8, below float32 resolution.
_ERFC_CHEBYSHEV = (
    -6.5132685989085470e-01,
    6.4196979235649021e-01,
    1.9476473204185780e-02,
    -9.5615147868086999e-03,
    -9.4659534448200320e-04,
    3.6683949785262164e-04,
    4.2523324806897333e-05,
    -2.0278578112710428e-05,
    -1.6242900046177151e-06,
    1.3036558353955327e-06,
    1.5626441905272595e-08,
    -8.5238096339523763e-08,
    6.5290549874846377e-09,
    5.0593427872467122e-09,
    -9.9136334403188589e-10,
    -2.2736590201084264e-10,
    9.6468785840561882e-11,
    2.3930391648376706e-12,
    -6.8847446321150250e-12,
    8.9286776327608770e-13,
    3.1495091898445301e-13,
    -1.1431699440309099e-13,
    1.9518031897079105e-15,
    5.6600339280549237e-15,
)


def erfc(xp, x):
    """Complementary error function ``1 - erf(x)``, element-wise, in ``x``'s floating dtype."""
    # erfc(z) underflows to 0 in float64 beyond z ~ 27.3; capping z keeps z = inf from producing inf - inf.
    z = xp.minimum(xp.abs(x), 30.0)
    t = 2.0 / (2.0 + z)
    u2 = 2.0 * (2.0 * t - 1.0)
    terms = _ERFC_CHEBYSHEV[:12] if x.dtype.itemsize <= 4 else _ERFC_CHEBYSHEV
    # Clenshaw recurrence for sum_k c_k T_k(u).
    b1 = xp.zeros_like(t)
    b2 = xp.zeros_like(t)
    for c in terms[:0:-1]:
        b1, b2 = u2 * b1 - b2 + c, b1
    series = 0.5 * u2 * b1 - b2 + terms[0]
    # exp(-z^2) with z^2 split as zh^2 + (z - zh)(z + zh), zh = z rounded to 1/16: zh^2 is exact, so the
    # large part of the exponent carries no rounding error (otherwise ~z^2 ulp of relative error in the tail).
    zh = xp.round(z * 16.0) / 16.0
    positive = t * xp.exp(-zh * zh) * xp.exp(series - (z - zh) * (z + zh))
    # erfc(-z) = 2 - erfc(z): the expansion is for z >= 0.
    return xp.where(x >= 0, positive, 2.0 - positive)



KERNELS: dict[str, Callable] = {"erfc": erfc}
