"""Transposing copies between NCHW arrays and channels-last buffers, compiled and parallel over rows.

The implicit convolutions read their input (and the weight gradient its ``grad_out``) channels-last, so every
call starts with such a copy of a few MiB. Compiled, one (image, row) per work item, it ran faster than NumPy's
transposing copy split in per-thread shares (:func:`.shares.copy_in_shares`) once the source had left the
cache, as it has between a layer's forward and its backward: ``(8, 64, 56, 56)`` into a padded buffer 0.58
against 0.73 ms, ``(8, 256, 28, 28)`` 0.42 against 0.62 ms, ``(8, 128, 28, 28)`` 0.22 against 0.41 ms (float32,
2 cores, a 96 MiB sweep between copies).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .shares import SHARED_COPY_BYTES, copy_in_shares

__all__ = ["copy_rows", "copy_to_rows"]


@njit(parallel=True, nogil=True, cache=True)
def _copy_rows(src, dst):
    """``dst[...] = src`` for two ``(N, C, H, W)`` arrays of one shape, one (image, row) per work item."""
    n, c, h, w = src.shape
    for item in prange(n * h):
        b, y = item // h, item % h  # (no divmod: Numba's parfor lowering mistypes it)
        for z in range(w):
            for channel in range(c):
                dst[b, channel, y, z] = src[b, channel, y, z]


def copy_rows(dst, src, min_bytes: int = SHARED_COPY_BYTES) -> None:
    """``dst[...] = src`` for two ``(N, C, H, W)`` float32/float64 views of one shape and dtype (any strides:
    typically ``src`` NCHW and ``dst`` a channels-last buffer seen as NCHW), compiled and parallel over
    (image, row) when ``dst`` holds at least ``min_bytes``. Other copies go to :func:`.shares.copy_in_shares`
    (smaller ones, below the cost of starting a parallel loop, run there on the calling thread)."""
    if dst.shape != src.shape:
        raise ValueError(f"copy_rows needs arrays of one shape, got dst {dst.shape} and src {src.shape}")
    compiled = dst.ndim == 4 and dst.dtype == src.dtype and dst.dtype in (np.float32, np.float64)
    if compiled and dst.nbytes >= min_bytes:
        _copy_rows(src, dst)
        return
    copy_in_shares(dst, src, min_bytes)


@njit(parallel=True, nogil=True, cache=True)
def _copy_to_rows(src, order, rows):
    """``rows[order[b, y, z], c] = src[b, c, y, z]``, one (image, row) of ``src`` per work item."""
    n, c, h, w = src.shape
    for item in prange(n * h):
        b, y = item // h, item % h
        for z in range(w):
            row = order[b, y, z]
            for channel in range(c):
                rows[row, channel] = src[b, channel, y, z]


def copy_to_rows(rows, src, order, min_bytes: int = SHARED_COPY_BYTES) -> None:
    """``rows[order[b, y, z]] = src[b, :, y, z]``: the pixels of ``src`` ``(N, C, H, W)`` as the rows of
    ``rows`` ``(N*H*W, C)`` (same dtype), pixel ``(b, y, z)`` at row ``order[b, y, z]`` (``order`` an intp
    ``(N, H, W)`` permutation of the rows). Compiled and parallel over (image, row) for float32/float64 when
    ``rows`` holds at least ``min_bytes``, else one NumPy scatter."""
    n, c, h, w = src.shape
    if rows.shape != (n * h * w, c) or order.shape != (n, h, w):
        raise ValueError(
            f"copy_to_rows needs rows {(n * h * w, c)} and order {(n, h, w)} for src {src.shape}, "
            f"got rows {rows.shape} and order {order.shape}"
        )
    if rows.dtype == src.dtype and rows.dtype in (np.float32, np.float64) and rows.nbytes >= min_bytes:
        _copy_to_rows(src, order, rows)
        return
    rows[order.reshape(-1)] = np.moveaxis(src, 1, 3).reshape(-1, c)
