"""Transposing copies between NCHW arrays and channels-last buffers, compiled and parallel over rows.

The implicit convolutions read their input (and the weight gradient its ``grad_out``) channels-last, so every
call starts with such a copy of a few MiB. Compiled, one (image, row) per work item, it ran faster than NumPy's
transposing copy split in per-thread shares (:func:`.shares.copy_in_shares`) once the source had left the
cache, as it has between a layer's forward and its backward: ``(8, 64, 56, 56)`` into a padded buffer 0.58
against 0.73 ms, ``(8, 256, 28, 28)`` 0.42 against 0.62 ms, ``(8, 128, 28, 28)`` 0.22 against 0.41 ms (float32,
2 cores, a 96 MiB sweep between copies).

Element by element, that loop moved about one value per cycle. Where both sides allow it (unit strides along
the source's rows and the destination's channels, at least a vector of each), square blocks of one vector's
lanes are transposed in registers instead (:func:`transpose_block`): 0.19 against 0.31 ms for the first
shape above in cache, 0.51 against 0.63 ms out of it; 0.18 against 0.30 ms for the second in cache, the same
out of it (the memory's speed then).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .gemm import VECTOR_BYTES
from .shares import SHARED_COPY_BYTES, copy_in_shares

__all__ = ["copy_rows", "copy_to_rows", "transpose_block"]


@njit(parallel=True, nogil=True, cache=True)
def _copy_rows(src, dst):
    """``dst[...] = src`` for two ``(N, C, H, W)`` arrays of one shape, one (image, row) per work item."""
    n, c, h, w = src.shape
    for item in prange(n * h):
        b, y = item // h, item % h  # (no divmod: Numba's parfor lowering mistypes it)
        for z in range(w):
            for channel in range(c):
                dst[b, channel, y, z] = src[b, channel, y, z]


@intrinsic
def transpose_block(typingctx, src, src0, src_step, dst, dst0, dst_step):
    """``dst[dst0 + j*dst_step + i] = src[src0 + i*src_step + j]`` for ``i, j`` below one vector's lanes
    (:data:`.gemm.VECTOR_BYTES` over the item size), indices in items from each view's first item: the block's
    rows loaded as vectors, transposed in registers, stored as vectors. Nothing is bounds-checked.

    The transpose swaps one bit of the row and column indices per stage: for each pair of rows ``i`` and
    ``i + b`` (``i`` without bit ``b``), the values whose column has bit ``b`` move from row ``i`` to row
    ``i + b`` and the other way round; after the stages for every bit, value ``(i, j)`` sits at ``(j, i)``.
    Each stage is one two-source shuffle per row, which LLVM lowers to the host's permutes.
    """
    same_floats = (
        isinstance(src, types.Array) and isinstance(dst, types.Array) and src.dtype == dst.dtype
        and src.dtype in (types.float32, types.float64)
    )  # fmt: skip
    if not same_floats:
        return None
    sig = types.void(src, types.intp, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        source = context.make_array(signature.args[0])(context, builder, args[0]).data
        target = context.make_array(signature.args[3])(context, builder, args[3]).data
        size = context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))
        lanes = VECTOR_BYTES // size
        vector, index = ir.VectorType(source.type.pointee, lanes), args[1].type
        mask = ir.VectorType(ir.IntType(32), lanes)

        def vector_at(data, start, step, row):
            offset = builder.add(start, builder.mul(ir.Constant(index, row), step))
            return builder.bitcast(builder.gep(data, [offset]), vector.as_pointer())

        rows = [builder.load(vector_at(source, args[1], args[2], i), align=size) for i in range(lanes)]
        bit = lanes // 2
        while bit:
            stay = ir.Constant(mask, [k if not k & bit else lanes + k - bit for k in range(lanes)])
            move = ir.Constant(mask, [k + bit if not k & bit else lanes + k for k in range(lanes)])
            for i in range(lanes):
                if not i & bit:
                    low, high = rows[i], rows[i + bit]
                    rows[i] = builder.shuffle_vector(low, high, stay)
                    rows[i + bit] = builder.shuffle_vector(low, high, move)
            bit //= 2
        for j in range(lanes):
            builder.store(rows[j], vector_at(target, args[4], args[5], j), align=size)
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True, nogil=True, cache=True)
def _copy_rows_blocked(src, dst, lanes):
    """:func:`_copy_rows` by ``lanes x lanes`` blocks of (channels, columns) transposed in registers, for
    ``src`` with unit column steps and ``dst`` with unit channel steps, at least ``lanes`` of each. A last block
    that would run past the channels or the columns is moved back to end there: it writes some values twice,
    the same values, within one work item."""
    n, c, h, w = src.shape
    item = src.itemsize
    s_b, s_c, s_y = src.strides[0] // item, src.strides[1] // item, src.strides[2] // item
    d_b, d_y, d_z = dst.strides[0] // item, dst.strides[2] // item, dst.strides[3] // item
    for job in prange(n * h):
        b, y = job // h, job % h
        for c0 in range(0, c, lanes):
            channel = min(c0, c - lanes)
            for z0 in range(0, w, lanes):
                z = min(z0, w - lanes)
                transpose_block(
                    src, b * s_b + channel * s_c + y * s_y + z, s_c, dst, b * d_b + y * d_y + z * d_z + channel, d_z
                )


def _blocks_apply(dst, src) -> bool:
    """Whether :func:`_copy_rows_blocked` can copy ``src`` into ``dst``: unit steps along the source's columns
    and the destination's channels, every step a whole number of items, at least a vector's lanes of channels
    and of columns."""
    item = dst.itemsize
    lanes = VECTOR_BYTES // item
    whole = all(step % item == 0 for step in (*src.strides, *dst.strides))
    return whole and src.strides[3] == item and dst.strides[1] == item and min(src.shape[1], src.shape[3]) >= lanes


def copy_rows(dst, src, min_bytes: int = SHARED_COPY_BYTES) -> None:
    """``dst[...] = src`` for two ``(N, C, H, W)`` float32/float64 views of one shape and dtype (any strides:
    typically ``src`` NCHW and ``dst`` a channels-last buffer seen as NCHW), compiled and parallel over
    (image, row) when ``dst`` holds at least ``min_bytes``, by blocks transposed in registers where
    :func:`_blocks_apply`. Other copies go to :func:`.shares.copy_in_shares` (smaller ones, below the cost of
    starting a parallel loop, run there on the calling thread)."""
    if dst.shape != src.shape:
        raise ValueError(f"copy_rows needs arrays of one shape, got dst {dst.shape} and src {src.shape}")
    compiled = dst.ndim == 4 and dst.dtype == src.dtype and dst.dtype in (np.float32, np.float64)
    if compiled and dst.nbytes >= min_bytes:
        if _blocks_apply(dst, src):
            _copy_rows_blocked(src, dst, VECTOR_BYTES // dst.itemsize)
        else:
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
