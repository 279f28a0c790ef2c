"""Loading the CUDA C sources of ``segcore_cupy/kernels`` and launching their kernels.

Each family ``kernels/<family>.cu`` is one ``cupy.RawModule``, compiled by NVRTC on first use and cached by
CuPy on disk. Its kernels are ``extern "C"`` instantiations named ``<kernel>_f32`` / ``<kernel>_f64``. Integer
kernel parameters are ``long long`` (``i64``; the one flag, RoIAlign's ``aligned``, is ``int``) and floating ones
the array's scalar type (NMS's threshold: ``double``), so the host passes ``numpy.int64`` / ``numpy.int32`` and
``dtype.type`` scalars: CuPy copies a scalar argument's bytes as its NumPy type, and a
mismatch would be read as garbage rather than raise.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["KERNEL_DIR", "FAMILIES", "NVRTC_OPTIONS", "THREADS", "source", "function", "launch", "supported", "i64"]

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
FAMILIES = ("conv", "pool", "resample", "roi", "nms")
THREADS = 256
# Grid-stride kernels: a capped grid still covers any size, and 2**16 blocks of 256 threads fill any current GPU.
_MAX_BLOCKS = 1 << 16
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
# NVRTC options of every module (the compile tests use the same); CuPy adds the device's -arch.
NVRTC_OPTIONS = ("--std=c++14",)
_INCLUDE = '#include "common.cuh"'


def source(family: str) -> str:
    """The CUDA C source of ``family`` with ``common.cuh`` pasted in.

    Pasted rather than passed as an include path: CuPy's compile cache is keyed on the source text, so an edit
    of the shared header must change it.
    """
    text = (KERNEL_DIR / f"{family}.cu").read_text()
    if _INCLUDE not in text:
        raise RuntimeError(f"{family}.cu does not include common.cuh")
    return text.replace(_INCLUDE, (KERNEL_DIR / "common.cuh").read_text())


@functools.cache
def _module(family: str):
    import cupy

    # No fast-math: the kernels must agree with the reference within float tolerances, and IEEE division and
    # denormals keep RoI geometry and IoU decisions identical to torchvision's.
    return cupy.RawModule(code=source(family), options=NVRTC_OPTIONS)


def supported(*arrays: Any) -> bool:
    """True when every array is a CuPy array of one dtype that the kernels are instantiated for.

    Anything else (NumPy input, float16, mixed dtypes) goes to the reference kernel, which runs on CuPy too.
    """
    import cupy

    if not all(isinstance(a, cupy.ndarray) for a in arrays):
        return False
    dtypes = {a.dtype for a in arrays}
    return len(dtypes) == 1 and next(iter(dtypes)) in _SUFFIX


def function(family: str, name: str, dtype):
    """The compiled kernel ``<name>_<f32|f64>`` of ``family``."""
    return _module(family).get_function(f"{name}_{_SUFFIX[np.dtype(dtype)]}")


def launch(family: str, name: str, dtype, work: int, args: tuple) -> None:
    """Launch a grid-stride kernel over ``work`` elements (nothing to do for 0)."""
    if work <= 0:
        return
    blocks = min((work + THREADS - 1) // THREADS, _MAX_BLOCKS)
    function(family, name, dtype)((blocks,), (THREADS,), args)


def i64(*values: int) -> tuple:
    """Integer kernel arguments, as the ``long long`` the kernels declare."""
    return tuple(np.int64(v) for v in values)
