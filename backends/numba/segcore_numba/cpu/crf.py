"""Numba CPU permutohedral lattice for the dense CRF: build, then splat / blur / slice.

Same maths as :mod:`segcore.kernels.crf` (Adams, Baek & Davis 2010, step for step as Krähenbühl's densecrf):
every point's enclosing simplex is computed with the reference's floating-point operations in the same order,
so both backends build the same lattice (same vertices, same barycentric weights, same blur neighbours) and
filter with the same operator. What differs is the machinery:

* build: the per-point simplex search runs in parallel; vertices are found with an open-addressing hash
  table on the reference's packed int64 keys (densecrf's approach) instead of a global sort, and numbered in
  order of first appearance;
* splat scatters the points in two fixed halves, each into its own copy of the vertex values (reads of the
  ``(N, C)`` values stream; the scattered writes land in the much smaller vertex array), then adds the copies;
  blur and slice are parallel over vertices and points. Every sum runs in a fixed order, so results do not
  depend on the number of threads.

The lattice object, :class:`NumbaLattice`, has the reference lattice's ``offsets``, ``weights``, ``vertices``
and ``neighbours`` with the same meaning (vertex numbering aside).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

__all__ = ["NumbaLattice", "permutohedral_build", "permutohedral_filter", "KERNELS"]

# As the reference: packed keys must leave one bit of headroom below 2**63 for neighbour offsets.
_MAX_PACKED_KEYS = 2**62
# Points are splatted in this many parallel slices, each into its own copy of the vertex values.
_SPLAT_PARTS = 2
# Hash slots are (key, vertex) int64 pairs; the table doubles before it is half full.
_INITIAL_SLOTS = 1 << 12
# A multiplicative hash (Fibonacci hashing, 2**64 / golden ratio as a signed int64): packed keys of
# neighbouring vertices differ in a few low digits, which an identity hash would cluster.
_HASH_MULTIPLIER = -7046029254386353131


@dataclass(frozen=True)
class NumbaLattice:
    """A permutohedral lattice over N points with d features, made by :func:`permutohedral_build`.

    Attributes
    ----------
    offsets, weights, vertices, neighbours:
        As :class:`segcore.kernels.crf.PermutohedralLattice`: per point the ``d+1`` vertex indices and
        barycentric weights (features' dtype), the ``(M, d+1)`` vertex coordinates, and the ``(d+1, 2, M+1)``
        blur neighbours with ``M`` standing for a missing vertex.
    slice_weights:
        ``weights`` times densecrf's ``1 / (1 + 2^-d)``, what slicing applies.
    """

    offsets: np.ndarray
    weights: np.ndarray
    vertices: np.ndarray
    neighbours: np.ndarray
    slice_weights: np.ndarray

    @property
    def num_points(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def dim(self) -> int:
        return int(self.offsets.shape[1]) - 1

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])


@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _simplices(features, coef, rem0, rank, weights):
    """Per point: remainder-0 vertex, coordinate ranks and barycentric weights (the reference's _simplex)."""
    n, d = features.shape
    d1 = d + 1
    for p in prange(n):
        scaled = np.empty(d)
        for k in range(d):
            scaled[k] = features[p, k] * coef[k]
        # elevated_0 = sum of all scaled; elevated_j = (sum after j) - j * scaled_j, summed from the end as
        # the reference's reversed cumsum.
        suffix = np.zeros(d1)
        acc = 0.0
        for k in range(d - 1, -1, -1):
            acc = acc + scaled[k]
            suffix[k] = acc
        elevated = np.empty(d1)
        elevated[0] = suffix[0]
        for j in range(1, d1):
            elevated[j] = suffix[j] - float(j) * scaled[j - 1]
        # Nearest remainder-0 point (half to even, as the reference's round).
        diff = np.empty(d1)
        total = 0.0
        for i in range(d1):
            r0 = np.rint(elevated[i] / d1) * d1
            rem0[p, i] = int(r0)
            diff[i] = elevated[i] - r0
            total += r0
        # Rank of each coordinate when the offsets are sorted in decreasing order, ties by index.
        for i in range(d1):
            count = 0
            for j in range(d1):
                if (j < i and diff[j] >= diff[i]) or (j > i and diff[j] > diff[i]):
                    count += 1
            rank[p, i] = count
        shift = int(np.rint(total / d1))
        for i in range(d1):
            r = rank[p, i] + shift
            if r < 0:
                r += d1
                rem0[p, i] += d1
            elif r > d:
                r -= d1
                rem0[p, i] -= d1
            rank[p, i] = r
        placed = np.empty(d1)
        for i in range(d1):
            placed[d - rank[p, i]] = (elevated[i] - rem0[p, i]) / d1
        weights[p, 0] = placed[0] + 1.0 - placed[d]
        for r in range(1, d1):
            weights[p, r] = placed[r] - placed[r - 1]


@njit(cache=True)
def _slot(key, mask):
    h = key * _HASH_MULTIPLIER
    return (h ^ (h >> 29)) & mask


@njit(cache=True)
def _find(table, key, mask):
    """Vertex index of ``key`` in the hash table, or -1."""
    s = _slot(key, mask)
    while True:
        stored = table[s, 0]
        if stored == key:
            return table[s, 1]
        if stored == -1:
            return -1
        s = (s + 1) & mask


@njit(cache=True)
def _rehashed(table, slots):
    bigger = np.full((slots, 2), -1, dtype=np.int64)
    mask = slots - 1
    for s in range(table.shape[0]):
        key = table[s, 0]
        if key != -1:
            t = _slot(key, mask)
            while bigger[t, 0] != -1:
                t = (t + 1) & mask
            bigger[t, 0] = key
            bigger[t, 1] = table[s, 1]
    return bigger


@njit(cache=True)
def _insert_vertices(rem0, rank, low, strides, initial_slots, offsets):
    """Number every simplex vertex by first appearance; returns (hash table, vertex keys)."""
    n, d1 = rem0.shape
    d = d1 - 1
    table = np.full((initial_slots, 2), -1, dtype=np.int64)
    mask = initial_slots - 1
    keys = np.empty(max(16, n), dtype=np.int64)
    m = 0
    for p in range(n):
        for r in range(d1):
            # Vertex r: rem0 + r on the coordinates of rank <= d - r, rem0 + r - (d+1) on the others; the
            # key packs the first d coordinates (the last follows from the zero sum).
            key = 0
            for i in range(d):
                coord = rem0[p, i] + r - (0 if rank[p, i] <= d - r else d1)
                key += (coord - low[i]) * strides[i]
            s = _slot(key, mask)
            while True:
                stored = table[s, 0]
                if stored == key:
                    offsets[p, r] = table[s, 1]
                    break
                if stored == -1:
                    table[s, 0] = key
                    table[s, 1] = m
                    offsets[p, r] = m
                    if m == keys.shape[0]:
                        grown = np.empty(2 * m, dtype=np.int64)
                        grown[:m] = keys
                        keys = grown
                    keys[m] = key
                    m += 1
                    if 2 * m > table.shape[0]:
                        table = _rehashed(table, 2 * table.shape[0])
                        mask = table.shape[0] - 1
                    break
                s = (s + 1) & mask
    return table, keys[:m]


@njit(parallel=True, fastmath=False, cache=True)
def _vertex_coordinates(keys, low, strides, extents, vertices):
    m, d1 = vertices.shape
    d = d1 - 1
    for v in prange(m):
        total = 0
        for i in range(d):
            c = (keys[v] // strides[i]) % extents[i] + low[i]
            vertices[v, i] = c
            total += c
        vertices[v, d] = -total


@njit(parallel=True, fastmath=False, cache=True)
def _blur_neighbours(table, keys, strides, neighbours):
    d1 = neighbours.shape[0]
    d = d1 - 1
    m = keys.shape[0]
    mask = table.shape[0] - 1
    stride_sum = 0
    for i in range(d):
        stride_sum += strides[i]
    for v in prange(m):
        for j in range(d1):
            # Along lattice axis j: key - 1 + (d+1) e_j and key + 1 - (d+1) e_j (for j = d only the implicit
            # last coordinate moves by d+1).
            delta = -stride_sum + (d1 * strides[j] if j < d else 0)
            for side in range(2):
                found = _find(table, keys[v] + delta if side == 0 else keys[v] - delta, mask)
                neighbours[j, side, v] = m if found < 0 else found
    for j in range(d1):
        neighbours[j, 0, m] = m
        neighbours[j, 1, m] = m


def _strides(rem0: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference's packing: lower corner, mixed-radix strides and extents of the first d coordinates."""
    low = rem0[:, :d].min(axis=0) - 2 * d
    high = rem0[:, :d].max(axis=0) + 2 * d
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
    return low.astype(np.int64), np.asarray(strides, dtype=np.int64), np.asarray(extents, dtype=np.int64)


def permutohedral_build(xp, features) -> NumbaLattice:
    """Build the permutohedral lattice of ``features`` ``(N, d)`` (already divided by the kernel's standard
    deviations). Coordinates are computed in float64; ``weights`` take the features' dtype."""
    if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] < 1:
        raise ValueError(f"permutohedral_build: features must be (N, d) with N, d >= 1, got shape {features.shape}")
    n, d = features.shape
    d1 = d + 1
    i = np.arange(1, d + 1, dtype=np.float64)
    # The reference's scale factors, computed by the same expression.
    coef = math.sqrt(2.0 / 3.0) * (d + 1) / np.sqrt(i * (i + 1.0))
    rem0 = np.empty((n, d1), dtype=np.int64)
    rank = np.empty((n, d1), dtype=np.int64)
    weights64 = np.empty((n, d1), dtype=np.float64)
    _simplices(np.ascontiguousarray(features, dtype=np.float64), coef, rem0, rank, weights64)
    weights = weights64.astype(features.dtype)

    low, strides, extents = _strides(rem0, d)
    offsets = np.empty((n, d1), dtype=np.int64)
    table, keys = _insert_vertices(rem0, rank, low, strides, _INITIAL_SLOTS, offsets)
    m = keys.shape[0]
    vertices = np.empty((m, d1), dtype=np.int64)
    _vertex_coordinates(keys, low, strides, extents, vertices)
    neighbours = np.empty((d1, 2, m + 1), dtype=np.int64)
    _blur_neighbours(table, keys, strides, neighbours)
    # densecrf's alpha (the blur's total mass relative to the Gaussian's) is folded into the slice weights,
    # multiplied in the weights' dtype as the reference does.
    alpha = 1.0 / (1.0 + 2.0 ** (-d))
    return NumbaLattice(
        offsets=offsets,
        weights=weights,
        vertices=vertices,
        neighbours=neighbours,
        slice_weights=weights * alpha,
    )


@njit(parallel=True, fastmath=False, cache=True)
def _splat(values, weights, offsets, parts):
    """Scatter-add every point's weighted values onto its vertices; part ``t`` takes the ``t``-th slice of
    points, in point order, so that threads never share a row and reads of ``values`` stream."""
    n, d1 = offsets.shape
    chunks = parts.shape[0]
    c = values.shape[1]
    per = (n + chunks - 1) // chunks
    for t in prange(chunks):
        part = parts[t]
        part[:, :] = 0
        for p in range(t * per, min(n, (t + 1) * per)):
            for r in range(d1):
                row = part[offsets[p, r]]
                w = weights[p, r]
                for ch in range(c):
                    row[ch] += w * values[p, ch]


@njit(parallel=True, fastmath=False, cache=True)
def _sum_parts(parts):
    """``parts[0] += parts[1] + ...`` row by row, in part order."""
    chunks, rows, c = parts.shape
    for v in prange(rows):
        for t in range(1, chunks):
            for ch in range(c):
                parts[0, v, ch] += parts[t, v, ch]


@njit(parallel=True, fastmath=False, cache=True)
def _blur_axis(src, below, above, dst):
    m = src.shape[0] - 1
    c = src.shape[1]
    half = src.dtype.type(0.5)
    for v in prange(m):
        a = below[v]
        b = above[v]
        for ch in range(c):
            dst[v, ch] = src[v, ch] + half * (src[a, ch] + src[b, ch])
    dst[m, :] = 0


@njit(parallel=True, fastmath=False, cache=True)
def _slice(blurred, offsets, weights, out):
    n, d1 = offsets.shape
    c = blurred.shape[1]
    for p in prange(n):
        for ch in range(c):
            out[p, ch] = 0
        for r in range(d1):
            v = offsets[p, r]
            w = weights[p, r]
            for ch in range(c):
                out[p, ch] += w * blurred[v, ch]


def permutohedral_filter(xp, lattice: NumbaLattice, values, *, reverse: bool = False):
    """Approximate ``sum_j exp(-|f_i - f_j|^2 / 2) values[j]`` for ``values`` ``(N, C)``: splat, blur, slice.

    ``reverse=True`` blurs the lattice axes in the opposite order (the transposed operator). The result has
    ``values``' dtype.
    """
    if not isinstance(lattice, NumbaLattice):
        raise TypeError(
            "permutohedral_filter (numba backend): lattice must come from this backend's permutohedral_build, "
            f"got {type(lattice).__name__}"
        )
    if values.ndim != 2 or values.shape[0] != lattice.num_points:
        raise ValueError(
            f"permutohedral_filter: values must be (N, C) with N = {lattice.num_points} points, "
            f"got shape {values.shape}"
        )
    # The reference's sparse products run in the common type of the weights and the values.
    dtype = np.result_type(lattice.weights.dtype, values.dtype)
    vals = np.ascontiguousarray(values, dtype=dtype)
    m, c = lattice.num_vertices, vals.shape[1]
    # Two splat parts (a fixed number, so the sums do not depend on the thread count), which then serve as
    # the blur's two buffers. Row M stays zero: it stands for every missing neighbour.
    parts = np.empty((_SPLAT_PARTS, m + 1, c), dtype=dtype)
    _splat(vals, lattice.weights.astype(dtype, copy=False), lattice.offsets, parts)
    _sum_parts(parts)
    current, spare = parts[0], parts[1]
    axes = range(lattice.dim, -1, -1) if reverse else range(lattice.dim + 1)
    for j in axes:
        _blur_axis(current, lattice.neighbours[j, 0], lattice.neighbours[j, 1], spare)
        current, spare = spare, current
    out = np.empty((lattice.num_points, c), dtype=dtype)
    _slice(current, lattice.offsets, lattice.slice_weights.astype(dtype, copy=False), out)
    return out.astype(values.dtype, copy=False)


KERNELS = {"permutohedral_build": permutohedral_build, "permutohedral_filter": permutohedral_filter}
