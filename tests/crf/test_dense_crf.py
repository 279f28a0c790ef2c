"""``segcore.crf.dense_crf``: a hand-computed two-pixel case, exact vs permutohedral, pydensecrf (when
installed), edge snapping on a two-colour image, presets and argument errors."""

import math

import numpy as np
import pytest

from segcore.crf import DEFAULTS, PRESETS, dense_crf


def softmax0(x):
    e = np.exp(x - x.max(axis=0))
    return e / e.sum(axis=0)


def scene(h, w, k, rng, noise=1.5):
    """A photo-like image (smooth colour regions with shading, noise and sharp edges) and noisy softmax
    probabilities that favour the true region labels."""
    yy, xx = np.mgrid[0:h, 0:w]
    labels = np.zeros((h, w), dtype=int)
    labels[(xx - 0.35 * w) ** 2 + (yy - 0.5 * h) ** 2 < (0.25 * min(h, w)) ** 2] = 1
    if k > 2:
        labels[(yy > 0.6 * h) & (xx > 0.55 * w)] = 2
    palette = rng.integers(30, 225, (k, 3))
    image = palette[labels].astype(float)
    image += 25 * np.sin(xx / 7.0)[..., None] * np.array([1.0, 0.5, -0.5]) + 15 * np.cos(yy / 5.0)[..., None]
    image += rng.normal(0, 10, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    logits = 2.0 * np.eye(k)[labels].transpose(2, 0, 1) + rng.normal(0, noise, (k, h, w))
    return image, softmax0(logits), labels


# -- a case small enough to compute by hand ----------------------------------------------------------------------
@pytest.mark.parametrize("compat", [None, np.array([[0.5, 2.0], [2.0, -1.0]])])
@pytest.mark.parametrize("iterations", [1, 2])
def test_two_pixels_by_hand(compat, iterations):
    image = np.array([[[10, 20, 30], [25, 20, 10]]], dtype=np.uint8)
    p = np.array([[[0.7, 0.4]], [[0.3, 0.6]]])
    # Neighbours one pixel apart: k = exp(-|df|^2 / 2) for features (x/sxy, y/sxy[, rgb/srgb]); with a 2x2
    # kernel matrix [[1, k], [k, 1]] the symmetric normalisation divides by 1 + k on both sides.
    k_smooth = math.exp(-0.5 * (1 / 2.0) ** 2)
    k_bilateral = math.exp(-0.5 * ((1 / 4.0) ** 2 + (15 / 10.0) ** 2 + (20 / 10.0) ** 2))
    q = p[:, 0, :].copy()  # (labels, pixels)
    for _ in range(iterations):
        message = np.zeros_like(q)
        for weight, kk in ((1.5, k_smooth), (2.0, k_bilateral)):
            message += weight * (q + kk * q[:, ::-1]) / (1 + kk)
        pairwise = -message if compat is None else compat @ message
        q = softmax0(np.log(p[:, 0, :]) - pairwise)
    out = dense_crf(
        image, p, iterations=iterations, gaussian_sxy=2, gaussian_compat=1.5, bilateral_sxy=4, bilateral_srgb=10,
        bilateral_compat=2, compat=compat, method="exact",
    )
    np.testing.assert_allclose(out[:, 0, :], q, rtol=1e-12)


# -- exact vs permutohedral -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_permutohedral_agrees_with_exact_weak_potentials(seed):
    # Weak weights keep the marginals soft, so the comparison sees the filter's approximation error rather
    # than two saturated 0/1 maps.
    image, p, _ = scene(30, 40, 3, np.random.default_rng(seed))
    params = dict(iterations=5, gaussian_compat=1, bilateral_compat=2, bilateral_sxy=20)
    exact = dense_crf(image, p, method="exact", **params)
    lattice = dense_crf(image, p, method="permutohedral", **params)
    change = np.abs(exact - p).mean()
    mad = np.abs(exact - lattice).mean()
    assert change > 0.1  # the CRF did move the marginals
    assert mad < 0.01 and mad < 0.05 * change
    assert (exact.argmax(axis=0) == lattice.argmax(axis=0)).mean() >= 0.98


@pytest.mark.parametrize("seed", [2, 4])
def test_permutohedral_agrees_with_exact_readme_parameters(seed):
    image, p, _ = scene(40, 48, 3, np.random.default_rng(seed))
    exact = dense_crf(image, p, iterations=5, method="exact")
    lattice = dense_crf(image, p, iterations=5)
    assert np.abs(exact - lattice).mean() < 0.02
    assert (exact.argmax(axis=0) == lattice.argmax(axis=0)).mean() >= 0.98


# -- pydensecrf ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("iterations", [5, 10])
def test_matches_pydensecrf(iterations):
    dcrf = pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf2 (test-only reference) is not installed")
    h, w, k = 80, 100, 4
    image, p, _ = scene(h, w, k, np.random.default_rng(7), noise=2.0)
    p = p.astype(np.float32)
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(p).reshape(k, -1)))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
    theirs = np.array(crf.inference(iterations)).reshape(k, h, w)
    ours = dense_crf(image, p, iterations=iterations)
    assert (ours.argmax(axis=0) == theirs.argmax(axis=0)).mean() >= 0.99
    # Stronger than the argmax: same marginals up to float32 rounding.
    assert np.abs(ours - theirs).max() < 1e-3
    assert (ours.argmax(axis=0) != p.argmax(axis=0)).mean() > 0.05  # the CRF changed the labelling


# -- behaviour ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["exact", "permutohedral"])
def test_snaps_a_blurred_map_to_the_colour_edge(method):
    h, w = 16, 24
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:, :12] = (200, 30, 30)
    image[:, 12:] = (30, 30, 200)
    truth = np.tile((np.arange(w) >= 12).astype(int), (h, 1))
    # A soft ramp centred 2.5 pixels right of the true edge: columns 12, 13, 14 are labelled wrongly.
    ramp = 1.0 / (1.0 + np.exp(-(14.5 - np.arange(w)) / 2.0))
    p = np.stack([np.tile(ramp, (h, 1)), 1.0 - np.tile(ramp, (h, 1))])
    assert (p.argmax(axis=0) != truth).sum() == 3 * h
    refined = dense_crf(image, p, method=method)
    assert (refined.argmax(axis=0) != truth).sum() == 0
    # The smoothness kernel alone has no edge to snap to: the error stays.
    smooth_only = dense_crf(image, p, bilateral_compat=0, method=method)
    assert (smooth_only.argmax(axis=0) != truth).sum() >= 2 * h


def test_potts_equals_its_compatibility_matrices():
    image, p, _ = scene(12, 14, 3, np.random.default_rng(3))
    potts = dense_crf(image, p, iterations=3, method="exact")
    # densecrf's Potts is mu = -I; the textbook 1 - I differs by the same amount for every label.
    for mu in (-np.eye(3), 1.0 - np.eye(3)):
        np.testing.assert_allclose(dense_crf(image, p, iterations=3, compat=mu, method="exact"), potts, atol=1e-12)
    # Without any compatibility the pairwise term vanishes and the input comes back.
    np.testing.assert_allclose(dense_crf(image, p, compat=np.zeros((3, 3)), method="exact"), p, atol=1e-12)


def test_unary_and_probs_inputs_agree_and_zero_iterations_is_identity():
    image, p, _ = scene(10, 12, 3, np.random.default_rng(4))
    np.testing.assert_allclose(
        dense_crf(image, unary=-np.log(p), iterations=4), dense_crf(image, p, iterations=4), atol=1e-12
    )
    np.testing.assert_allclose(dense_crf(image, p, iterations=0), p, atol=1e-12)


def test_axes_follow_pydensecrf_sx_sy_convention():
    # (sx, sy) scales columns and rows: transposing the image and swapping sx, sy transposes the result.
    image, p, _ = scene(9, 11, 2, np.random.default_rng(5))
    args = dict(iterations=3, bilateral_srgb=(10, 20, 30), method="exact")
    out = dense_crf(image, p, gaussian_sxy=(1.0, 4.0), bilateral_sxy=(2.0, 8.0), **args)
    flipped = dense_crf(
        np.ascontiguousarray(image.transpose(1, 0, 2)), np.ascontiguousarray(p.transpose(0, 2, 1)),
        gaussian_sxy=(4.0, 1.0), bilateral_sxy=(8.0, 2.0), **args,
    )
    np.testing.assert_allclose(flipped.transpose(0, 2, 1), out, atol=1e-12)
    assert not np.allclose(dense_crf(image, p, gaussian_sxy=(4.0, 1.0), bilateral_sxy=(8.0, 2.0), **args), out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dtype_and_normalisation(dtype):
    image, p, _ = scene(10, 12, 3, np.random.default_rng(6))
    out = dense_crf(image, p.astype(dtype), iterations=2)
    assert out.dtype == dtype and out.shape == p.shape
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_and_overrides(name):
    image, p, _ = scene(10, 12, 3, np.random.default_rng(8))
    values = PRESETS[name]
    explicit = dense_crf(image, p, method="exact", **values)
    np.testing.assert_allclose(dense_crf(image, p, method="exact", preset=name), explicit, atol=1e-12)
    assert not np.allclose(dense_crf(image, p, method="exact"), explicit, atol=1e-6)
    # An explicit argument wins over the preset's value.
    overridden = dict(values, bilateral_srgb=40.0)
    np.testing.assert_allclose(
        dense_crf(image, p, method="exact", preset=name, bilateral_srgb=40.0),
        dense_crf(image, p, method="exact", **overridden),
        atol=1e-12,
    )


def test_published_preset_values():
    # The settings issue 7 specifies (bilateral w / sxy / srgb, gaussian w / sxy) and pydensecrf's README values.
    def settings(gaussian_compat, gaussian_sxy, bilateral_compat, bilateral_sxy, bilateral_srgb):
        return dict(
            iterations=10, gaussian_sxy=gaussian_sxy, gaussian_compat=gaussian_compat, bilateral_sxy=bilateral_sxy,
            bilateral_srgb=bilateral_srgb, bilateral_compat=bilateral_compat,
        )

    assert PRESETS["deeplab-largefov"] == settings(3.0, 3.0, 4.0, 49.0, 5.0)
    assert PRESETS["deeplab-v2-resnet"] == settings(3.0, 1.0, 4.0, 67.0, 3.0)
    assert DEFAULTS == settings(3.0, 3.0, 10.0, 80.0, 13.0)


# -- errors -------------------------------------------------------------------------------------------------------
IMAGE = np.zeros((4, 5, 3), dtype=np.uint8)
PROBS = np.full((2, 4, 5), 0.5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(image=IMAGE.astype(np.float32)), TypeError, "image must be uint8.*got dtype float32"),
        (dict(image=IMAGE[..., 0]), ValueError, r"image must have shape \(H, W, 3\).*got \(4, 5\)"),
        (dict(image=IMAGE[..., :2]), ValueError, r"image must have shape \(H, W, 3\).*got \(4, 5, 2\)"),
        (dict(image=IMAGE.tolist()), TypeError, "image must be a NumPy uint8 array.*got list"),
        (dict(probs=PROBS[0]), ValueError, r"probs must have shape \(K, H, W\).*got \(4, 5\)"),
        (dict(probs=np.full((2, 5, 4), 0.5)), ValueError, r"spatial size \(5, 4\) but image is \(4, 5\)"),
        (dict(probs=np.full((2, 4, 5), 0.6)), ValueError, r"sum to 1 over the class axis.*sum to 1.2"),
        (dict(probs=np.stack([np.full((4, 5), 1.5), np.full((4, 5), -0.5)])), ValueError, r"in \[0, 1\].*-0.5"),
        (dict(probs=np.ones((2, 4, 5), dtype=np.int64)), TypeError, "probs must be float32 or float64.*int64"),
        (dict(probs=np.full((2, 4, 5), np.nan)), ValueError, "probs must be finite"),
        (dict(probs=None), ValueError, "exactly one of probs.*got neither"),
        (dict(unary=np.zeros((2, 4, 5))), ValueError, "exactly one of probs.*got both"),
        (dict(preset="deeplab-largefov2"), ValueError, "unknown preset 'deeplab-largefov2'.*Did you mean 'deeplab-la"),
        (dict(method="mean-shift"), ValueError, r"method must be one of \('permutohedral', 'exact'\).*'mean-shift'"),
        (dict(compat=np.eye(3)), ValueError, r"compat must be a \(2, 2\) matrix for K=2.*got \(3, 3\)"),
        (dict(compat=np.array([[0.0, 1.0], [2.0, 0.0]])), ValueError, "compat must be symmetric"),
        (dict(iterations=-1), ValueError, "iterations must be an int >= 0, got -1"),
        (dict(iterations=2.5), ValueError, "iterations must be an int >= 0, got 2.5"),
        (dict(gaussian_sxy=0), ValueError, "gaussian_sxy must be a positive number.*got 0"),
        (dict(bilateral_srgb=(1, 2)), ValueError, r"bilateral_srgb must be .* sequence of 3.*\(1, 2\)"),
        (dict(bilateral_compat="10"), ValueError, "bilateral_compat must be a finite number.*'10'"),
    ],
)
def test_argument_errors(kwargs, error, match):
    args = dict(image=IMAGE, probs=PROBS)
    args.update(kwargs)
    image = args.pop("image")
    with pytest.raises(error, match=match):
        dense_crf(image, **args)
