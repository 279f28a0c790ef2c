"""Launch configurations, supported dtypes and device-to-host copies shared by the CUDA kernel families.

Every kernel is a one-dimensional grid-stride loop over its work items, so one launch configuration fits all of
them and the grid can be capped without losing work.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import config

__all__ = ["configuration", "launch", "supported", "scalar_type", "to_host"]

# A real GPU: 256 threads a block (8 warps, good occupancy for these register-light kernels); beyond this many
# blocks the grid-stride loop takes over.
_THREADS = 256
_MAX_BLOCKS = 1 << 16
# The simulator runs every thread as a Python thread and creating them dominates its run time (about 70 us
# each); two blocks of one warp still exercise the block index and the grid-stride step.
_SIM_THREADS = 32
_SIM_MAX_BLOCKS = 2

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def configuration(items: int) -> tuple[int, int]:
    """``(blocks, threads)`` of a grid-stride launch over ``items`` work items (``items >= 1``)."""
    if config.ENABLE_CUDASIM:
        threads, cap = _SIM_THREADS, _SIM_MAX_BLOCKS
    else:
        threads, cap = _THREADS, _MAX_BLOCKS
    return min(cap, -(-items // threads)), threads


def launch(kernel, items: int, *args: Any) -> None:
    """Run ``kernel(*args)`` over ``items`` work items; an empty launch is skipped (CUDA rejects a 0 grid)."""
    if items <= 0:
        return
    blocks, threads = configuration(int(items))
    kernel[blocks, threads](*args)


def supported(*arrays) -> bool:
    """Whether all ``arrays`` share one dtype, float32 or float64: the dtypes these kernels are compiled for.

    Other dtypes (float16, integers) go to the reference kernels, which run on CuPy arrays as well.
    """
    dtypes = {np.dtype(a.dtype) for a in arrays}
    return len(dtypes) == 1 and dtypes.pop() in _FLOATS


def scalar_type(dtype) -> type:
    """The NumPy scalar type a kernel computes in for arrays of ``dtype`` (its cast function inside kernels)."""
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def to_host(array) -> np.ndarray:
    """A NumPy copy of a device array: ``cupy.ndarray.get`` on CuPy, a no-op on NumPy (the simulator)."""
    get = getattr(array, "get", None)
    return get() if callable(get) else np.asarray(array)
