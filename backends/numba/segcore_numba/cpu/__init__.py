"""The ``numba`` backend's kernels: Numba CPU implementations of segcore's hot kernels.

Each family module mirrors one of :mod:`segcore.kernels` and exports ``KERNELS`` with the same names and
signatures as the reference kernels it overrides; every other kernel falls back to the reference.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import numba
import numpy as np


def _openmp_loaded() -> bool:
    """Whether an OpenMP runtime (libgomp) is already mapped into this process (Linux; else assume not)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False


def _choose_threading_layer() -> str | None:
    """Pick Numba's threading layer unless the user did (``NUMBA_THREADING_LAYER`` or ``numba.config``).

    OpenMP with passive waiting: measured the steadiest on the 2-core VMs. Numba's workqueue layer ran the same
    RoIAlign backward at 2.1 or at 3.9 ms from call to call (its two workers often shared one core), OpenMP
    at 2.0 ms every call. OpenMP workers must not spin, though: the kernels alternate parallel loops with
    multi-threaded OpenBLAS calls, and spinning workers took the cores from OpenBLAS (a strided conv step
    144 ms against 21 ms passive). libgomp reads ``OMP_WAIT_POLICY`` once, when it is loaded, so OpenMP is
    chosen only when passive waiting can still be set (no libgomp loaded yet; the variable is then set for
    the process unless the user set it) or is already set; otherwise, and without an OpenMP runtime, the
    workqueue layer, whose workers sleep.
    """
    if "NUMBA_THREADING_LAYER" in os.environ or numba.config.THREADING_LAYER != "default":
        return None
    policy = os.environ.get("OMP_WAIT_POLICY", "").strip().upper()
    usable = policy == "PASSIVE" or (not policy and not _openmp_loaded())
    if usable:
        # Set before the import below loads libgomp, which reads it then.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        try:
            from numba.np.ufunc import omppool  # noqa: F401  (fails without an OpenMP runtime)
        except (ImportError, OSError):
            usable = False
            if not policy:
                del os.environ["OMP_WAIT_POLICY"]
    numba.config.THREADING_LAYER = "omp" if usable else "workqueue"
    return numba.config.THREADING_LAYER


_choose_threading_layer()

from . import conv, crf, nms, pool, resample, roi  # noqa: E402  (after the threading layer is chosen)

# Numba's CPU target has no float16 arrays: compiling a kernel for one fails inside Numba with an error that
# names only the type. Kernels that meet float16 operands therefore run the reference instead, as every kernel
# this backend does not override does. These compute float16 in float32 themselves (as the reference does) or,
# for the lattice filter, in the lattice weights' type, and keep their own path.
FLOAT16_HANDLED = frozenset({"roi_align", "roi_align_backward", "roi_pool", "permutohedral_filter"})


def _holds_float16(value: Any) -> bool:
    """Whether ``value`` is a float16 NumPy array, or a list or tuple holding one."""
    if isinstance(value, (list, tuple)):
        return any(_holds_float16(v) for v in value)
    return isinstance(value, np.ndarray) and value.dtype == np.float16


def reference_for_float16(kernel: Callable, reference: Callable) -> Callable:
    """``kernel``, except that calls with a float16 array among their arguments go to ``reference``."""

    @functools.wraps(kernel)
    def dispatch(xp, *args, **params):
        if any(_holds_float16(v) for v in (*args, *params.values())):
            return reference(xp, *args, **params)
        return kernel(xp, *args, **params)

    return dispatch


def _kernel_table() -> dict[str, Callable]:
    from segcore.kernels import reference_kernels

    references = reference_kernels()
    table: dict[str, Callable] = {}
    for family in (conv, pool, resample, roi, nms, crf):
        for name, kernel in family.KERNELS.items():
            handled = name in FLOAT16_HANDLED
            table[name] = kernel if handled else reference_for_float16(kernel, references[name])
    return table


KERNELS: dict[str, Callable] = _kernel_table()
