"""Kernels of the ``numba-cuda`` backend: CuPy arrays as storage, kernels written with Numba-CUDA.

The package is ``segcore_numba.gpu``, not ``segcore_numba.cuda``: numba-cuda installs an import hook
(``_numba_cuda_redirector``) that redirects every module whose name contains ``"numba.cuda"`` and recurses
forever on ``segcore_numba.cuda``.

Interface for the backend's registration (``segcore_numba.plugin``):

* :func:`probe` -- ``None`` when the backend can run here, else why not;
* :func:`load_namespace` -- the array namespace, ``array_api_compat.cupy``;
* :func:`to_numpy` -- a backend array as a NumPy array;
* ``KERNELS`` -- ``{kernel name: host function}`` overriding the reference kernels of the same names and
  signatures; every other kernel falls back to the reference, which runs on CuPy arrays too.

Host functions take the namespace first, like the reference kernels, then device arrays: anything exposing
``__cuda_array_interface__`` (CuPy arrays; NumPy arrays in Numba's CUDA simulator). They allocate their results
with ``xp``, choose a grid-stride launch configuration and leave dense products to ``xp.matmul`` (cuBLAS on
CuPy). Kernels are launched on the legacy default stream, which is also CuPy's unless the caller made another
CuPy stream current, so they are ordered with CuPy's own work. float32 and float64 arrays run the CUDA kernels;
other dtypes go to the reference kernels. Overridden: conv2d and both gradients (conv_transpose2d is
``conv2d_grad_input``), max_pool2d and its backward, bilinear interpolation and its backward, RoIAlign and RoIPool
with their backwards, NMS, and the permutohedral filter (splat / blur / slice); the lattice build stays the
reference's vectorised array code, which on CuPy runs on the device (see :mod:`.crf`).

Importing this package imports neither numba nor CuPy: ``probe`` looks for them first, and ``KERNELS`` imports
the kernel modules (and numba) on first access. Kernels are compiled on their first launch, per dtype.

Under ``NUMBA_ENABLE_CUDASIM=1`` the kernels run in Numba's CUDA simulator on NumPy arrays (with
``array_api_compat.numpy`` as ``xp``): that is how they are tested without a GPU. The backend itself is then
*not* usable -- its storage is CuPy device memory, which the simulator cannot read -- and :func:`probe` says so.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable

import numpy as np

__all__ = ["FAMILIES", "probe", "load_namespace", "to_numpy", "KERNELS"]

# One module per kernel family, each with its own KERNELS table.
FAMILIES = ("conv", "pool", "resample", "roi", "nms", "crf")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _one_line(error: object) -> str:
    return " ".join(str(error).split())


def probe() -> str | None:
    """``None`` when the ``numba-cuda`` backend can run here, else the reason it cannot.

    Checked in order: numba-cuda installed, CuPy installed, not in Numba's CUDA simulator, a CUDA device that
    numba-cuda can use, and one that CuPy can use.
    """
    if not _installed("numba_cuda"):
        return "numba-cuda is not installed"
    if not _installed("cupy"):
        return "cupy is not installed"
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return (
            "NUMBA_ENABLE_CUDASIM=1: kernels would run in Numba's CUDA simulator on host memory, which cannot read "
            "the backend's CuPy device arrays (the simulator is for testing the kernels on NumPy arrays)"
        )
    if not cuda.is_available():
        return f"no CUDA device found (numba-cuda: {_one_line(cuda.cuda_error())})"
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy's errors name the CUDA runtime/driver problem; pass them on
        return f"CuPy cannot use the CUDA device: {_one_line(exc)}"
    return None


def load_namespace():
    """The backend's array namespace: ``array_api_compat.cupy``."""
    import array_api_compat.cupy as xp

    return xp


def to_numpy(array) -> np.ndarray:
    """Copy a CuPy array to a NumPy array (``cupy.asnumpy``)."""
    import cupy

    return cupy.asnumpy(array)


def _kernel_table() -> dict[str, Callable]:
    from segcore.kernels import collect_kernels

    return collect_kernels(__name__, FAMILIES, "numba-cuda")


def __getattr__(name: str) -> Any:
    # PEP 562: KERNELS is built on first access, so that probe() works without numba or a CUDA toolkit.
    if name == "KERNELS":
        table = _kernel_table()
        globals()["KERNELS"] = table
        return table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
