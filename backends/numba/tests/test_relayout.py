"""Transposing copies into channels-last buffers (``segcore_numba.cpu.relayout``)."""

from __future__ import annotations

import numpy as np
import pytest

from segcore_numba.cpu import relayout
from segcore_numba.cpu.relayout import copy_rows, copy_to_rows


def _count_calls(monkeypatch, module, name):
    """Wrap ``module.name`` to count its calls (the wrapped function still runs)."""
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_copies_nchw_into_the_interior_of_a_padded_channels_last_buffer(monkeypatch, dtype):
    compiled = _count_calls(monkeypatch, relayout, "_copy_rows")
    x = np.random.default_rng(0).standard_normal((3, 5, 6, 7)).astype(dtype)
    buffer = np.full((3, 8, 9, 5), -1.0, dtype=dtype)  # (N, H+2, W+2, C), the border must stay untouched
    copy_rows(np.moveaxis(buffer, 3, 1)[:, :, 1:7, 1:8], x, min_bytes=0)
    assert len(compiled) == 1
    # Element by element: buffer[b, 1 + y, 1 + z, c] == x[b, c, y, z].
    expected = np.full_like(buffer, -1.0)
    for b, c, y, z in np.ndindex(x.shape):
        expected[b, 1 + y, 1 + z, c] = x[b, c, y, z]
    np.testing.assert_array_equal(buffer, expected)


def test_copies_from_a_cropped_view_of_the_source(monkeypatch):
    compiled = _count_calls(monkeypatch, relayout, "_copy_rows")
    x = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    dst = np.empty((2, 5, 6, 3), dtype=np.float32)  # channels-last
    copy_rows(np.moveaxis(dst, 3, 1), x[:, :, 2:7, 1:7], min_bytes=0)
    assert len(compiled) == 1
    np.testing.assert_array_equal(dst, np.transpose(x[:, :, 2:7, 1:7], (0, 2, 3, 1)))


@pytest.mark.parametrize(
    "dst_dtype, src_dtype, min_bytes",
    [
        (np.float32, np.float32, 1 << 30),  # below the threshold
        (np.int64, np.int64, 0),  # not a float dtype
        (np.float64, np.float32, 0),  # two dtypes: NumPy's casting copy, not a compiled specialisation per pair
    ],
)
def test_other_copies_go_to_numpy_in_shares(monkeypatch, dst_dtype, src_dtype, min_bytes):
    compiled = _count_calls(monkeypatch, relayout, "_copy_rows")
    shared = _count_calls(monkeypatch, relayout, "copy_in_shares")
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5).astype(src_dtype)
    dst = np.zeros((2, 4, 5, 3), dtype=dst_dtype)
    copy_rows(np.moveaxis(dst, 3, 1), x, min_bytes=min_bytes)
    assert not compiled and len(shared) == 1
    np.testing.assert_array_equal(dst, np.transpose(x, (0, 2, 3, 1)).astype(dst_dtype))


def test_rejects_arrays_of_different_shapes():
    with pytest.raises(ValueError, match=r"dst \(1, 2, 3, 4\) and src \(1, 2, 3, 5\)"):
        copy_rows(np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 3, 5)))


@pytest.mark.parametrize("dtype, min_bytes", [(np.float32, 0), (np.float64, 0), (np.float32, 1 << 30)])
def test_copy_to_rows_puts_each_pixel_at_its_row(monkeypatch, dtype, min_bytes):
    compiled = _count_calls(monkeypatch, relayout, "_copy_to_rows")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    order = rng.permutation(2 * 4 * 5).reshape(2, 4, 5).astype(np.intp)
    rows = np.full((40, 3), np.nan, dtype=dtype)
    copy_to_rows(rows, x, order, min_bytes=min_bytes)
    assert len(compiled) == (min_bytes == 0)
    for b, y, z in np.ndindex(2, 4, 5):
        np.testing.assert_array_equal(rows[order[b, y, z]], x[b, :, y, z])


def test_copy_to_rows_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"rows \(40, 3\) and order \(2, 4, 5\) .* got rows \(40, 4\)"):
        copy_to_rows(np.zeros((40, 4)), np.zeros((2, 3, 4, 5)), np.zeros((2, 4, 5), dtype=np.intp))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_copies_go_by_blocks_transposed_in_registers(monkeypatch, dtype):
    blocked = _count_calls(monkeypatch, relayout, "_copy_rows_blocked")
    element_wise = _count_calls(monkeypatch, relayout, "_copy_rows")
    rng = np.random.default_rng(2)
    # 40 channels and 37 columns: whole blocks of 16 (or 8) and a last one moved back, from a cropped source.
    source = rng.standard_normal((2, 40, 8, 41)).astype(dtype)
    x = source[:, :, 1:6, 2:39]
    buffer = np.full((2, 9, 41, 40), -1.0, dtype=dtype)  # (N, H+4, W+4, C): the border must stay untouched
    copy_rows(np.moveaxis(buffer, 3, 1)[:, :, 2:7, 2:39], x, min_bytes=0)
    assert len(blocked) == 1 and not element_wise
    expected = np.full_like(buffer, -1.0)
    expected[:, 2:7, 2:39, :] = np.transpose(x, (0, 2, 3, 1))
    np.testing.assert_array_equal(buffer, expected)


def test_narrow_copies_go_element_by_element(monkeypatch):
    blocked = _count_calls(monkeypatch, relayout, "_copy_rows_blocked")
    x = np.arange(2 * 3 * 4 * 40, dtype=np.float32).reshape(2, 3, 4, 40)  # 3 channels: less than a vector
    dst = np.empty((2, 4, 40, 3), dtype=np.float32)
    copy_rows(np.moveaxis(dst, 3, 1), x, min_bytes=0)
    assert not blocked
    np.testing.assert_array_equal(dst, np.transpose(x, (0, 2, 3, 1)))
