"""CRF filtering kernels: the exact filter against a double loop, the permutohedral lattice against a
loop-by-loop transcription of densecrf's lattice (and pydensecrf itself when installed), and the lattice's
geometry checked point by point."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from segcore.backend import get_backend
from segcore.kernels.crf import PermutohedralLattice

BACKEND = get_backend("numpy")
XP = BACKEND.xp
build = BACKEND.kernel("permutohedral_build")
lattice_filter = BACKEND.kernel("permutohedral_filter")
exact_filter = BACKEND.kernel("dense_gaussian_filter_exact")


def random_features(rng, n, d, spread=2.5):
    # Continuous random positions: no rounding or ranking ties, so the loop transcription (ties rounded down)
    # and the kernel (ties to even) build the same lattice.
    return rng.uniform(0.0, spread, (n, d))


# -- exact filter ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [None, 1, 5])
def test_exact_filter_matches_double_loop(chunk_size):
    rng = np.random.default_rng(0)
    f = random_features(rng, 13, 3)
    v = rng.standard_normal((13, 2))
    expected = np.zeros_like(v)
    for i in range(13):
        for j in range(13):
            expected[i] += math.exp(-0.5 * sum((f[i, k] - f[j, k]) ** 2 for k in range(3))) * v[j]
    np.testing.assert_allclose(exact_filter(XP, f, v, chunk_size=chunk_size), expected, rtol=1e-12, atol=1e-12)


# -- permutohedral lattice: loop transcription of densecrf's Permutohedral::init / seqCompute ---------------------
def densecrf_filter_loops(features, values):
    n, d = features.shape
    scale = [math.sqrt(2.0 / 3.0) * (d + 1) / math.sqrt((i + 1) * (i + 2)) for i in range(d)]
    canonical = [[i if j <= d - i else i - (d + 1) for j in range(d + 1)] for i in range(d + 1)]
    table: dict[tuple, int] = {}
    offsets, bary = [], []
    for k in range(n):
        elevated = [0.0] * (d + 1)
        sm = 0.0
        for j in range(d, 0, -1):
            cf = features[k, j - 1] * scale[j - 1]
            elevated[j] = sm - j * cf
            sm += cf
        elevated[0] = sm
        rem0, total = [], 0
        for i in range(d + 1):
            v = elevated[i] / (d + 1)
            up, down = math.ceil(v) * (d + 1), math.floor(v) * (d + 1)
            r = up if up - elevated[i] < elevated[i] - down else down
            rem0.append(r)
            total += r // (d + 1)
        rank = [0] * (d + 1)
        for i in range(d):
            for j in range(i + 1, d + 1):
                if elevated[i] - rem0[i] < elevated[j] - rem0[j]:
                    rank[i] += 1
                else:
                    rank[j] += 1
        for i in range(d + 1):
            rank[i] += total
            if rank[i] < 0:
                rank[i] += d + 1
                rem0[i] += d + 1
            elif rank[i] > d:
                rank[i] -= d + 1
                rem0[i] -= d + 1
        b = [0.0] * (d + 2)
        for i in range(d + 1):
            v = (elevated[i] - rem0[i]) / (d + 1)
            b[d - rank[i]] += v
            b[d - rank[i] + 1] -= v
        b[0] += 1.0 + b[d + 1]
        for r in range(d + 1):
            key = tuple(rem0[i] + canonical[r][rank[i]] for i in range(d))
            offsets.append(table.setdefault(key, len(table)))
            bary.append(b[r])
    m = len(table)
    keys = list(table)
    lattice_values = np.zeros((m + 1, values.shape[1]))  # row m stays 0: "no neighbour"
    for p in range(n):
        for r in range(d + 1):
            lattice_values[offsets[p * (d + 1) + r]] += bary[p * (d + 1) + r] * values[p]
    for j in range(d + 1):
        new = lattice_values.copy()
        for i, key in enumerate(keys):
            n1 = [c - 1 for c in key]
            n2 = [c + 1 for c in key]
            if j < d:
                n1[j] = key[j] + d
                n2[j] = key[j] - d
            new[i] = lattice_values[i] + 0.5 * (
                lattice_values[table.get(tuple(n1), m)] + lattice_values[table.get(tuple(n2), m)]
            )
        lattice_values = new
    alpha = 1.0 / (1.0 + 2.0 ** (-d))
    out = np.zeros_like(values, dtype=np.float64)
    for p in range(n):
        for r in range(d + 1):
            out[p] += bary[p * (d + 1) + r] * lattice_values[offsets[p * (d + 1) + r]] * alpha
    return out, m


@pytest.mark.parametrize("n, d, spread", [(40, 2, 3.0), (30, 5, 2.0), (25, 3, 6.0), (1, 4, 1.0)])
def test_permutohedral_filter_matches_densecrf_loops(n, d, spread):
    rng = np.random.default_rng(d)
    f = random_features(rng, n, d, spread)
    v = rng.standard_normal((n, 3))
    expected, m = densecrf_filter_loops(f, v)
    lattice = build(XP, f)
    assert isinstance(lattice, PermutohedralLattice)
    assert lattice.num_vertices == m
    np.testing.assert_allclose(lattice_filter(XP, lattice, v), expected, rtol=1e-10, atol=1e-12)


def elevate_by_matrix(f):
    """Adams et al.'s elevation as an explicit (d+1) x d matrix: column j has j+1 copies of s_j followed by
    -(j+1) s_j, with s_j = sqrt(2/3) (d+1) / sqrt((j+1)(j+2))."""
    n, d = f.shape
    e = np.zeros((d + 1, d))
    for j in range(d):
        s = math.sqrt(2.0 / 3.0) * (d + 1) / math.sqrt((j + 1) * (j + 2))
        e[: j + 1, j] = s
        e[j + 1, j] = -(j + 1) * s
    return f @ e.T


@pytest.mark.parametrize("d", [1, 2, 5])
def test_lattice_geometry(d):
    rng = np.random.default_rng(10 + d)
    f = random_features(rng, 200, d, 4.0)
    lat = build(XP, f)
    assert lat.offsets.shape == (200, d + 1) and lat.weights.shape == (200, d + 1)
    # Barycentric weights: non-negative, summing to 1, reconstructing the elevated point from its vertices.
    assert np.all(lat.weights >= -1e-12)
    np.testing.assert_allclose(lat.weights.sum(axis=1), 1.0, atol=1e-12)
    corners = lat.vertices[lat.offsets]  # (N, d+1 vertices, d+1 coordinates)
    np.testing.assert_allclose(np.einsum("nr,nrc->nc", lat.weights, corners), elevate_by_matrix(f), atol=1e-9)
    # Vertex r of a simplex is a remainder-r lattice point: coordinates all congruent to r mod d+1, sum 0.
    assert np.all(lat.vertices.sum(axis=1) == 0)
    assert np.all(corners % (d + 1) == np.arange(d + 1)[None, :, None])
    # Each point's d+1 vertices are distinct, and every vertex is used by some point.
    assert all(len(set(row)) == d + 1 for row in lat.offsets.tolist())
    assert set(lat.offsets.ravel().tolist()) == set(range(lat.num_vertices))


@pytest.mark.parametrize("d", [2, 5])
def test_blur_neighbours_are_the_lattice_neighbours(d):
    rng = np.random.default_rng(20 + d)
    lat = build(XP, random_features(rng, 150, d, 3.0))
    m = lat.num_vertices
    where = {tuple(v): i for i, v in enumerate(lat.vertices.tolist())}
    assert lat.neighbours.shape == (d + 1, 2, m + 1)
    assert np.all(lat.neighbours[:, :, m] == m)
    for j in range(d + 1):
        step = -np.ones(d + 1, dtype=np.int64)
        step[j] += d + 1
        for i, v in enumerate(lat.vertices):
            assert lat.neighbours[j, 0, i] == where.get(tuple(v + step), m)
            assert lat.neighbours[j, 1, i] == where.get(tuple(v - step), m)


def test_reverse_filter_is_the_adjoint():
    rng = np.random.default_rng(3)
    lat = build(XP, random_features(rng, 60, 5, 2.0))
    x, y = rng.standard_normal((60, 2)), rng.standard_normal((60, 2))
    forward = np.sum(lattice_filter(XP, lat, x) * y)
    np.testing.assert_allclose(forward, np.sum(x * lattice_filter(XP, lat, y, reverse=True)), rtol=1e-12)
    # The forward order alone is not symmetric on this (sparse, cut) lattice: the two orders are told apart.
    assert abs(forward - np.sum(x * lattice_filter(XP, lat, y))) > 1e-6 * abs(forward)


def test_filter_of_a_constant_is_the_constant_after_normalisation():
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:12, 0:15]
    colour = rng.integers(0, 256, (12, 15))
    f = np.stack([xx.ravel() / 3.0, yy.ravel() / 3.0, colour.ravel() / 13.0], axis=1)
    lat = build(XP, f)
    ones = lattice_filter(XP, lat, np.ones((180, 1)))
    assert np.all(ones > 0)
    constant = lattice_filter(XP, lat, np.full((180, 2), 2.5))
    np.testing.assert_allclose(constant / ones, 2.5, rtol=1e-12)


def test_permutohedral_approximates_the_unit_gaussian():
    # On a fine 2-D grid the lattice's impulse response is close to exp(-r^2 / 2) in feature units: fitting
    # log(response) against r^2 gives the Gaussian's standard deviation (1 for the exact kernel).
    s = 6.0
    yy, xx = np.mgrid[0:61, 0:61]
    f = np.stack([xx.ravel() / s, yy.ravel() / s], axis=1)
    impulse = np.zeros((f.shape[0], 1))
    centre = 30 * 61 + 30
    impulse[centre] = 1.0
    response = lattice_filter(XP, build(XP, f), impulse)[:, 0]
    r2 = ((f - f[centre]) ** 2).sum(axis=1)
    near = response > 1e-2 * response.max()
    slope = np.polyfit(r2[near], np.log(response[near]), 1)[0]
    assert abs(1.0 / math.sqrt(-2.0 * slope) - 1.0) < 0.05


def test_float32_features_give_float32_weights_and_output():
    rng = np.random.default_rng(5)
    f = random_features(rng, 50, 3).astype(np.float32)
    lat = build(XP, f)
    assert lat.weights.dtype == np.float32
    v = rng.standard_normal((50, 4)).astype(np.float32)
    out = lattice_filter(XP, lat, v)
    assert out.dtype == np.float32
    expected = densecrf_filter_loops(f.astype(np.float64), v.astype(np.float64))[0]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_kernel_argument_errors():
    lat = build(XP, np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"values must be \(N, C\) with N = 4"):
        lattice_filter(XP, lat, np.zeros((5, 1)))
    with pytest.raises(ValueError, match=r"features must be \(N, d\)"):
        build(XP, np.zeros(4))
    with pytest.raises(ValueError, match="more than 64-bit keys"):
        build(XP, np.array([[0.0] * 5, [1e5] * 5]))
    with pytest.raises(ValueError, match="same N"):
        exact_filter(XP, np.zeros((3, 2)), np.zeros((4, 1)))
    # Splat and slice are CSR products: a namespace without a CSR module must bring its own kernels.
    with pytest.raises(NotImplementedError, match="'array_api_compat.torch'.*overrides 'permutohedral_build'"):
        build(SimpleNamespace(__name__="array_api_compat.torch"), np.zeros((4, 2)))


@pytest.mark.parametrize("kind", ["gaussian", "bilateral"])
def test_normalised_filter_matches_pydensecrf(kind):
    dcrf = pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf2 (test-only reference) is not installed")
    from segcore.nn.crf import PairwiseFilter, pairwise_features

    rng = np.random.default_rng(6)
    h, w = 30, 40
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[:, :20] = (50, 120, 200)
    # pydensecrf exposes its filter only through inference: with two labels and a Potts weight of 1, one
    # iteration gives log Q1[0] - log Q1[1] = -(U0 - U1) + filter(Q0[0] - Q0[1]).
    unary = rng.standard_normal((2, h * w)).astype(np.float32)
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(unary)
    if kind == "gaussian":
        crf.addPairwiseGaussian(sxy=3, compat=1.0)
        features = pairwise_features(XP, h, w, (3.0, 3.0), np.float64)
    else:
        crf.addPairwiseBilateral(sxy=5, srgb=13, rgbim=image, compat=1.0)
        features = pairwise_features(XP, h, w, (5.0, 5.0), np.float64, image, (13.0, 13.0, 13.0))
    q1 = np.array(crf.inference(1))
    theirs = np.log(q1[0]) - np.log(q1[1]) + unary[0] - unary[1]
    q0 = np.exp(-unary.astype(np.float64))
    q0 /= q0.sum(axis=0)
    ours = PairwiseFilter(BACKEND, features, "permutohedral")((q0[0] - q0[1])[:, None])[:, 0]
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
