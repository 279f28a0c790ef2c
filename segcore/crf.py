"""Fully connected CRF post-processing (Krähenbühl & Koltun 2011), as DeepLab v1/v2 apply it.

:func:`dense_crf` refines a ``(K, H, W)`` probability map with mean-field inference exactly as pydensecrf's
``DenseCRF2D`` does with ``addPairwiseGaussian`` + ``addPairwiseBilateral`` (diagonal kernels, symmetric
normalisation): ``Q = softmax(-U)``, then per iteration ``Q = softmax(-U + sum_k w_k filter_k(Q))`` for the
Potts model, where ``filter_k`` is the normalised Gaussian filter of :class:`segcore.nn.crf.PairwiseFilter`
(the pixel itself included). With a compatibility matrix ``mu`` the update is
``Q = softmax(-U - mu @ sum_k w_k filter_k(Q))``; ``mu = 1 - I`` gives the Potts result again, because the
difference is the same for every label.

For a differentiable version with learnable weights see :class:`segcore.nn.DenseCRF`.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Any

import numpy as np

from .backend import Backend, get_backend
from .nn.crf import PairwiseFilter, check_image, check_method, check_sigma, pairwise_features

__all__ = ["dense_crf", "PRESETS", "DEFAULTS"]

# pydensecrf's README settings, used for every parameter that neither the call nor a preset sets.
DEFAULTS: dict[str, Any] = {
    "iterations": 10,
    "gaussian_sxy": 3.0,
    "gaussian_compat": 3.0,
    "bilateral_sxy": 80.0,
    "bilateral_srgb": 13.0,
    "bilateral_compat": 10.0,
}

# The published DeepLab settings (bilateral w / theta_alpha / theta_beta, gaussian w / theta_gamma), 10 iterations.
PRESETS: dict[str, dict[str, Any]] = {
    "deeplab-largefov": {
        "iterations": 10,
        "gaussian_sxy": 3.0,
        "gaussian_compat": 3.0,
        "bilateral_sxy": 49.0,
        "bilateral_srgb": 5.0,
        "bilateral_compat": 4.0,
    },
    "deeplab-v2-resnet": {
        "iterations": 10,
        "gaussian_sxy": 1.0,
        "gaussian_compat": 3.0,
        "bilateral_sxy": 67.0,
        "bilateral_srgb": 3.0,
        "bilateral_compat": 4.0,
    },
}

# Tolerance on |sum_k probs[k] - 1|: float32 softmax outputs pass easily, logits or unnormalised scores do not.
PROBS_SUM_ATOL = 1e-3


def _resolve(preset: Any, explicit: dict[str, Any]) -> dict[str, Any]:
    """Parameters from DEFAULTS, then the preset, then the explicitly passed (not ``None``) arguments."""
    settings = dict(DEFAULTS)
    if preset is not None:
        if preset not in PRESETS:
            close = difflib.get_close_matches(str(preset), list(PRESETS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"dense_crf: unknown preset {preset!r}.{hint} Known presets: {', '.join(PRESETS)}")
        settings.update(PRESETS[preset])
    settings.update({key: value for key, value in explicit.items() if value is not None})
    return settings


def _check_scores(array: Any, name: str, image_shape: tuple[int, int]) -> np.ndarray:
    op = "dense_crf"
    if not isinstance(array, np.ndarray):
        raise TypeError(f"dense_crf: {name} must be a NumPy array of shape (K, H, W), got {type(array).__name__}")
    if array.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: {name} must be float32 or float64, got dtype {array.dtype}")
    if array.ndim != 3 or array.shape[0] < 1:
        raise ValueError(f"{op}: {name} must have shape (K, H, W) with K >= 1 labels, got {array.shape}")
    if array.shape[1:] != image_shape:
        raise ValueError(
            f"{op}: {name} has spatial size {array.shape[1:]} but image is {image_shape}; "
            f"expected shape (K, {image_shape[0]}, {image_shape[1]})"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{op}: {name} must be finite, got NaN or infinite values")
    return array


def _check_probs(probs: np.ndarray) -> None:
    low, high = float(probs.min()), float(probs.max())
    if low < 0 or high > 1:
        raise ValueError(
            f"dense_crf: probs must be probabilities in [0, 1], got values in [{low:.4g}, {high:.4g}]; "
            "pass softmax probabilities, or unary=-log(p) for energies"
        )
    sums = probs.sum(axis=0, dtype=np.float64)
    worst = np.unravel_index(int(np.argmax(np.abs(sums - 1.0))), sums.shape)
    if abs(sums[worst] - 1.0) > PROBS_SUM_ATOL:
        raise ValueError(
            f"dense_crf: probs must sum to 1 over the class axis 0 (softmax probabilities, tolerance "
            f"{PROBS_SUM_ATOL}); at pixel (row, col) = {tuple(int(i) for i in worst)} they sum to "
            f"{float(sums[worst]):.6g}"
        )


def _check_weight(value: Any, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value):
        raise ValueError(f"dense_crf: {name} must be a finite number (a Potts weight), got {value!r}")
    return float(value)


def _check_compat(compat: Any, k: int) -> np.ndarray:
    array = np.asarray(compat) if isinstance(compat, (np.ndarray, list, tuple)) else None
    if array is None or array.dtype.kind not in "fiu" or array.shape != (k, k):
        shape = array.shape if array is not None else type(compat).__name__
        raise ValueError(
            f"dense_crf: compat must be a ({k}, {k}) matrix for K={k} labels, or None (Potts), got {shape}"
        )
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("dense_crf: compat must be finite")
    if not np.allclose(array, array.T, rtol=1e-6, atol=1e-6):
        raise ValueError(
            "dense_crf: compat must be symmetric (the mean-field update of a pairwise energy only sees its "
            "symmetric part; pydensecrf silently uses 0.5 * (m + m.T) - pass that explicitly)"
        )
    return array


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray | None = None,
    *,
    iterations: int | None = None,
    gaussian_sxy: float | tuple[float, float] | None = None,
    gaussian_compat: float | None = None,
    bilateral_sxy: float | tuple[float, float] | None = None,
    bilateral_srgb: float | tuple[float, float, float] | None = None,
    bilateral_compat: float | None = None,
    compat: np.ndarray | None = None,
    method: str = "permutohedral",
    unary: np.ndarray | None = None,
    preset: str | None = None,
    backend: str | Backend | None = None,
) -> np.ndarray:
    """Refine class probabilities with a fully connected CRF; returns the ``(K, H, W)`` marginals.

    Parameters
    ----------
    image:
        ``(H, W, 3)`` uint8 RGB image.
    probs:
        ``(K, H, W)`` softmax probabilities (float32 or float64, summing to 1 over axis 0 within 1e-3).
        Their unary energy is ``-log(max(p, tiny))``; give ``unary=`` instead to pass energies directly.
    iterations:
        Mean-field iterations (default 10).
    gaussian_sxy, gaussian_compat:
        Smoothness kernel: position standard deviation in pixels (a number or ``(sx, sy)``) and weight
        (default 3, 3).
    bilateral_sxy, bilateral_srgb, bilateral_compat:
        Appearance kernel: position standard deviation in pixels, colour standard deviation in levels (a
        number or one per channel) and weight (default 80, 13, 10: pydensecrf's README values).
    compat:
        ``(K, K)`` symmetric label compatibility ``mu``; the pairwise energy of labels ``(l, l')`` is
        ``mu[l, l'] * (gaussian_compat * k_gaussian + bilateral_compat * k_bilateral)``. ``None`` is Potts
        (``mu = 1 - I``, pydensecrf's ``compat=<number>``).
    method:
        ``"permutohedral"`` (default, O(N) per filtering, matches pydensecrf) or ``"exact"`` (O(N^2) time,
        memory bounded by chunking; for small images).
    unary:
        ``(K, H, W)`` negative log probabilities (energies), instead of ``probs``.
    preset:
        ``"deeplab-largefov"`` (bilateral 4 / 49 / 5, gaussian 3 / 3) or ``"deeplab-v2-resnet"`` (bilateral
        4 / 67 / 3, gaussian 3 / 1), 10 iterations. Arguments passed explicitly (not ``None``) override the
        preset's values.
    backend:
        Backend whose kernels run the filtering (default: the default backend).

    Returns
    -------
    numpy.ndarray
        ``(K, H, W)`` marginals in the dtype of ``probs`` / ``unary``; ``argmax(axis=0)`` is the label map.
    """
    op = "dense_crf"
    check_image(image, "image", op)
    if (probs is None) == (unary is None):
        raise ValueError(
            f"{op}: pass exactly one of probs (softmax probabilities) and unary (negative log probabilities), "
            f"got {'both' if probs is not None else 'neither'}"
        )
    height, width = image.shape[:2]
    if probs is not None:
        scores = _check_scores(probs, "probs", (height, width))
        _check_probs(scores)
    else:
        scores = _check_scores(unary, "unary", (height, width))
    settings = _resolve(
        preset,
        {
            "iterations": iterations,
            "gaussian_sxy": gaussian_sxy,
            "gaussian_compat": gaussian_compat,
            "bilateral_sxy": bilateral_sxy,
            "bilateral_srgb": bilateral_srgb,
            "bilateral_compat": bilateral_compat,
        },
    )
    n_iter = settings["iterations"]
    if not isinstance(n_iter, numbers.Integral) or isinstance(n_iter, bool) or n_iter < 0:
        raise ValueError(f"{op}: iterations must be an int >= 0, got {n_iter!r}")
    smooth_sxy = check_sigma(settings["gaussian_sxy"], 2, "gaussian_sxy", op)
    bilateral_xy = check_sigma(settings["bilateral_sxy"], 2, "bilateral_sxy", op)
    bilateral_rgb = check_sigma(settings["bilateral_srgb"], 3, "bilateral_srgb", op)
    smooth_w = _check_weight(settings["gaussian_compat"], "gaussian_compat")
    bilateral_w = _check_weight(settings["bilateral_compat"], "bilateral_compat")
    k = scores.shape[0]
    mu = None if compat is None else _check_compat(compat, k)
    check_method(method, op)
    target = get_backend(backend)
    xp = target.xp
    dtype = scores.dtype

    # (pixels, labels) layout with labels contiguous: what the filters take, and pydensecrf's own layout.
    flat = np.ascontiguousarray(scores.reshape(k, -1).T)
    if probs is not None:
        flat = -np.log(np.maximum(flat, np.finfo(dtype).tiny))
    u = xp.asarray(flat)
    filters = []
    if smooth_w != 0:
        features = pairwise_features(xp, height, width, smooth_sxy, dtype)
        filters.append((smooth_w, PairwiseFilter(target, features, method)))
    if bilateral_w != 0:
        features = pairwise_features(xp, height, width, bilateral_xy, dtype, image, bilateral_rgb)
        filters.append((bilateral_w, PairwiseFilter(target, features, method)))
    mu_t = None if mu is None else xp.asarray(mu.T.astype(dtype))

    # Q = softmax(-U), then per iteration Q = softmax(-U + sum_k w_k filter_k(Q)) (Potts) or with mu applied;
    # one kernel, so that a backend can fuse the filtering, the compatibility and the softmax.
    q = target.kernel("dense_crf_mean_field")(xp, u, filters, mu_t, int(n_iter))
    return np.ascontiguousarray(target.to_numpy(q).T.reshape(k, height, width).astype(dtype, copy=False))
