"""Split a kernel's work into one contiguous share per thread and run the shares on Python threads.

Why Python threads and not a Numba parallel loop: some kernels (the Winograd convolutions) are a sequence of
steps per block of work, some compiled (``nogil``), some NumPy copies, each too short to be worth a parallel
region of its own and with data that should stay in one core's cache from one step to the next. Giving each
thread a whole share of the blocks runs every step in parallel with no synchronisation inside the share.
The steps must release the GIL (``nogil`` Numba functions, NumPy copies) and must not start Numba parallel
regions of their own: Numba's workqueue threading layer does not allow parallel regions from two threads at
once, and nested ones would put more threads than cores to work.

Shares are fixed by the amount of work and the thread count only (not by which thread finishes first), so a
kernel that reduces over shares in share order gives the same result on every run with the same thread count.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, TypeVar

import numba

__all__ = ["split", "run_shares", "copy_in_shares", "SHARED_COPY_BYTES"]

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges covering ``0..total`` in ``min(parts, total)`` contiguous, near-equal shares
    (sizes differ by at most one); one empty share when ``total`` is 0."""
    if total < 0 or parts < 1:
        raise ValueError(f"split needs total >= 0 and parts >= 1, got total={total}, parts={parts}")
    parts = max(1, min(parts, total))
    return [(i * total // parts, (i + 1) * total // parts) for i in range(parts)]


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: drop it, so that the next call starts a new one."""
    global _pool, _pool_size
    _pool, _pool_size = None, 0


os.register_at_fork(after_in_child=_forget_pool)


def _workers(count: int) -> ThreadPoolExecutor:
    """The shared pool, grown to at least ``count`` threads (its threads keep their scratch buffers)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < count:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="segcore-numba")
            _pool_size = count
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def run_shares(work: Callable[[int, int], T], total: int, threads: int | None = None) -> list[T]:
    """``[work(start, stop) for each share of split(total, threads)]``, the shares run at once: the first on the
    calling thread, the others on pool threads. ``threads`` defaults to Numba's thread count for the calling
    thread (``numba.set_num_threads``). An exception in a share is re-raised once every share has finished
    (the calling thread's own first, else that of the earliest share)."""
    threads = numba.get_num_threads() if threads is None else threads
    ranges = split(total, threads)
    if len(ranges) == 1:
        return [work(*ranges[0])]
    futures = [_workers(len(ranges) - 1).submit(work, start, stop) for start, stop in ranges[1:]]
    try:
        first = work(*ranges[0])
    finally:
        # Wait for every share even when this thread's failed: none may still be writing into the outputs.
        wait(futures)
    return [first, *(future.result() for future in futures)]


# Smallest copy worth sharing among threads. Transposing copies into a padded channels-last buffer, serial
# against shared on two threads: 392 KiB 0.021 / 0.083 ms, 1.5 MiB 0.096 / 0.101, 3 MiB 0.209 / 0.161,
# 6 MiB 0.41 / 0.265 (handing a share to a pool thread costs about 0.06 ms).
SHARED_COPY_BYTES = 2 << 20


def copy_in_shares(dst, src, min_bytes: int = SHARED_COPY_BYTES) -> None:
    """``dst[...] = src`` for two arrays of one shape, split along the first axis (the second when the first is
    shorter than the thread count) into :func:`run_shares` when ``dst`` has at least ``min_bytes``: NumPy
    copies release the GIL, so the shares run at once. Smaller copies run on the calling thread."""
    if dst.shape != src.shape:
        raise ValueError(f"copy_in_shares needs arrays of one shape, got dst {dst.shape} and src {src.shape}")
    if dst.nbytes < min_bytes or dst.ndim == 0:
        dst[...] = src
        return
    axis = 1 if dst.ndim > 1 and dst.shape[0] < numba.get_num_threads() else 0

    def share(start: int, stop: int) -> None:
        part = (slice(None),) * axis + (slice(start, stop),)
        dst[part] = src[part]

    run_shares(share, dst.shape[axis])
