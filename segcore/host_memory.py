"""How the process's C heap treats the large, short-lived arrays that NumPy-array backends allocate.

Why this exists: a training step allocates and frees the same multi-megabyte arrays (layer outputs,
gradients) over and over. glibc's malloc serves large requests from fresh ``mmap`` pages and returns freed
heap tops to the operating system, so each step touches new pages that the kernel must fault in and zero.
On the VMs we measure on a page fault costs 1-4 µs per 4 KiB page: a conv2d forward+backward of a
64-channel 56x56 layer took 1,990 page faults and about 3 ms more than with freed memory kept (37.7 against
34.5 ms; ``benchmarks/conv2d.py``). PyTorch users reach for jemalloc or tcmalloc for the same reason.

:func:`keep_freed_memory` asks glibc to serve requests below 32 MiB (its largest allowed threshold) from the
heap and to keep up to 1 GiB of freed heap instead of trimming it, so repeated steps reuse warm pages.
Arrays of 32 MiB and more still get their own mappings and go back to the system when freed. The cost: a
process's resident memory stays near its peak working set of smaller arrays.

The NumPy backends call it when their namespace is first loaded. It is process-wide, so it can be declined:
set ``SEGCORE_KEEP_FREED_MEMORY=0`` before the first use. Elsewhere than glibc (macOS, musl, Windows) it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading

__all__ = ["keep_freed_memory", "ENV_VAR"]

ENV_VAR = "SEGCORE_KEEP_FREED_MEMORY"

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's maximum (HEAP_MAX_SIZE / 2 on 64-bit); mallopt rejects larger values
_TRIM_THRESHOLD = 1 << 30

_lock = threading.Lock()
_state: dict[str, bool | None] = {"applied": None}


def _declined() -> bool:
    value = os.environ.get(ENV_VAR, "1").strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        return False
    if value in ("0", "false", "no", "off"):
        return True
    raise ValueError(f"{ENV_VAR} must be 1 or 0 (also true/false, yes/no, on/off), got {value!r}")


def keep_freed_memory() -> bool:
    """Apply the heap settings once per process; return whether they are in effect.

    ``False`` when declined through ``SEGCORE_KEEP_FREED_MEMORY=0`` or when the C library is not glibc.
    """
    with _lock:
        if _state["applied"] is None:
            _state["applied"] = False if _declined() else _apply()
        return bool(_state["applied"])


def _apply() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(libc_name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it; musl's mallopt is a no-op stub
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success. Setting either threshold also turns off glibc's dynamic adjustment of
    # the mmap threshold, which is what made the faults depend on the order of earlier allocations.
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
