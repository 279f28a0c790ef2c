"""Every backend's permutohedral lattice (build, then splat / blur / slice) against the NumPy reference.

Lattices may number their vertices differently, so they are compared through what the numbering encodes:
each point's simplex vertices (coordinates, in remainder order) and barycentric weights, and each of those
vertices' blur neighbours (coordinates, or missing). Filtering must then agree directly.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segcore
from segcore.backend import get_backend
from segcore.crf import dense_crf
from segcore.testing import assert_arrays_agree, backend_params, run_kernel

MISSING = np.iinfo(np.int64).min


def _canonical(backend, lattice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point vertex coordinates (N, d+1, d+1), weights (N, d+1), neighbour coordinates (N, d+1, d+1, 2, d+1))."""
    to_np = get_backend(backend).to_numpy
    offsets, weights = np.asarray(to_np(lattice.offsets)), np.asarray(to_np(lattice.weights))
    vertices, neighbours = np.asarray(to_np(lattice.vertices)), np.asarray(to_np(lattice.neighbours))
    m, d1 = vertices.shape
    padded = np.concatenate([vertices, np.full((1, d1), MISSING)])  # row M: a missing neighbour
    around = padded[neighbours]  # (d+1 axes, 2 sides, M+1, d+1)
    return padded[offsets], weights, np.moveaxis(around, 2, 0)[offsets]


def _features(draw) -> np.ndarray:
    n = draw(st.integers(1, 60))
    d = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["random", "grid", "duplicates"]))
    if kind == "grid":
        # Pixel-grid features (what the CRF builds): exact ties in the simplex search.
        features = rng.integers(0, 6, (n, d)) / draw(st.sampled_from([1.0, 2.0, 3.0]))
    else:
        features = rng.standard_normal((n, d)) * draw(st.sampled_from([0.3, 1.0, 4.0]))
        if kind == "duplicates":
            features[n // 2 :] = features[: n - n // 2]
    return features


@st.composite
def lattice_inputs(draw):
    features = _features(draw)
    c = draw(st.integers(1, 4))
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal((features.shape[0], c))
    return features, values


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("backend", backend_params())
@given(inputs=lattice_inputs(), reverse=st.booleans())
def test_lattice_build_and_filter_agree(backend, dtype, inputs, reverse):
    features, values = (a.astype(dtype) for a in inputs)
    mine = run_kernel("permutohedral_build", backend, features)
    ref = run_kernel("permutohedral_build", "numpy", features)
    assert mine.num_vertices == ref.num_vertices
    (vertices, weights, neighbours), (ref_vertices, ref_weights, ref_neighbours) = (
        _canonical(backend, mine), _canonical("numpy", ref)
    )
    assert np.array_equal(vertices, ref_vertices), "the points' simplices differ"
    assert np.array_equal(neighbours, ref_neighbours), "the blur neighbours differ"
    assert_arrays_agree(weights, ref_weights, what="barycentric weights")
    out = get_backend(backend).to_numpy(run_kernel("permutohedral_filter", backend, mine, values, reverse=reverse))
    expected = run_kernel("permutohedral_filter", "numpy", ref, values, reverse=reverse)
    assert_arrays_agree(np.asarray(out), expected, what=f"permutohedral_filter(reverse={reverse})")


@pytest.mark.parametrize("backend", backend_params())
def test_too_wide_features_are_refused_with_the_reference_message(backend):
    features = np.array([[0.0] * 5, [1e12] * 5])
    with pytest.raises(ValueError, match="more than 64-bit keys"):
        run_kernel("permutohedral_build", backend, features)
    with pytest.raises(ValueError, match="features must be"):
        run_kernel("permutohedral_build", backend, np.zeros((0, 2)))


@pytest.mark.parametrize("backend", backend_params())
def test_dense_crf_marginals_agree(backend):
    # The whole mean-field inference (two lattices, normalisations, 5 iterations) on a small image.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    image[:, 16:] //= 3
    logits = rng.standard_normal((4, 24, 32)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=0)
    q = dense_crf(image, probs, iterations=5, backend=backend)
    expected = dense_crf(image, probs, iterations=5, backend="numpy")
    assert_arrays_agree(q, expected, what="dense_crf marginals")
    assert segcore.get_backend(backend).name == backend


def _crf_filters(backend, image, dtype):
    from segcore.nn.crf import PairwiseFilter, pairwise_features

    target = get_backend(backend)
    h, w = image.shape[:2]
    smooth = pairwise_features(target.xp, h, w, (3.0, 3.0), dtype)
    bilateral = pairwise_features(target.xp, h, w, (20.0, 20.0), dtype, image, (13.0, 13.0, 13.0))
    return [
        (3.0, PairwiseFilter(target, smooth, "permutohedral")),
        (10.0, PairwiseFilter(target, bilateral, "permutohedral")),
    ]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("compat", ["potts", "matrix"])
@pytest.mark.parametrize("kernels", [2, 1, 0])
@pytest.mark.parametrize("backend", backend_params())
def test_dense_crf_mean_field_agrees(backend, dtype, compat, kernels):
    # The inference kernel alone, each backend on its own lattices: Potts and a compatibility matrix, one or
    # both kernels (or none: Q = softmax(-U)), 0 and 4 iterations.
    rng = np.random.default_rng(1)
    h, w, k = 13, 17, 5
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[:, 9:] //= 4
    unary = (rng.standard_normal((h * w, k)) * 2.0).astype(dtype)
    mu_t = None
    if compat == "matrix":
        mu = rng.uniform(0.0, 2.0, (k, k))
        mu_t = ((mu + mu.T) / 2).T.astype(dtype)
    target = get_backend(backend)
    to_backend = target.xp.asarray
    for iterations in (0, 4):
        q = run_kernel(
            "dense_crf_mean_field", backend, unary, _crf_filters(backend, image, dtype)[:kernels],
            None if mu_t is None else to_backend(mu_t), iterations,
        )
        expected = run_kernel(
            "dense_crf_mean_field", "numpy", unary, _crf_filters("numpy", image, dtype)[:kernels], mu_t, iterations
        )
        assert_arrays_agree(np.asarray(target.to_numpy(q)), expected, what=f"Q after {iterations} iterations")


@pytest.mark.parametrize("backend", backend_params())
def test_dense_crf_mean_field_with_exact_filters_agrees(backend):
    # Filters the backend does not fuse (method="exact") still give the reference's result.
    from segcore.nn.crf import PairwiseFilter, pairwise_features

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    unary = rng.standard_normal((99, 3))
    filters = {
        name: [(5.0, PairwiseFilter(get_backend(name), pairwise_features(
            get_backend(name).xp, 9, 11, (4.0, 4.0), np.float64, image, (20.0, 20.0, 20.0)), "exact"))]
        for name in (backend, "numpy")
    }  # fmt: skip
    q = run_kernel("dense_crf_mean_field", backend, unary, filters[backend], None, 3)
    expected = run_kernel("dense_crf_mean_field", "numpy", unary, filters["numpy"], None, 3)
    assert_arrays_agree(np.asarray(get_backend(backend).to_numpy(q)), expected, what="Q with exact filters")
