"""segcore hook implementation: the ``cupy`` backend.

segcore finds this module through the ``segcore`` entry point. Registering imports no CuPy: availability is
probed, and the kernel table imported, only when the backend is listed or used, so a missing driver or GPU
never stops segcore from starting; the backend is then listed as unavailable with the reason.
"""

from __future__ import annotations

from typing import Any, Callable

from segcore.backend import Backend
from segcore.hookspecs import RegisterBackend, hookimpl

__all__ = ["INSTALL_HINT", "CupyBackend", "cupy_backend", "segcore_register_backends"]

INSTALL_HINT = 'pip install "segcore-cupy[cuda12]" (or [cuda13]) on a machine with a CUDA GPU and driver'


def _device():
    # Imported on first use, so that registering the backend (at every segcore start) does no work.
    from . import device

    return device


class CupyBackend(Backend):
    """A :class:`segcore.Backend` whose CUDA kernel table is imported on the first kernel lookup.

    Kernels registered earlier through the ``segcore_register_kernels`` hook keep precedence over the table.
    """

    def __init__(self, name: str, load_namespace: Callable[[], Any], *, load_kernels: Callable[[], dict], **kwargs):
        super().__init__(name, load_namespace, **kwargs)
        self._load_kernels = load_kernels
        self._kernels_loaded = False

    def kernel(self, name: str) -> Callable:
        """This backend's kernel ``name`` (importing the CUDA kernel table on first use)."""
        if not self._kernels_loaded:
            self.require_available()
            for kernel_name, fn in self._load_kernels().items():
                self.overrides.setdefault(kernel_name, fn)
            self._kernels_loaded = True
        return super().kernel(name)


def _probe() -> str | None:
    return _device().probe()


def _namespace():
    return _device().load_namespace()


def _to_numpy(array):
    return _device().to_numpy(array)


def _kernels() -> dict:
    return dict(_device().KERNELS)


def cupy_backend() -> CupyBackend:
    """The ``cupy`` backend: CuPy arrays, CUDA C kernels through ``cupy.RawModule``, GEMMs on cuBLAS."""
    return CupyBackend(
        "cupy", _namespace, load_kernels=_kernels, probe=_probe, install_hint=INSTALL_HINT, to_numpy=_to_numpy
    )


@hookimpl
def segcore_register_backends(register: RegisterBackend) -> None:
    register(cupy_backend())
