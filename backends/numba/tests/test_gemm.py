"""The numba backend's matrix product (``segcore_numba.cpu.gemm.matmul``).

Every product is checked against the same product summed in float64 by NumPy (an independent computation),
with shapes drawn around the register tile and the blocking sizes so that partial tiles, partial reduction
blocks and several column blocks all occur; operands are also passed as transposed and sliced views.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from segcore_numba.cpu import gemm

MR, NR = gemm.tile_shape(np.float32)


def _reference(a, b):
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


def _close(got, want, k):
    # float32 sums of k products of unit normals: rounding grows like sqrt(k) * eps * |terms|.
    tol = 1e-5 * max(1.0, np.sqrt(k)) if got.dtype == np.float32 else 1e-12 * max(1.0, np.sqrt(k))
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale * 4)


def _layout(x, kind):
    """The same values as ``x`` in a different memory layout: C order, a transposed copy, or a slice."""
    if kind == "c":
        return x
    if kind == "t":
        return np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)
    bigger = np.zeros(x.shape[:-1] + (x.shape[-1] + 3,), dtype=x.dtype)
    bigger[..., 1 : 1 + x.shape[-1]] = x
    return bigger[..., 1 : 1 + x.shape[-1]]


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    m=st.integers(1, 3 * MR + 1),
    k=st.sampled_from([1, 2, 7, 255, 256, 257, 600]),
    n=st.integers(1, 2 * NR + 3),
    dtype=st.sampled_from([np.float32, np.float64]),
    a_kind=st.sampled_from(["c", "t", "s"]),
    b_kind=st.sampled_from(["c", "t", "s"]),
    seed=st.integers(0, 2**16),
)
def test_matches_float64_product(batch, m, k, n, dtype, a_kind, b_kind, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((batch, m, k)).astype(dtype)
    b = rng.standard_normal((batch, k, n)).astype(dtype)
    got = gemm.matmul(_layout(a, a_kind), _layout(b, b_kind))
    assert got.dtype == dtype and got.shape == (batch, m, n)
    _close(got, _reference(a, b), k)


def test_many_column_blocks_and_two_dimensional_operands():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2 * MR + 5, 300)).astype(np.float32)
    b = rng.standard_normal((300, 2 * gemm._NC + NR + 1)).astype(np.float32)
    got = gemm.matmul(a, b)
    assert got.shape == (a.shape[0], b.shape[1])
    _close(got, _reference(a, b), 300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accumulate_adds_to_out(dtype):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, MR + 3, 40)).astype(dtype)
    b = rng.standard_normal((2, 40, NR + 5)).astype(dtype)
    start = rng.standard_normal((2, MR + 3, NR + 5)).astype(dtype)
    out = start.copy()
    assert gemm.matmul(a, b, out=out, accumulate=True) is out
    _close(out, start + _reference(a, b), 40)
    # Without accumulate, whatever out held is overwritten.
    gemm.matmul(a, b, out=out)
    _close(out, _reference(a, b), 40)


def test_empty_reduction_gives_zeros_or_keeps_out():
    a, b = np.ones((3, 0), np.float32), np.ones((0, 4), np.float32)
    out = np.full((3, 4), 7.0, np.float32)
    gemm.matmul(a, b, out=out, accumulate=True)
    assert (out == 7).all()
    gemm.matmul(a, b, out=out)
    assert (out == 0).all()
    assert gemm.matmul(np.ones((0, 5), np.float32), np.ones((5, 2), np.float32)).shape == (0, 2)


def test_result_does_not_depend_on_thread_count():
    numba = pytest.importorskip("numba")
    rng = np.random.default_rng(3)
    a = rng.standard_normal((1, 5 * MR, 700)).astype(np.float32)
    b = rng.standard_normal((1, 700, 3 * NR)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = gemm.matmul(a, b)
        numba.set_num_threads(before)
        many = gemm.matmul(a, b)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, many)


@pytest.mark.parametrize(
    "a, b, kwargs, error, words",
    [
        (np.ones((2, 3), np.float32), np.ones((4, 5), np.float32), {}, ValueError, "do not match"),
        (np.ones((2, 3), np.float32), np.ones((3, 5), np.float64), {}, TypeError, "float32 and float64"),
        (np.ones((2, 3), np.int32), np.ones((3, 5), np.int32), {}, TypeError, "int32"),
        (np.ones((2, 3), np.float32), np.ones((1, 3, 5), np.float32), {}, ValueError, "2-D and 3-D"),
        (np.ones((2, 3), np.float32), np.ones((3, 5), np.float32), {"accumulate": True}, ValueError, "out array"),
        (
            np.ones((2, 3), np.float32),
            np.ones((3, 5), np.float32),
            {"out": np.ones((5, 2), np.float32).T},
            ValueError,
            "contiguous, non-overlapping rows",
        ),
        (
            np.ones((2, 3), np.float32),
            np.ones((3, 5), np.float32),
            {"out": np.broadcast_to(np.ones(5, np.float32), (2, 5))},
            ValueError,
            "strides",
        ),
        (np.ones((2, 3), np.float32)[:, ::-1], np.ones((3, 5), np.float32), {}, ValueError, "negative strides"),
    ],
)
def test_bad_input_is_named(a, b, kwargs, error, words):
    with pytest.raises(error, match=words):
        gemm.matmul(a, b, **kwargs)


def test_tile_shape_follows_the_vector_width():
    mr, nr = gemm.tile_shape(np.float64)
    assert mr == MR and nr * 8 == NR * 4 == 2 * gemm.VECTOR_BYTES


def test_serial_product_equals_the_parallel_one():
    # Same pieces, same summation order per element, so the same bits whichever thread computes a piece.
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 4 * MR + 5, 300)).astype(np.float32)
    b = rng.standard_normal((2, 300, 2 * NR + 7)).astype(np.float32)
    np.testing.assert_array_equal(gemm.matmul(a, b, parallel=False), gemm.matmul(a, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("add", [False, True])
def test_compiled_entry_matches_float64_product(dtype, a_transposed, add):
    # matmul_into is what compiled kernels call: C-contiguous operands, A optionally stored transposed.
    rng = np.random.default_rng(7)
    batch, m, k, n = 3, 2 * MR + 5, 257, NR + 3
    a = rng.standard_normal((batch, m, k)).astype(dtype)
    b = rng.standard_normal((batch, k, n)).astype(dtype)
    stored = np.ascontiguousarray(np.swapaxes(a, 1, 2)) if a_transposed else a
    start = rng.standard_normal((batch, m, n)).astype(dtype)
    out = start.copy()
    gemm.matmul_into(stored, b, out, add, a_transposed)
    _close(out, _reference(a, b) + (start if add else 0), k)


@pytest.mark.parametrize("rows_or_columns", ["rows", "columns"])
def test_out_may_be_a_strided_view_of_a_larger_array(rows_or_columns):
    # Writing a block of a bigger matrix in place (the convolutions' output bands): only the view changes.
    rng = np.random.default_rng(11)
    m, k, n = MR + 3, 40, NR + 5
    a = rng.standard_normal((2, m, k)).astype(np.float32)
    b = rng.standard_normal((2, k, n)).astype(np.float32)

    def window(arr):  # every other row of a taller matrix, or a band of columns of a wider one
        return arr[:, 1 : 1 + 2 * m : 2, :n] if rows_or_columns == "rows" else arr[:, :m, 3 : 3 + n]

    big = np.full((2, 3 * m, 2 * n + 3), 7.0, dtype=np.float32)
    inside = np.zeros(big.shape, dtype=bool)
    window(inside)[...] = True
    gemm.matmul(a, b, out=window(big))
    _close(window(big), _reference(a, b), k)
    assert (big[~inside] == 7.0).all()


# Column-block widths for a 32-column register tile (AVX-512 float32), whatever this host's tile is.
@pytest.mark.parametrize(
    "batch, n, threads, width",
    [
        # 576 columns: two blocks of 288, not 512 + 64 (one thread doing 8/9 of the work).
        (1, 576, 2, 288),
        # 2304 columns would be 5 blocks of 512 (3 against 2); 6 blocks of 384 share evenly.
        (1, 2304, 2, 384),
        # One block stays whole (the caller splits its rows among the threads instead).
        (1, 256, 2, 256),
        (2, 300, 2, 320),
        # 7 threads: 4 blocks of 130 columns rounded up to 160, as 5 would leave blocks under 4 tiles wide.
        (1, 520, 7, 160),
    ],
)
def test_column_blocks_are_equal_and_shared_evenly(batch, n, threads, width):
    assert gemm._column_block(batch, n, 32, threads) == width
    blocks = -(-n // width)
    assert (blocks - 1) * width < n <= blocks * width and width <= gemm._NC


def test_product_with_balanced_column_blocks_matches():
    # The 576-column weight-gradient shape of a 64-channel 3x3 convolution, split into two 288-column blocks.
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2 * MR + 1, 500)).astype(np.float32)
    b = rng.standard_normal((500, 576)).astype(np.float32)
    _close(gemm.matmul(a, b), _reference(a, b), 500)


@njit
def _tile_from_table(a, table, first, offset, b, kc, nr):
    c = np.zeros(MR * nr, dtype=a.dtype)
    gemm._tile_rows(a, table, first, offset, b, 0, nr, c, 0, nr, kc, False)
    return c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tile_reads_the_rows_of_a_from_a_table(dtype):
    rng = np.random.default_rng(5)
    nr = gemm.tile_shape(dtype)[1]
    a = rng.standard_normal(500).astype(dtype)
    b = rng.standard_normal((37, nr)).astype(dtype)
    # Rows anywhere in a, repeated and out of order, from entry 3 of the table on, each moved by 11.
    table = np.concatenate([[-1, -1, -1], rng.integers(0, 500 - 37 - 11, MR)]).astype(np.intp)
    got = _tile_from_table(a, table, 3, 11, b.reshape(-1), 37, nr).reshape(MR, nr)
    rows = np.stack([a[t + 11 : t + 11 + 37] for t in table[3:]])
    _close(got, _reference(rows, b), 37)


@njit
def _tile_with_gathered_b(a, a0, sak, b_rows, first, b, b_offset, kc, nr):
    c = np.zeros(MR * nr, dtype=a.dtype)
    gemm._tile_gathered_b(a, a0, sak, b_rows, first, b, b_offset, c, 0, nr, kc, False)
    return c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tile_reads_the_rows_of_b_from_a_table(dtype):
    rng = np.random.default_rng(6)
    nr = gemm.tile_shape(dtype)[1]
    kc, a0, sak, b_offset = 29, 5, 50, 7
    a = rng.standard_normal(a0 + MR + kc * sak).astype(dtype)
    b = rng.standard_normal(3000).astype(dtype)
    # Step k reads b[b_rows[2 + k] + 7 + j]: rows anywhere, in any order, repeats allowed.
    b_rows = np.concatenate([[-1, -1], rng.integers(0, 3000 - nr - b_offset, kc)]).astype(np.intp)
    got = _tile_with_gathered_b(a, a0, sak, b_rows, 2, b, b_offset, kc, nr).reshape(MR, nr)
    a_matrix = np.array([[a[a0 + i + k * sak] for k in range(kc)] for i in range(MR)])
    b_matrix = np.stack([b[r + b_offset : r + b_offset + nr] for r in b_rows[2:]])
    _close(got, _reference(a_matrix, b_matrix), kc)
