"""Reference kernels of the fully connected CRF: Gaussian filtering in feature space, exact or permutohedral.

Both filters compute ``out[i] = sum_j k(f_i, f_j) values[j]`` with ``k(f_i, f_j) = exp(-|f_i - f_j|^2 / 2)``
over all pairs of points, the pixel itself included (densecrf includes it too):

* ``dense_gaussian_filter_exact`` evaluates the sum directly, O(N^2), in row chunks that bound memory; it is
  the reference for small images and for gradient checks.
* ``permutohedral_build`` + ``permutohedral_filter`` approximate it in O(N) with the permutohedral lattice of
  Adams, Baek & Davis (2010), step for step as Krähenbühl's densecrf (and so pydensecrf) does it: the
  features are elevated onto the plane ``x . 1 = 0`` of R^(d+1), each point's enclosing simplex is found from
  its nearest remainder-0 lattice point and the ranking of its offsets, values are splatted onto the simplex
  vertices with barycentric weights, blurred with ``[1/2, 1, 1/2]`` along each of the d+1 lattice directions
  and sliced back with the same weights, scaled by densecrf's ``1 / (1 + 2^-d)``.

The lattice is built once per feature set and reused for every filtering (all iterations and all labels).
Its hash table is vectorised: vertex keys are packed into one int64 each, de-duplicated by a sort, and blur
neighbours are found by ``searchsorted`` on the sorted keys. Splat and slice are sparse-matrix products with
the ``(M, N)`` splat matrix and its transpose: ``scipy.sparse`` for NumPy arrays and ``cupyx.scipy.sparse``
for CuPy arrays, the same API, so one reference serves both (a sparse product runs the gather-multiply-add
of a splat in one pass where NumPy's ``bincount`` needs one pass per label channel). A backend that stores a
lattice differently overrides both permutohedral kernels together.

``dense_crf_mean_field`` is the whole mean-field inference of :func:`segcore.crf.dense_crf` over those
filters, one kernel so that a backend can fuse slicing, normalisation, compatibility and softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

__all__ = [
    "PermutohedralLattice",
    "permutohedral_build",
    "permutohedral_filter",
    "dense_gaussian_filter_exact",
    "dense_crf_mean_field",
    "KERNELS",
]

# Keys pack the d free coordinates of a lattice point into one signed 64-bit integer; one bit of headroom
# keeps the neighbour offsets (key +- a few strides) from overflowing.
_MAX_PACKED_KEYS = 2**62
# Elements of one (rows x N) block of pairwise weights in the exact filter: 4 Mi float64 = 32 MiB.
_EXACT_BLOCK_ELEMENTS = 2**22


@dataclass(frozen=True)
class PermutohedralLattice:
    """A permutohedral lattice built over N points with d features (made by ``permutohedral_build``).

    Attributes
    ----------
    offsets:
        ``(N, d+1)`` int64: index of the lattice vertex of remainder ``r`` of each point's enclosing simplex.
    weights:
        ``(N, d+1)`` barycentric weights of those vertices (non-negative, summing to 1 per point), in the
        features' dtype.
    vertices:
        ``(M, d+1)`` int64 coordinates of the vertices in the elevated space (each row sums to 0).
    neighbours:
        ``(d+1, 2, M+1)`` int64: for lattice axis ``j`` the vertex at ``-1 + (d+1) e_j`` (``[:, 0]``) and at
        ``+1 - (d+1) e_j`` (``[:, 1]``) from each vertex; ``M`` where that vertex does not exist. Column ``M``
        is a sentinel that points to itself, so a blur can gather from a zero row appended at index ``M``.
    splat_matrix, slice_matrix:
        ``(M, N)`` and ``(N, M)`` sparse matrices (CSR) holding ``weights`` at ``(offsets, point)``; the
        slice matrix's are scaled by densecrf's ``1 / (1 + 2^-d)``.
    """

    offsets: Any
    weights: Any
    vertices: Any
    neighbours: Any
    splat_matrix: Any
    slice_matrix: Any

    @property
    def num_points(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def dim(self) -> int:
        return int(self.offsets.shape[1]) - 1

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])


def _sparse_module(xp):
    """``scipy.sparse`` for the NumPy namespace, ``cupyx.scipy.sparse`` for CuPy's: same CSR API."""
    name = getattr(xp, "__name__", "")
    if name in ("numpy", "array_api_compat.numpy"):
        import scipy.sparse

        return scipy.sparse
    if name in ("cupy", "array_api_compat.cupy"):
        import cupyx.scipy.sparse

        return cupyx.scipy.sparse
    raise NotImplementedError(
        f"the reference permutohedral kernels need a CSR sparse-matrix module for the array namespace {name!r}; "
        "a backend on another array library overrides 'permutohedral_build' and 'permutohedral_filter'"
    )


def _elevate(xp, features):
    """Adams et al.'s ``E p``: the features on the hyperplane ``x . 1 = 0`` of R^(d+1), scaled so that the
    lattice blur approximates a unit-variance Gaussian in feature space (densecrf's ``inv_std_dev``)."""
    n, d = features.shape
    i = xp.arange(1, d + 1, dtype=xp.float64)
    scaled = features * (math.sqrt(2.0 / 3.0) * (d + 1) / xp.sqrt(i * (i + 1.0)))
    # suffix[:, k] = sum of scaled[:, k:]: elevated_0 = sum of all, elevated_j = sum after j - j * scaled_j.
    suffix = xp.flip(xp.cumsum(xp.flip(scaled, axis=1), axis=1), axis=1)
    after = xp.concatenate([suffix[:, 1:], xp.zeros((n, 1), dtype=xp.float64)], axis=1)
    return xp.concatenate([suffix[:, :1], after - i * scaled], axis=1)


def _by_rank(xp, values, slots):
    """``out[n, slots[n, i]] = values[n, i]`` for ``slots`` a permutation of ``0..d`` in every row."""
    n, d1 = slots.shape
    out = xp.empty(n * d1, dtype=values.dtype)
    out[(xp.arange(n, dtype=xp.int64)[:, None] * d1 + slots).reshape(-1)] = values.reshape(-1)
    return out.reshape(n, d1)


def _simplex(xp, elevated):
    """The remainder-0 vertex, per-coordinate rank and barycentric weights of each point's simplex."""
    n, d1 = elevated.shape
    d = d1 - 1
    # Nearest remainder-0 point: every coordinate rounded to a multiple of d+1 (half to even, as SSE does).
    rem0 = xp.round(elevated / d1) * d1
    diff = elevated - rem0
    # rank[i] = place of coordinate i when the offsets are sorted in decreasing order, ties by index: the
    # comparison network of densecrf's loop, written per column so no sort of the (N, d+1) array is needed.
    columns = []
    for i in range(d1):
        count = xp.zeros(n, dtype=xp.int64)
        for j in range(d1):
            if j < i:
                count = count + (diff[:, j] >= diff[:, i]).astype(xp.int64)
            elif j > i:
                count = count + (diff[:, j] > diff[:, i]).astype(xp.int64)
        columns.append(count)
    rank = xp.stack(columns, axis=1)
    # The rounded point may be off the plane by a whole number of steps; shifting the ranks by that number
    # and wrapping the ones that leave [0, d] moves it back (Adams et al., p. 5).
    total = xp.round(xp.sum(rem0, axis=1) / d1).astype(xp.int64)
    rank = rank + total[:, None]
    wrap = (rank < 0).astype(xp.int64) - (rank > d).astype(xp.int64)
    rank = rank + d1 * wrap
    rem0 = rem0 + d1 * wrap
    # Barycentric weights (Adams et al., p. 10): with v_i = (elevated_i - rem0_i) / (d+1) placed at position
    # p = d - rank_i, weight_p = v_(p) - v_(p-1), and weight_0 takes the wrap-around 1 - v_(d).
    v = (elevated - rem0) / d1
    placed = _by_rank(xp, v, d - rank)
    weights = xp.concatenate(
        [placed[:, :1] + 1.0 - placed[:, d:], placed[:, 1:] - placed[:, :-1]], axis=1
    )
    return rem0.astype(xp.int64), rank, weights


def _strides(xp, rem0, d: int) -> tuple[Any, list[int], list[int]]:
    """Lower corner and mixed-radix strides that pack the first d coordinates of any vertex (or of a blur
    neighbour of one) into a distinct int64."""
    # A vertex coordinate lies within d of the point's rem0 coordinate, a neighbour within 2d more.
    low = xp.min(rem0[:, :d], axis=0) - 2 * d
    high = xp.max(rem0[:, :d], axis=0) + 2 * d
    extents = [int(e) for e in (high - low + 1)]
    strides, size = [], 1
    for e in extents:
        strides.append(size)
        size *= e
    if size >= _MAX_PACKED_KEYS:
        raise ValueError(
            f"permutohedral_build: the features span {extents} lattice cells per axis, more than 64-bit keys "
            "can index; use larger kernel standard deviations (sxy, srgb) or method='exact'"
        )
    return low, strides, extents


def permutohedral_build(xp, features) -> PermutohedralLattice:
    """Build the permutohedral lattice of ``features`` ``(N, d)`` (already divided by the kernel's standard
    deviations). Coordinates are computed in float64; ``weights`` take the features' dtype."""
    if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] < 1:
        raise ValueError(f"permutohedral_build: features must be (N, d) with N, d >= 1, got shape {features.shape}")
    n, d = features.shape
    d1 = d + 1
    sparse = _sparse_module(xp)
    rem0, rank, weights = _simplex(xp, _elevate(xp, features.astype(xp.float64)))
    weights = weights.astype(features.dtype)

    low, strides, extents = _strides(xp, rem0, d)
    stride = xp.asarray(strides, dtype=xp.int64)
    stride_sum = sum(strides)
    base = xp.sum((rem0[:, :d] - low) * stride, axis=1)
    # Vertex r of the simplex is rem0 plus densecrf's canonical offset: r on the coordinates of rank <= d - r,
    # r - (d+1) on the others. Packed keys are linear, so the offset is added to the packed rem0 directly:
    # key_r = base + r * sum(strides) - (d+1) * (sum of the strides of the r coordinates ranked last). The
    # implicit last coordinate has stride 0.
    by_rank = _by_rank(xp, xp.broadcast_to(xp.concatenate([stride, xp.zeros(1, dtype=xp.int64)]), rank.shape), rank)
    ranked_last = xp.concatenate(
        [xp.zeros((n, 1), dtype=xp.int64), xp.cumsum(xp.flip(by_rank, axis=1), axis=1)[:, :d]], axis=1
    )
    keys = (base[:, None] + xp.arange(d1, dtype=xp.int64) * stride_sum - d1 * ranked_last).reshape(-1)

    # The hash table: sorting the keys groups the N (d+1) (point, vertex) pairs by vertex. Sort stability is
    # not needed (column order within a CSR row is free), and the unstable sort is several times faster.
    order = xp.argsort(keys, stable=False)
    sorted_keys = keys[order]
    first = xp.concatenate([xp.ones(1, dtype=xp.bool), sorted_keys[1:] != sorted_keys[:-1]])
    vertex_of_sorted = xp.cumsum(first.astype(xp.int64)) - 1
    unique_keys = sorted_keys[first]
    m = int(unique_keys.shape[0])
    offsets = xp.empty(n * d1, dtype=xp.int64)
    offsets[order] = vertex_of_sorted

    # Coordinates of the vertices, unpacked; the last one follows from the zero sum.
    free = xp.stack([(unique_keys // s) % e + low[i] for i, (s, e) in enumerate(zip(strides, extents))], axis=1)
    vertices = xp.concatenate([free, -xp.sum(free, axis=1, keepdims=True)], axis=1)

    # Blur neighbours along axis j: key - 1 + (d+1) e_j and key + 1 - (d+1) e_j (for j = d only the implicit
    # last coordinate moves by d+1, so the d stored ones just move by -1 / +1).
    sentinel = xp.full((1,), m, dtype=xp.int64)
    rows = []
    for j in range(d1):
        delta = -stride_sum + (d1 * strides[j] if j < d else 0)
        pair = []
        for query in (unique_keys + delta, unique_keys - delta):
            found_at = xp.minimum(xp.searchsorted(unique_keys, query), m - 1)
            pair.append(xp.concatenate([xp.where(unique_keys[found_at] == query, found_at, m), sentinel]))
        rows.append(xp.stack(pair))
    neighbours = xp.stack(rows)

    # CSR needs int32 indices where they fit (scipy would convert them itself, at the cost of a copy).
    index = xp.int32 if n * d1 < 2**31 else xp.int64
    flat_weights = weights.reshape(-1)
    row_starts = xp.concatenate(
        [xp.nonzero(first)[0].astype(index), xp.full((1,), n * d1, dtype=index)]
    )
    splat = sparse.csr_matrix(
        (flat_weights[order], (order // d1).astype(index), row_starts), shape=(m, n)
    )
    # densecrf's alpha, the lattice blur's total mass relative to the Gaussian's, is folded into the slice.
    alpha = 1.0 / (1.0 + 2.0 ** (-d))
    slice_ = sparse.csr_matrix(
        (flat_weights * alpha, offsets.astype(index), xp.arange(0, n * d1 + 1, d1, dtype=index)), shape=(n, m)
    )
    return PermutohedralLattice(
        offsets=offsets.reshape(n, d1),
        weights=weights,
        vertices=vertices,
        neighbours=neighbours,
        splat_matrix=splat,
        slice_matrix=slice_,
    )


def permutohedral_filter(xp, lattice: PermutohedralLattice, values, *, reverse: bool = False):
    """Approximate ``sum_j exp(-|f_i - f_j|^2 / 2) values[j]`` for ``values`` ``(N, C)``: splat, blur, slice.

    ``reverse=True`` blurs the lattice axes in the opposite order, which applies the transposed operator
    (each axis blur is symmetric; their product is not, where missing vertices cut the lattice). The result
    has ``values``' dtype.
    """
    if values.ndim != 2 or values.shape[0] != lattice.num_points:
        raise ValueError(
            f"permutohedral_filter: values must be (N, C) with N = {lattice.num_points} points, "
            f"got shape {values.shape}"
        )
    d = lattice.dim
    splatted = lattice.splat_matrix @ values
    # A zero row at index M stands for every missing neighbour.
    blurred = xp.concatenate([xp.asarray(splatted), xp.zeros((1, values.shape[1]), dtype=splatted.dtype)])
    axes = range(d, -1, -1) if reverse else range(d + 1)
    for j in axes:
        below, above = lattice.neighbours[j]
        blurred = blurred + 0.5 * (xp.take(blurred, below, axis=0) + xp.take(blurred, above, axis=0))
    return xp.asarray(lattice.slice_matrix @ blurred[:-1]).astype(values.dtype, copy=False)


def dense_gaussian_filter_exact(xp, features, values, *, chunk_size: int | None = None):
    """``out[i] = sum_j exp(-|f_i - f_j|^2 / 2) values[j]`` for ``features`` ``(N, d)`` and ``values``
    ``(N, C)``, by direct summation over all pairs, ``chunk_size`` rows of weights at a time (by default as
    many as keep one block at 4 Mi elements). The result has ``values``' dtype."""
    if features.ndim != 2 or values.ndim != 2 or values.shape[0] != features.shape[0]:
        raise ValueError(
            "dense_gaussian_filter_exact: features must be (N, d) and values (N, C) with the same N, got "
            f"shapes {features.shape} and {values.shape}"
        )
    n, d = features.shape
    if chunk_size is None:
        chunk_size = max(1, _EXACT_BLOCK_ELEMENTS // n)
    if chunk_size < 1:
        raise ValueError(f"dense_gaussian_filter_exact: chunk_size must be >= 1, got {chunk_size}")
    blocks = []
    for start in range(0, n, chunk_size):
        rows = features[start : start + chunk_size]
        # Per-feature differences rather than |a|^2 + |b|^2 - 2ab: no cancellation for nearby points.
        squared = xp.zeros((rows.shape[0], n), dtype=features.dtype)
        for k in range(d):
            delta = rows[:, k : k + 1] - features[None, :, k]
            squared = squared + delta * delta
        blocks.append(xp.exp(-0.5 * squared).astype(values.dtype) @ values)
    return xp.concatenate(blocks, axis=0)


def _softmax_rows(xp, x):
    e = xp.exp(x - xp.max(x, axis=1, keepdims=True))
    # einsum sums the short label axis several times faster than sum(axis=1) (NumPy reduces row by row).
    return e / xp.einsum("nk->n", e)[:, None]


def dense_crf_mean_field(xp, unary, filters, compat_t, iterations: int):
    """Mean-field inference of a dense CRF (pydensecrf's ``DenseCRF.inference``); returns ``Q`` ``(N, K)``.

    ``unary`` ``(N, K)`` are the unary energies (labels contiguous). ``filters`` is a sequence of
    ``(weight, filter)`` pairs, ``filter`` a :class:`segcore.nn.crf.PairwiseFilter` (``filter(Q)`` is its
    normalised filtering ``n * K(n * Q)``; a backend may read its ``method``, ``lattice`` and ``norm`` to run
    it another way). ``compat_t`` is the transposed ``(K, K)`` label compatibility ``mu.T`` in the unary's
    dtype, or ``None`` for Potts. ``Q = softmax(-U)``, then ``iterations`` times, with
    ``m = sum_k weight_k filter_k(Q)``: ``Q = softmax(-U + m)`` (Potts in densecrf's form, ``-w`` on the label
    itself) or ``Q = softmax(-U - m @ mu.T)``. With no filters the iterations change nothing.
    """
    q = _softmax_rows(xp, -unary)
    for _ in range(int(iterations)):
        message = None
        for weight, filt in filters:
            term = filt(q) * weight
            message = term if message is None else message + term
        if message is None:
            break
        q = _softmax_rows(xp, -unary + message if compat_t is None else -unary - message @ compat_t)
    return q


KERNELS: dict[str, Callable] = {
    "permutohedral_build": permutohedral_build,
    "permutohedral_filter": permutohedral_filter,
    "dense_gaussian_filter_exact": dense_gaussian_filter_exact,
    "dense_crf_mean_field": dense_crf_mean_field,
}
