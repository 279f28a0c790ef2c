"""Timing helpers shared by the benchmark scripts: settle, then take the median of repeated runs.

Why the settling: right after a column that kept one core busy (a single-threaded reference), a two-thread
kernel ran at one-thread speed for the next 10-20 ms on the 2-core VMs we measure on (numba RoIAlign forward
3.3 ms, then 1.8 ms once settled). Without it, a table measures the previous column's after-effect rather than
the kernel. Every column gets the same treatment.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

__all__ = ["SETTLE_SECONDS", "settle", "median_time", "interleaved", "cuda_event_time"]

SETTLE_SECONDS = 0.1


def settle(fn: Callable[[], object], seconds: float = SETTLE_SECONDS) -> None:
    """Run ``fn`` once (warm-up: JIT compilation, allocator, thread pools), then untimed for ``seconds`` more."""
    fn()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        fn()


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` runs of ``fn``, after :func:`settle`."""
    settle(fn)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(
    columns: dict[str, Callable[[], object]], repeat: int, rounds: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each column's median over ``rounds`` of its :func:`median_time`, the columns taking turns in every round
    so that a burst of load from other processes does not land on one column only.

    Returns the medians and the per-round samples (which show how noisy the machine was).
    """
    samples: dict[str, list[float]] = {name: [] for name in columns}
    for _ in range(rounds):
        for name, fn in columns.items():
            samples[name].append(median_time(fn, repeat))
    return {name: statistics.median(v) for name, v in samples.items()}, samples


def cuda_event_time(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``fn`` between two CuPy CUDA events on the current stream, after one warm-up call
    (compilation, allocation). For GPU work launched on CuPy's current stream (the legacy default stream unless
    the caller made another one current): host time would measure the launches, not the kernels."""
    import cupy

    fn()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times)
