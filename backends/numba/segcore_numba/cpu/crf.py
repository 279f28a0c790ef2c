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
  depend on the number of threads;
* ``dense_crf_mean_field`` (the whole inference of :func:`segcore.crf.dense_crf`) fuses one iteration into a
  single pass over the points: slice both kernels' blurred lattices (normalisation and kernel weight folded
  into the slice weights), apply the compatibility, take the softmax (float32: a vectorised Cephes ``expf``,
  within a few ulp of ``np.exp``) and splat the new ``Q`` straight into both lattices for the next iteration,
  so ``Q`` and the message never go through memory; then d+1 blurs per lattice.

The lattice object, :class:`NumbaLattice`, has the reference lattice's ``offsets``, ``weights``, ``vertices``
and ``neighbours`` with the same meaning (vertex numbering aside).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from segcore.kernels import crf as reference

__all__ = ["NumbaLattice", "permutohedral_build", "permutohedral_filter", "dense_crf_mean_field", "KERNELS"]

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
    ``values``' dtype. A lattice of the reference's kind (this backend builds one for float16 features, which
    Numba cannot compile for) is filtered by the reference.
    """
    if isinstance(lattice, reference.PermutohedralLattice):
        return reference.permutohedral_filter(xp, lattice, values, reverse=reverse)
    if not isinstance(lattice, NumbaLattice):
        raise TypeError(
            "permutohedral_filter (numba backend): lattice must come from permutohedral_build, "
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


# -- fused mean-field inference -----------------------------------------------------------------------------------
# The fused pass splats the new Q into this many per-part copies of each lattice (a fixed number, so that the
# sums do not depend on the thread count); the first blur axis adds them up.
_FUSED_PARTS = 2


# float32 inference takes its exponentials from _softmax_into's fast path (False: np.exp, as the reference).
_FAST_EXP = True
# Cephes' expf for float32 softmax: x = n ln2 + r (two-part ln2), a degree-6 polynomial for exp(r), and 2^n
# from the exponent bits. Within 2 ulp of exp, and a plain loop that LLVM vectorises (np.exp is a libm call
# per element). Arguments are <= 0 here; below _EXP_LOW they are clamped (exp(-87.3) ~ 1e-38, not 0).
_EXP_LOW = np.float32(-87.3)
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_HALF32 = np.float32(0.5)
_ONE32 = np.float32(1.0)
_P0, _P1, _P2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
_P3, _P4, _P5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)


@njit(fastmath=True, cache=True)
def _softmax_into(x, out, bits, fast):
    """``out = softmax(x)``; ``fast`` (float32 only) uses the vectorised exp above, ``bits`` an int32 scratch."""
    c = x.shape[0]
    top = x[0]
    for ch in range(1, c):
        if x[ch] > top:
            top = x[ch]
    total = out.dtype.type(0)
    if fast:
        scale = bits.view(np.float32)
        for ch in range(c):
            v = max(np.float32(x[ch] - top), _EXP_LOW)
            n = np.floor(v * _LOG2E + _HALF32)
            r = v - n * _LN2_HI - n * _LN2_LO
            z = r * r
            y = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * z + r + _ONE32
            bits[ch] = (np.int32(n) + np.int32(127)) << np.int32(23)
            out[ch] = y
        for ch in range(c):
            e = out[ch] * scale[ch]
            out[ch] = e
            total += e
    else:
        for ch in range(c):
            e = np.exp(x[ch] - top)
            out[ch] = e
            total += e
    for ch in range(c):
        out[ch] = out[ch] / total


@njit(fastmath=True, cache=True)
def _slice_point(blurred, offsets, weights, p, m):
    """``m += sum_r weights[p, r] * blurred[offsets[p, r]]``."""
    c = m.shape[0]
    for r in range(offsets.shape[1]):
        src = blurred[offsets[p, r]]
        w = weights[p, r]
        for ch in range(c):
            m[ch] += w * src[ch]


@njit(fastmath=True, cache=True)
def _splat_point(part, offsets, weights, p, q):
    c = q.shape[0]
    for r in range(offsets.shape[1]):
        row = part[offsets[p, r]]
        w = weights[p, r]
        for ch in range(c):
            row[ch] += w * q[ch]


@njit(parallel=True, fastmath=True, cache=True)
def _fused_pass(
    blur_a, off_a, slice_a, splat_a, parts_a, blur_b, off_b, slice_b, splat_b, parts_b, two, has_message,
    unary, compat_t, potts, q, write_q, splat, fast_exp,
):
    """One mean-field update, point by point: slice the blurred lattices (``a``, and ``b`` if ``two``) into the
    message (none if not ``has_message``), apply the compatibility, ``Q = softmax(-U -/+ ...)``, write it
    (if ``write_q``) and, if ``splat``, splat it into part ``t`` of the lattices for the next iteration.
    ``fast_exp`` (float32 only) takes the softmax's exponentials from the vectorised ``expf``."""
    n, c = unary.shape
    parts = parts_a.shape[0]
    per = (n + parts - 1) // parts
    for t in prange(parts):
        part_a = parts_a[t]
        part_b = parts_b[t]
        if splat:
            part_a[:, :] = 0
            if two:
                part_b[:, :] = 0
        m = np.empty(c, dtype=unary.dtype)
        x = np.empty(c, dtype=unary.dtype)
        e = np.empty(c, dtype=unary.dtype)
        bits = np.empty(c, dtype=np.int32)
        for p in range(t * per, min(n, (t + 1) * per)):
            for ch in range(c):
                m[ch] = 0
            if has_message:
                _slice_point(blur_a, off_a, slice_a, p, m)
                if two:
                    _slice_point(blur_b, off_b, slice_b, p, m)
            if potts:
                for ch in range(c):
                    x[ch] = -unary[p, ch] + m[ch]
            else:
                for ch in range(c):
                    acc = unary.dtype.type(0)
                    for l in range(c):
                        acc += m[l] * compat_t[l, ch]
                    x[ch] = -unary[p, ch] - acc
            _softmax_into(x, e, bits, fast_exp)
            if write_q:
                for ch in range(c):
                    q[p, ch] = e[ch]
            if splat:
                _splat_point(part_a, off_a, splat_a, p, e)
                if two:
                    _splat_point(part_b, off_b, splat_b, p, e)


@njit(parallel=True, fastmath=False, cache=True)
def _blur_axis_parts(parts, below, above, dst):
    """``_blur_axis`` of the sum of the splat parts (added in part order; their row M is zero)."""
    count = parts.shape[0]
    m = parts.shape[1] - 1
    c = parts.shape[2]
    half = dst.dtype.type(0.5)
    for v in prange(m):
        a = below[v]
        b = above[v]
        for ch in range(c):
            sv = parts[0, v, ch]
            sa = parts[0, a, ch]
            sb = parts[0, b, ch]
            for t in range(1, count):
                sv += parts[t, v, ch]
                sa += parts[t, a, ch]
                sb += parts[t, b, ch]
            dst[v, ch] = sv + half * (sa + sb)
    dst[m, :] = 0


class _Plan:
    """One kernel's lattice prepared for the fused inference: int32 vertex indices, splat / slice weights
    with the normalisation (and the kernel weight) folded in, splat parts and blur buffers."""

    def __init__(self, weight, filt, dtype, c):
        lattice = filt.lattice
        norm = np.asarray(filt.norm).astype(dtype, copy=False).reshape(-1, 1)
        # n * K(n * Q) * weight: the normalisation moves into the splat and slice weights.
        self.splat = np.ascontiguousarray(lattice.weights.astype(dtype, copy=False) * norm)
        self.slice = np.ascontiguousarray(lattice.slice_weights.astype(dtype, copy=False) * norm * dtype.type(weight))
        self.offsets = lattice.offsets.astype(np.int32)
        self.neighbours = lattice.neighbours
        self.dim = lattice.dim
        m = lattice.num_vertices
        self.parts = np.empty((_FUSED_PARTS, m + 1, c), dtype=dtype)
        self.buffers = np.empty((2, m + 1, c), dtype=dtype)
        self.blurred = self.buffers[0]

    def blur(self):
        _blur_axis_parts(self.parts, self.neighbours[0, 0], self.neighbours[0, 1], self.buffers[0])
        current, spare = self.buffers[0], self.buffers[1]
        for j in range(1, self.dim + 1):
            _blur_axis(current, self.neighbours[j, 0], self.neighbours[j, 1], spare)
            current, spare = spare, current
        self.blurred = current


def dense_crf_mean_field(xp, unary, filters, compat_t, iterations: int):
    """The reference's mean-field inference with one or two permutohedral filters fused into one pass over
    the points per iteration: slice both blurred lattices, normalise, weight, apply the compatibility, take
    the softmax and splat the new ``Q`` straight into the lattices for the next iteration (``Q`` itself is
    only written at the end). Exact filters, lattices of another backend or more than two kernels run the
    reference."""
    filters = list(filters)
    if len(filters) > 2 or not all(
        getattr(f, "method", None) == "permutohedral" and isinstance(getattr(f, "lattice", None), NumbaLattice)
        for _, f in filters
    ):
        return reference.dense_crf_mean_field(xp, unary, filters, compat_t, iterations)
    dtype = unary.dtype
    u = np.ascontiguousarray(unary)
    n, c = u.shape
    q = np.empty((n, c), dtype=dtype)
    iterations = int(iterations) if filters else 0
    potts = compat_t is None
    fast_exp = _FAST_EXP and dtype == np.float32
    mu_t = np.zeros((c, c), dtype=dtype) if potts else np.ascontiguousarray(np.asarray(compat_t), dtype=dtype)
    if iterations <= 0:
        # Q = softmax(-U): a pass with no message and nothing to splat into (a one-vertex dummy lattice).
        plans = []
    else:
        plans = [_Plan(weight, f, dtype, c) for weight, f in filters]
    a = plans[0] if plans else None
    b = plans[1] if len(plans) > 1 else a
    if a is None:
        dummy = np.zeros((_FUSED_PARTS, 1, c), dtype=dtype)
        offsets = np.zeros((n, 1), dtype=np.int32)
        weights = np.zeros((n, 1), dtype=dtype)
        args = (dummy[0], offsets, weights, weights, dummy) * 2
        _fused_pass(*args, False, False, u, mu_t, potts, q, True, False, fast_exp)
        return q
    for step in range(iterations + 1):
        if step > 0:
            a.blur()
            if b is not a:
                b.blur()
        _fused_pass(
            a.blurred, a.offsets, a.slice, a.splat, a.parts, b.blurred, b.offsets, b.slice, b.splat, b.parts,
            b is not a, step > 0, u, mu_t, potts, q, step == iterations, step < iterations, fast_exp,
        )
    return q


KERNELS = {
    "permutohedral_build": permutohedral_build,
    "permutohedral_filter": permutohedral_filter,
    "dense_crf_mean_field": dense_crf_mean_field,
}
