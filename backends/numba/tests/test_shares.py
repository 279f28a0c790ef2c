"""Work split into per-thread shares (``segcore_numba.cpu.shares``)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numba
import numpy as np
import pytest

from segcore_numba.cpu import shares
from segcore_numba.cpu.shares import copy_in_shares, run_shares, split


@pytest.mark.parametrize("total, parts", [(0, 2), (1, 2), (7, 2), (224, 2), (10, 3), (5, 8), (9, 1)])
def test_split_covers_the_range_in_near_equal_contiguous_shares(total, parts):
    shares = split(total, parts)
    assert shares[0][0] == 0 and shares[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))  # contiguous, in order
    sizes = [stop - start for start, stop in shares]
    assert len(shares) == max(1, min(parts, total))
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("total, parts", [(-1, 2), (4, 0)])
def test_split_rejects_bad_arguments(total, parts):
    with pytest.raises(ValueError, match=f"total={total}, parts={parts}"):
        split(total, parts)


def test_shares_run_on_separate_threads_and_return_in_share_order():
    seen = {}
    # Every share waits for the others at a barrier: the test hangs (then fails on the timeout) unless the
    # shares really run at once.
    barrier = threading.Barrier(3, timeout=10)

    def work(start, stop):
        barrier.wait()
        seen[(start, stop)] = threading.get_ident()
        return list(range(start, stop))

    results = run_shares(work, 9, threads=3)
    assert results == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert seen[(0, 3)] == threading.get_ident()  # the first share runs on the calling thread
    assert len(set(seen.values())) == 3


def test_one_thread_runs_everything_inline():
    idents = []
    assert run_shares(lambda a, b: idents.append(threading.get_ident()) or (a, b), 5, threads=1) == [(0, 5)]
    assert idents == [threading.get_ident()]


def test_a_failing_share_raises_after_every_share_finished():
    finished = []

    def work(start, stop):
        if start > 0:
            raise RuntimeError(f"share {start}..{stop} failed")
        threading.Event().wait(0.05)  # the calling thread's share outlives the failing one
        finished.append(start)
        return start

    with pytest.raises(RuntimeError, match="share 2..4 failed"):
        run_shares(work, 4, threads=2)
    assert finished == [0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_working_threads():
    # The parent's pool threads do not exist in a forked child; the child must start its own pool.
    run_shares(lambda a, b: b - a, 4, threads=2)  # the parent's pool now exists
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if both shares ran; never return into pytest
        ok = False
        try:
            ok = run_shares(lambda a, b: b - a, 4, threads=2) == [2, 2]
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:  # a child that waits on threads that do not exist
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's shares never finished")
    assert os.waitstatus_to_exitcode(done[1]) == 0


@pytest.mark.parametrize("images", [1, 3])
def test_copy_in_shares_copies_a_transposed_view_split_along_images_or_channels(monkeypatch, images):
    totals = []
    original = shares.run_shares
    monkeypatch.setattr(shares, "run_shares", lambda work, total: totals.append(total) or original(work, total, 2))
    x = np.arange(images * 5 * 4 * 6, dtype=np.float32).reshape(images, 5, 4, 6)
    buf = np.full((images, 6, 8, 5), -1.0, dtype=np.float32)  # channels-last, a border of -1 left alone
    interior = np.moveaxis(buf, 3, 1)[:, :, 1:5, 1:7]
    copy_in_shares(interior, x, min_bytes=0)
    assert np.array_equal(np.moveaxis(buf, 3, 1)[:, :, 1:5, 1:7], x)
    assert (buf[:, 0] == -1).all() and (buf[:, :, 0] == -1).all() and (buf[:, 5] == -1).all()
    # One image is fewer than the threads: the five channels are shared out instead.
    expected = 5 if images < numba.get_num_threads() else images
    assert totals == [expected]


def test_copies_smaller_than_the_threshold_run_on_the_calling_thread(monkeypatch):
    totals = []
    monkeypatch.setattr(shares, "run_shares", lambda work, total: totals.append(total))
    x = np.arange(24.0).reshape(2, 3, 4)
    small, large = np.zeros_like(x), np.zeros_like(x)
    copy_in_shares(small, x, min_bytes=x.nbytes + 1)
    assert np.array_equal(small, x) and totals == []
    copy_in_shares(large, x, min_bytes=x.nbytes)  # the spy copies nothing: the share went to run_shares
    assert totals == [2] and not large.any()


def test_copy_in_shares_rejects_arrays_of_different_shapes():
    with pytest.raises(ValueError, match=r"dst \(2, 3\) and src \(3, 2\)"):
        copy_in_shares(np.zeros((2, 3)), np.zeros((3, 2)))
