"""``DenseCRF``: mean-field inference of a fully connected CRF as a differentiable layer (CRF-as-RNN).

The CRF is Krähenbühl & Koltun's (2011) with two Gaussian kernels, an appearance-free "smoothness" kernel on
pixel positions and a "bilateral" kernel on positions and colours. Each kernel is filtered with densecrf's
symmetric normalisation ``out = n * K(n * Q)``, ``n = (K 1)^(-1/2)`` (the ``NORMALIZE_SYMMETRIC`` default of
pydensecrf), the pixel itself included. One mean-field iteration (Zheng et al. 2015) is

    Q = softmax(logits_t);  m = sum_k w_k * filter_k(Q);  logits_(t+1) = logits - mu @ m

with per-class kernel weights ``w`` ``(2, K)`` and a label compatibility ``mu`` ``(K, K)`` (Potts: ``1 - I``).
Filtering is linear in ``Q`` with a symmetric normalisation, so its backward is the same filter applied to
the gradient (the transposed lattice blur for the permutohedral method).

This module also holds :class:`PairwiseFilter` (one kernel's normalised filter over one image), shared with
:func:`segcore.crf.dense_crf`, which runs the same inference on NumPy arrays without autograd.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

from .. import functional as F
from ..autograd import Function, Tensor
from ..backend import Backend
from ._utils import Factory, check_positive_int
from .module import Module
from .parameter import Parameter

__all__ = ["DenseCRF", "crf_mean_field", "PairwiseFilter", "pairwise_features", "check_image", "METHODS"]

METHODS = ("permutohedral", "exact")

# densecrf adds this to the filtered ones before the inverse square root, so an isolated point never divides by 0.
_NORM_EPS = 1e-20


# -- validation shared with segcore.crf ---------------------------------------------------------------------------
def check_image(image: Any, name: str, op: str, *, batched: bool = False) -> np.ndarray:
    """``image`` as given if it is a uint8 NumPy array of shape ``(H, W, 3)`` (``(N, H, W, 3)`` if batched)."""
    what, ndim = ("(N, H, W, 3)", 4) if batched else ("(H, W, 3)", 3)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{op}: {name} must be a NumPy uint8 array of shape {what} (RGB), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(
            f"{op}: {name} must be uint8 (colour values 0..255, the units of srgb), got dtype {image.dtype}"
        )
    if image.ndim != ndim or image.shape[-1] != 3 or 0 in image.shape:
        raise ValueError(f"{op}: {name} must have shape {what} (RGB), got {image.shape}")
    return image


def check_sigma(value: Any, n: int, name: str, op: str) -> tuple[float, ...]:
    """A positive standard deviation, or ``n`` of them (one per axis / colour channel), as floats."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(values) != n or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) and v > 0 for v in values
    ):
        raise ValueError(f"{op}: {name} must be a positive number or a sequence of {n} of them, got {value!r}")
    return tuple(float(v) for v in values)


def check_method(method: Any, op: str) -> str:
    if method not in METHODS:
        raise ValueError(f"{op}: method must be one of {METHODS}, got {method!r}")
    return method


# -- filtering --------------------------------------------------------------------------------------------------
def pairwise_features(
    xp, height: int, width: int, sxy: tuple[float, float], dtype, image: np.ndarray | None = None,
    srgb: tuple[float, float, float] | None = None,
):
    """The ``(H*W, d)`` features of a kernel, pixels in row-major order, as pydensecrf's ``DenseCRF2D``.

    ``(x / sx, y / sy)`` for the smoothness kernel, ``(x / sx, y / sy, c0 / s0, c1 / s1, c2 / s2)`` with the
    image's colour channels for the bilateral one (``x`` is the column, ``y`` the row index).
    """
    y, x = np.mgrid[0:height, 0:width]
    columns = [x.reshape(-1) / sxy[0], y.reshape(-1) / sxy[1]]
    if image is not None:
        columns += [image[..., c].reshape(-1) / srgb[c] for c in range(3)]
    return xp.asarray(np.stack(columns, axis=1).astype(dtype))


class PairwiseFilter:
    """One Gaussian kernel's normalised filter over a fixed set of points: ``n * K(n * values)``.

    ``values`` are ``(N, C)``; ``K`` is the unit Gaussian ``exp(-|f_i - f_j|^2 / 2)`` on ``features``
    ``(N, d)``, evaluated exactly (``method="exact"``) or with the permutohedral lattice, which is built here
    once and reused by every call. ``n = 1 / sqrt(K 1 + 1e-20)`` as in densecrf.
    """

    def __init__(self, backend: Backend, features, method: str) -> None:
        self.backend = backend
        xp = backend.xp
        self.method = method
        if method == "permutohedral":
            self.lattice = backend.kernel("permutohedral_build")(xp, features)
            self._filter = backend.kernel("permutohedral_filter")
        else:
            self.features = features
            self._filter = backend.kernel("dense_gaussian_filter_exact")
        ones = xp.ones((features.shape[0], 1), dtype=features.dtype)
        self.norm = 1.0 / xp.sqrt(self._raw(ones, False) + _NORM_EPS)

    def _raw(self, values, transpose: bool):
        xp = self.backend.xp
        if self.method == "permutohedral":
            return self._filter(xp, self.lattice, values, reverse=transpose)
        # The exact kernel matrix is symmetric: its transpose is itself.
        return self._filter(xp, self.features, values)

    def __call__(self, values, *, transpose: bool = False):
        """Filter ``values`` ``(N, C)``; ``transpose=True`` applies the transposed operator (for backward)."""
        norm = self.norm.astype(values.dtype, copy=False)
        return norm * self._raw(norm * values, transpose)


class _PairwiseFiltering(Function):
    """Filter ``(N, K, H, W)`` values with one :class:`PairwiseFilter` per image (a linear map)."""

    @staticmethod
    def forward(ctx, values, *, filters):
        ctx.filters = filters
        return _filter_batch(ctx.xp, values, filters, transpose=False)

    @staticmethod
    def backward(ctx, grad):
        return _filter_batch(ctx.xp, grad, ctx.filters, transpose=True)


def _filter_batch(xp, values, filters: Sequence[PairwiseFilter], transpose: bool):
    n, k, h, w = values.shape
    # PairwiseFilter works on (points, channels): each image's (K, H*W) block transposed.
    return xp.stack(
        [f(values[i].reshape(k, h * w).T, transpose=transpose).T.reshape(k, h, w) for i, f in enumerate(filters)]
    )


# -- the mean-field recurrence ----------------------------------------------------------------------------------
def crf_mean_field(
    logits: Tensor,
    images: np.ndarray,
    kernel_weights: Tensor,
    compatibility: Tensor,
    *,
    iterations: int = 5,
    gaussian_sxy: float | tuple[float, float] = 3.0,
    bilateral_sxy: float | tuple[float, float] = 80.0,
    bilateral_srgb: float | tuple[float, float, float] = 13.0,
    method: str = "permutohedral",
) -> Tensor:
    """``iterations`` differentiable mean-field steps of a dense CRF; returns the refined logits.

    Parameters
    ----------
    logits:
        ``(N, K, H, W)`` unary logits (negative unary energies up to a per-pixel constant).
    images:
        ``(N, H, W, 3)`` uint8 images (``(H, W, 3)`` when ``N == 1``) that the bilateral kernel compares.
    kernel_weights:
        ``(2, K)``: weight of the smoothness (row 0) and bilateral (row 1) kernel per label.
    compatibility:
        ``(K, K)`` label compatibility ``mu``: the pairwise term of label ``l`` is ``sum_l' mu[l, l'] m[l']``.
    iterations, gaussian_sxy, bilateral_sxy, bilateral_srgb, method:
        As :func:`segcore.crf.dense_crf` (standard deviations in pixels and colour levels).

    Returns
    -------
    Tensor
        ``(N, K, H, W)`` logits; ``softmax(dim=1)`` of them are the marginals. ``iterations=0`` returns
        ``logits`` itself.
    """
    op = "crf_mean_field"
    if not isinstance(logits, Tensor) or logits.ndim != 4:
        shape = logits.shape if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"{op}: logits must be a 4-D Tensor (N, K, H, W), got {shape}")
    if np.dtype(logits.dtype).kind != "f":
        raise TypeError(f"{op}: logits must be floating point, got dtype {logits.dtype}")
    n, k, h, w = logits.shape
    if isinstance(images, np.ndarray) and images.ndim == 3 and n == 1:
        images = images[None]
    check_image(images, "images", op, batched=True)
    if images.shape[:3] != (n, h, w):
        raise ValueError(
            f"{op}: images must be (N, H, W, 3) = {(n, h, w, 3)} to match logits of shape {logits.shape}, "
            f"got {images.shape}"
        )
    for name, t, shape in (("kernel_weights", kernel_weights, (2, k)), ("compatibility", compatibility, (k, k))):
        if not isinstance(t, Tensor) or t.shape != shape:
            got = t.shape if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{op}: {name} must be a Tensor of shape {shape} for K={k} labels, got {got}")
        if t.dtype != logits.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but logits have {logits.dtype}; cast one of them")
    if not isinstance(iterations, numbers.Integral) or isinstance(iterations, bool) or iterations < 0:
        raise ValueError(f"{op}: iterations must be an int >= 0, got {iterations!r}")
    gaussian_sxy = check_sigma(gaussian_sxy, 2, "gaussian_sxy", op)
    bilateral_sxy = check_sigma(bilateral_sxy, 2, "bilateral_sxy", op)
    bilateral_srgb = check_sigma(bilateral_srgb, 3, "bilateral_srgb", op)
    check_method(method, op)
    if iterations == 0:
        return logits

    backend = logits.backend
    dtype = np.dtype(logits.dtype)
    smooth = PairwiseFilter(backend, pairwise_features(backend.xp, h, w, gaussian_sxy, dtype), method)
    # The smoothness kernel depends on the image size only: one filter serves the whole batch.
    smooth_filters = (smooth,) * n
    bilateral_filters = tuple(
        PairwiseFilter(
            backend, pairwise_features(backend.xp, h, w, bilateral_sxy, dtype, image, bilateral_srgb), method
        )
        for image in images
    )
    w_smooth = kernel_weights[0].reshape(1, k, 1, 1)
    w_bilateral = kernel_weights[1].reshape(1, k, 1, 1)
    out = logits
    for _ in range(int(iterations)):
        q = F.softmax(out, dim=1)
        message = _PairwiseFiltering.apply(q, filters=smooth_filters) * w_smooth
        message = message + _PairwiseFiltering.apply(q, filters=bilateral_filters) * w_bilateral
        pairwise = F.matmul(compatibility, message.reshape(n, k, h * w)).reshape(n, k, h, w)
        out = logits - pairwise
    return out


class DenseCRF(Module):
    """Fully connected CRF mean-field inference as a layer with learnable weights (CRF-as-RNN).

    Parameters
    ----------
    num_classes:
        Number of labels ``K``.
    iterations:
        Mean-field iterations per forward (CRF-as-RNN trains with 5).
    gaussian_sxy, bilateral_sxy, bilateral_srgb:
        Kernel standard deviations (pixels, colour levels), fixed; pydensecrf's README values by default.
    gaussian_weight, bilateral_weight:
        Initial kernel weights (pydensecrf's Potts ``compat`` values).
    method:
        ``"permutohedral"`` (O(N) per filtering) or ``"exact"`` (O(N^2), small images and gradient checks).

    Learnable parameters: ``kernel_weights`` ``(2, K)`` (row 0 smoothness, row 1 bilateral kernel, per label)
    and ``compatibility`` ``(K, K)``, initialised to the Potts model ``1 - I``. With that initialisation,
    ``softmax(crf(logits, images), dim=1)`` equals ``segcore.crf.dense_crf`` of ``softmax(logits)``.

    ``forward(logits, images)`` takes ``(N, K, H, W)`` logits and ``(N, H, W, 3)`` uint8 images and returns
    refined ``(N, K, H, W)`` logits (see :func:`crf_mean_field`).
    """

    def __init__(
        self,
        num_classes: int,
        iterations: int = 5,
        *,
        gaussian_sxy: float | tuple[float, float] = 3.0,
        gaussian_weight: float = 3.0,
        bilateral_sxy: float | tuple[float, float] = 80.0,
        bilateral_srgb: float | tuple[float, float, float] = 13.0,
        bilateral_weight: float = 10.0,
        method: str = "permutohedral",
        dtype: Any = None,
        backend: str | Backend | None = None,
    ) -> None:
        super().__init__()
        layer = "DenseCRF"
        self.num_classes = check_positive_int(num_classes, "num_classes", layer)
        self.iterations = check_positive_int(iterations, "iterations", layer, minimum=0)
        self.gaussian_sxy = check_sigma(gaussian_sxy, 2, "gaussian_sxy", layer)
        self.bilateral_sxy = check_sigma(bilateral_sxy, 2, "bilateral_sxy", layer)
        self.bilateral_srgb = check_sigma(bilateral_srgb, 3, "bilateral_srgb", layer)
        self.method = check_method(method, layer)
        for name, value in (("gaussian_weight", gaussian_weight), ("bilateral_weight", bilateral_weight)):
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value):
                raise ValueError(f"{layer}: {name} must be a finite number, got {value!r}")
        factory = Factory(None, dtype, backend, layer)
        k = self.num_classes
        self.kernel_weights = Parameter(
            factory.tensor(np.repeat([[float(gaussian_weight)], [float(bilateral_weight)]], k, axis=1))
        )
        self.compatibility = Parameter(factory.tensor(1.0 - np.eye(k)))

    def forward(self, logits: Tensor, images: np.ndarray) -> Tensor:
        return crf_mean_field(
            logits,
            images,
            self.kernel_weights,
            self.compatibility,
            iterations=self.iterations,
            gaussian_sxy=self.gaussian_sxy,
            bilateral_sxy=self.bilateral_sxy,
            bilateral_srgb=self.bilateral_srgb,
            method=self.method,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_classes}, iterations={self.iterations}, gaussian_sxy={self.gaussian_sxy}, "
            f"bilateral_sxy={self.bilateral_sxy}, bilateral_srgb={self.bilateral_srgb}, method={self.method!r}"
        )
