"""Kernel scratch memory: reuse per key and thread, the size cap, and kernels that never see stale data."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from segcore.backend import get_backend
from segcore.kernels import conv as conv_kernels
from segcore.kernels import workspace

from .test_conv import loop_conv2d, loop_grad_input, loop_grad_weight

xp = get_backend("numpy").xp


@pytest.fixture(autouse=True)
def fresh_buffers():
    workspace.release()
    yield
    workspace.release()


def test_same_key_reuses_memory_and_other_keys_do_not():
    a = workspace.scratch(xp, "test.a", (4, 5), np.float32)
    assert a.shape == (4, 5) and a.dtype == np.float32
    again = workspace.scratch(xp, "test.a", (2, 3), np.float64)  # smaller: a prefix of the same buffer
    assert again.shape == (2, 3) and again.dtype == np.float64
    assert np.shares_memory(a, again)
    other = workspace.scratch(xp, "test.b", (4, 5), np.float32)
    assert not np.shares_memory(a, other)
    assert workspace.cached_bytes() == 2 * 4 * 5 * 4


def test_growing_replaces_the_buffer():
    small = workspace.scratch(xp, "test.a", (10,), np.float32)
    big = workspace.scratch(xp, "test.a", (1000,), np.float32)
    assert not np.shares_memory(small, big)
    assert workspace.cached_bytes() == 4000


def test_threads_get_their_own_buffers():
    mine = workspace.scratch(xp, "test.a", (16,), np.float32)
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(workspace.scratch(xp, "test.a", (16,), np.float32)))
    thread.start()
    thread.join()
    assert not np.shares_memory(mine, theirs[0])


def test_buffers_over_the_cap_are_not_kept(monkeypatch):
    monkeypatch.setattr(workspace, "MAX_CACHED_BYTES", 100)
    first = workspace.scratch(xp, "test.a", (26,), np.float32)  # 104 bytes
    second = workspace.scratch(xp, "test.a", (26,), np.float32)
    assert not np.shares_memory(first, second)
    assert workspace.cached_bytes() == 0


def test_release_frees_the_buffers():
    workspace.scratch(xp, "test.a", (64,), np.float32)
    assert workspace.cached_bytes() == 256
    workspace.release()
    assert workspace.cached_bytes() == 0


def test_other_namespaces_allocate_plainly():
    calls = []

    class FakeNamespace:
        __name__ = "cupy"

        @staticmethod
        def empty(shape, dtype):
            calls.append((shape, dtype))
            return np.empty(shape, dtype)

    workspace.scratch(FakeNamespace, "test.a", (3, 2), np.float32)
    assert calls == [((3, 2), np.float32)]
    assert workspace.cached_bytes() == 0


def poison_conv_scratch():
    """Fill every conv scratch buffer with NaN, larger than any use in these tests."""
    for key in ("conv.padded", "conv.cols", "conv.staging"):
        workspace.scratch(xp, key, (1 << 16,), np.float64)[...] = np.nan


@pytest.mark.parametrize("groups, c", [(1, 4), (2, 4), (4, 4)])  # dense, grouped, depthwise
def test_conv_kernels_ignore_stale_scratch_contents(groups, c):
    # A border that is not zeroed again, or a stale im2col row, turns the results into NaN or wrong values.
    poison_conv_scratch()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, c, 7, 6))
    w = rng.standard_normal((6 if groups < 4 else 4, c // groups, 3, 3))
    args = ((1, 1), (2, 1), (1, 2), groups)
    out = conv_kernels.conv2d(xp, x, w, *args)
    np.testing.assert_allclose(out, loop_conv2d(x, w, *args), rtol=1e-10, atol=1e-10)
    poison_conv_scratch()
    g = rng.standard_normal(out.shape)
    dx = conv_kernels.conv2d_grad_input(xp, g, w, x.shape, *args)
    np.testing.assert_allclose(dx, loop_grad_input(g, w, x.shape, *args), rtol=1e-10, atol=1e-10)
    poison_conv_scratch()
    dw = conv_kernels.conv2d_grad_weight(xp, x, g, w.shape, *args)
    np.testing.assert_allclose(dw, loop_grad_weight(x, g, w.shape, *args), rtol=1e-10, atol=1e-10)


def test_kernel_results_do_not_alias_scratch():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 3, 5, 5))
    w = rng.standard_normal((2, 3, 3, 3))
    args = ((1, 1), (1, 1), (1, 1), 1)
    out = conv_kernels.conv2d(xp, x, w, *args)
    dx = conv_kernels.conv2d_grad_input(xp, out, w, x.shape, *args)
    dw = conv_kernels.conv2d_grad_weight(xp, x, out, w.shape, *args)
    buffers = workspace._buffers()
    assert "conv.padded" in buffers and "conv.cols" in buffers
    for key, buf in buffers.items():
        for result in (out, dx, dw):
            assert not np.shares_memory(result, buf), key
