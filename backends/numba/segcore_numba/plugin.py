"""segcore hook implementations: the ``numba`` and ``numba-cuda`` backends.

segcore finds this module through the ``segcore`` entry point and calls :func:`segcore_register_backends`
when backends are first listed or looked up. Registering imports neither Numba nor CuPy: availability is
probed, and the kernel tables are imported, only when a backend is actually used, so a missing or broken
GPU stack never stops segcore (or the CPU backend) from starting.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable

from segcore.backend import Backend
from segcore.hookspecs import RegisterBackend, hookimpl

__all__ = ["LazyKernelsBackend", "numba_backend", "numba_cuda_backend", "segcore_register_backends"]

NUMBA_INSTALL_HINT = "pip install segcore-numba (it needs numba)"
CUDA_INSTALL_HINT = 'pip install "segcore-numba[cuda]" (numba-cuda and CuPy) on a machine with a CUDA GPU and driver'


class LazyKernelsBackend(Backend):
    """A :class:`segcore.Backend` whose override table is imported on the first kernel lookup.

    ``load_kernels`` returns ``{kernel name: function}``. Kernels registered earlier through the
    ``segcore_register_kernels`` hook keep precedence over the loaded table (the hook documents that a plugin
    may override a backend's kernel).
    """

    def __init__(self, name: str, load_namespace: Callable[[], Any], *, load_kernels: Callable[[], dict], **kwargs):
        super().__init__(name, load_namespace, **kwargs)
        self._load_kernels = load_kernels
        self._kernels_loaded = False

    def _ensure_kernels(self) -> None:
        if self._kernels_loaded:
            return
        self.require_available()
        for name, fn in self._load_kernels().items():
            self.overrides.setdefault(name, fn)
        self._kernels_loaded = True

    def kernel(self, name: str) -> Callable:
        """This backend's kernel ``name`` (importing the backend's kernel table on first use)."""
        self._ensure_kernels()
        return super().kernel(name)


# -- numba (CPU) ------------------------------------------------------------------------------------------------


def _probe_numba() -> str | None:
    # find_spec, not import: listing backends must stay cheap, and numba takes ~0.5 s to import.
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed"
    return None


def _numpy_namespace():
    # The NumPy backend's own loader: the same namespace and heap settings (see segcore.host_memory).
    from segcore.backend import _load_numpy_namespace

    return _load_numpy_namespace()


def _cpu_kernels() -> dict:
    from .cpu import KERNELS

    return KERNELS


def numba_backend() -> LazyKernelsBackend:
    """The ``numba`` backend: NumPy arrays, Numba CPU kernels (parallel over the cores)."""
    return LazyKernelsBackend(
        "numba", _numpy_namespace, load_kernels=_cpu_kernels, probe=_probe_numba, install_hint=NUMBA_INSTALL_HINT
    )


# -- numba-cuda (GPU) -------------------------------------------------------------------------------------------


def _cuda_module():
    """``segcore_numba.gpu``, imported on first use (named ``gpu``: numba-cuda's import hook captures every
    module name containing ``numba.cuda``)."""
    return importlib.import_module(f"{__package__}.gpu")


def _probe_cuda() -> str | None:
    try:
        module = _cuda_module()
    except Exception as exc:  # a broken GPU stack may fail in any way; it only makes this backend unavailable
        return f"segcore_numba.gpu could not be imported ({type(exc).__name__}: {exc})"
    return module.probe()


def _cuda_namespace():
    return _cuda_module().load_namespace()


def _cuda_to_numpy(array):
    return _cuda_module().to_numpy(array)


def _cuda_kernels() -> dict:
    return _cuda_module().KERNELS


def numba_cuda_backend() -> LazyKernelsBackend:
    """The ``numba-cuda`` backend: CuPy arrays as storage, kernels written with Numba-CUDA."""
    return LazyKernelsBackend(
        "numba-cuda",
        _cuda_namespace,
        load_kernels=_cuda_kernels,
        probe=_probe_cuda,
        install_hint=CUDA_INSTALL_HINT,
        to_numpy=_cuda_to_numpy,
    )


@hookimpl
def segcore_register_backends(register: RegisterBackend) -> None:
    register(numba_backend())
    register(numba_cuda_backend())
