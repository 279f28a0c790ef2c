"""What :mod:`segcore_cupy.plugin` needs at run time: probe, namespace, ``to_numpy`` and the kernel table.

Importing this module imports no CuPy; ``KERNELS`` imports the host wrappers (and CuPy) on first access.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable

import numpy as np

__all__ = ["probe", "load_namespace", "to_numpy", "KERNELS", "HOST_MODULES"]

# Host-wrapper modules, each with a KERNELS table of overrides.
HOST_MODULES = ("conv", "pool", "resample", "roi", "nms")


def _one_line(error: object) -> str:
    return " ".join(str(error).split())


def probe() -> str | None:
    """``None`` when the ``cupy`` backend can run here, else why not."""
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed"
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises driver/runtime errors of several types; each names the problem
        return f"no CUDA device found (CUDA error: {type(exc).__name__}: {_one_line(exc)})"
    if count == 0:
        return "no CUDA device found (the CUDA runtime reports 0 devices)"
    return None


def load_namespace():
    """The backend's array namespace: ``array_api_compat.cupy``."""
    import array_api_compat.cupy as xp

    return xp


def to_numpy(array) -> np.ndarray:
    """Copy a CuPy array to a NumPy array."""
    import cupy

    return cupy.asnumpy(array)


def _kernel_table() -> dict[str, Callable]:
    from segcore.kernels import collect_kernels

    return collect_kernels(__package__, HOST_MODULES, "cupy")


def __getattr__(name: str) -> Any:
    # PEP 562: built on first access, so that probe() works without CuPy.
    if name == "KERNELS":
        table = _kernel_table()
        globals()["KERNELS"] = table
        return table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
