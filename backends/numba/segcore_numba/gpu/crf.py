"""Permutohedral-lattice Gaussian filtering on the GPU: splat, blur and slice as CUDA kernels.

The lattice itself is built by the reference ``permutohedral_build`` (not overridden here). It is vectorised
array code: on CuPy its elevation, simplex ranking, sort-based hash table (``argsort`` + ``searchsorted`` on
packed int64 keys) and CSR assembly (``cupyx.scipy.sparse``) all run on the device, so a CUDA hash table would
only replace one sort. This module consumes the lattice as the reference stores it:

* splat: one thread per (vertex, channel) sums its points' weighted values along the row of the CSR splat
  matrix (a gather, in a fixed order: no atomics);
* blur: one launch per lattice axis, one thread per (vertex, channel),
  ``out[m] = in[m] + 1/2 (in[below[m]] + in[above[m]])``, ping-ponging between two buffers whose extra last
  row stays zero for missing neighbours;
* slice: one thread per (point, channel) gathers its d+1 vertices along the row of the CSR slice matrix (whose
  weights already carry densecrf's ``1 / (1 + 2^-d)``).

Sums run in the promoted type of the lattice weights and the values, as the reference's sparse products do; the
result has ``values``' dtype.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from numba import cuda

from segcore.kernels import crf as reference

from . import _launch

__all__ = ["permutohedral_filter", "KERNELS"]


@lru_cache(maxsize=None)
def _lattice_kernels(t: type):
    """(csr_rows, blur) kernels summing in ``t``."""

    @cuda.jit
    def csr_rows(indptr, indices, weights, values, out):
        """``out[r, c] = sum_e weights[e] * values[indices[e], c]`` over row ``r``'s entries (``r < len(indptr)-1``)."""
        rows = indptr.shape[0] - 1
        channels = values.shape[1]
        total = rows * channels
        item = cuda.grid(1)
        step = cuda.gridsize(1)
        while item < total:
            r = item // channels
            c = item - r * channels
            acc = t(0)
            for e in range(indptr[r], indptr[r + 1]):
                acc += t(weights[e]) * t(values[indices[e], c])
            out[r, c] = acc
            item += step

    @cuda.jit
    def blur(src, below, above, dst):
        """One lattice axis: ``dst[m] = src[m] + 1/2 (src[below[m]] + src[above[m]])`` for every vertex ``m``."""
        vertices = src.shape[0] - 1  # the last row is the zero row of missing neighbours
        channels = src.shape[1]
        total = vertices * channels
        item = cuda.grid(1)
        step = cuda.gridsize(1)
        while item < total:
            m = item // channels
            c = item - m * channels
            dst[m, c] = src[m, c] + t(0.5) * (src[below[m], c] + src[above[m], c])
            item += step

    return csr_rows, blur


def permutohedral_filter(xp, lattice: reference.PermutohedralLattice, values, *, reverse: bool = False):
    """Approximate ``sum_j exp(-|f_i - f_j|^2 / 2) values[j]`` for ``values`` ``(N, C)``: splat, blur, slice.

    ``reverse=True`` blurs the lattice axes in the opposite order (the transposed operator), as the reference.
    """
    if values.ndim != 2 or values.shape[0] != lattice.num_points:
        raise ValueError(
            f"permutohedral_filter: values must be (N, C) with N = {lattice.num_points} points, "
            f"got shape {values.shape}"
        )
    splat, slice_ = lattice.splat_matrix, lattice.slice_matrix
    if not (_launch.supported(values) and _launch.supported(splat.data)):
        return reference.permutohedral_filter(xp, lattice, values, reverse=reverse)
    dtype = np.result_type(splat.data.dtype, values.dtype)
    csr_rows, blur = _lattice_kernels(_launch.scalar_type(dtype))
    m, n, channels = lattice.num_vertices, lattice.num_points, int(values.shape[1])
    values = xp.ascontiguousarray(values)
    # Two (M + 1, C) buffers; row M of each stays zero and stands for every missing neighbour.
    current = xp.zeros((m + 1, channels), dtype=dtype)
    spare = xp.zeros((m + 1, channels), dtype=dtype)
    _launch.launch(csr_rows, m * channels, splat.indptr, splat.indices, splat.data, values, current)
    axes = range(lattice.dim, -1, -1) if reverse else range(lattice.dim + 1)
    for j in axes:
        _launch.launch(blur, m * channels, current, lattice.neighbours[j, 0], lattice.neighbours[j, 1], spare)
        current, spare = spare, current
    out = xp.empty((n, channels), dtype=dtype)
    _launch.launch(csr_rows, n * channels, slice_.indptr, slice_.indices, slice_.data, current, out)
    return xp.astype(out, values.dtype, copy=False)


KERNELS: dict[str, Callable] = {"permutohedral_filter": permutohedral_filter}
