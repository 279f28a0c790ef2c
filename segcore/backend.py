"""Backends: an array namespace, a kernel table and conversions to and from NumPy.

The NumPy backend is the reference: it has every kernel and overrides none. Other backends override the
kernels they accelerate and fall back to the reference kernels for the rest, so reference kernels only use
the NumPy API subset that CuPy also implements.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import BackendUnavailableError

__all__ = [
    "Backend",
    "BackendInfo",
    "register_backend",
    "get_backend",
    "list_backends",
    "set_default_backend",
    "get_default_backend",
]


class Backend:
    """An array library plus the kernels that run on it.

    Parameters
    ----------
    name:
        Registry name, e.g. ``"numpy"``.
    load_namespace:
        Returns the array-API-compatible namespace. Called lazily so that listing a backend never imports
        its (possibly heavy or missing) array library.
    probe:
        Returns ``None`` when the backend can run here, else a human-readable reason it cannot.
    overrides:
        Kernels this backend implements itself; every other kernel comes from the reference table.
    install_hint:
        What to install to make the backend available; shown with the reason.
    to_numpy:
        Converts one of this backend's arrays to a NumPy array (defaults to ``np.asarray``).
    """

    def __init__(
        self,
        name: str,
        load_namespace: Callable[[], Any],
        *,
        probe: Callable[[], str | None] | None = None,
        overrides: dict[str, Callable] | None = None,
        install_hint: str = "",
        to_numpy: Callable[[Any], np.ndarray] | None = None,
    ) -> None:
        self.name = name
        self._load_namespace = load_namespace
        self._probe = probe
        self._xp = None
        self._availability: tuple[bool, str | None] | None = None
        self.overrides: dict[str, Callable] = dict(overrides or {})
        self.install_hint = install_hint
        self._to_numpy = to_numpy or np.asarray

    # -- availability -------------------------------------------------------------------------------------
    def _check(self) -> tuple[bool, str | None]:
        if self._availability is None:
            try:
                reason = self._probe() if self._probe is not None else None
            except Exception as exc:  # a probe that crashes means "not available", with the crash as reason
                reason = f"{type(exc).__name__}: {exc}"
            self._availability = (reason is None, reason)
        return self._availability

    def is_available(self) -> bool:
        """Whether this backend can run on this machine."""
        return self._check()[0]

    @property
    def unavailable_reason(self) -> str | None:
        """Why the backend cannot run here (``None`` when it can)."""
        return self._check()[1]

    def require_available(self) -> None:
        """Raise :class:`BackendUnavailableError` with the reason and the install hint if unavailable."""
        ok, reason = self._check()
        if not ok:
            hint = f" To use it: {self.install_hint}" if self.install_hint else ""
            raise BackendUnavailableError(f"backend {self.name!r} is not available: {reason}.{hint}")

    # -- arrays -------------------------------------------------------------------------------------------
    @property
    def xp(self):
        """The backend's array namespace (array-API compatible, NumPy-like)."""
        if self._xp is None:
            self.require_available()
            self._xp = self._load_namespace()
        return self._xp

    def asarray(self, data, dtype=None):
        """Convert ``data`` (nested lists, scalars, NumPy or this backend's arrays) to a backend array."""
        if dtype is not None:
            return self.xp.asarray(data, dtype=dtype)
        return self.xp.asarray(data)

    def to_numpy(self, array) -> np.ndarray:
        """Copy-free where possible conversion of a backend array to NumPy."""
        return self._to_numpy(array)

    # -- kernels ------------------------------------------------------------------------------------------
    def kernel(self, name: str) -> Callable:
        """The backend's override for ``name`` or else the reference kernel."""
        fn = self.overrides.get(name)
        if fn is not None:
            return fn
        from .kernels import reference_kernels

        table = reference_kernels()
        if name in table:
            return table[name]
        known = sorted(set(table) | set(self.overrides))
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown kernel {name!r} for backend {self.name!r}.{hint} Known kernels: {', '.join(known)}")

    def register_kernel(self, name: str, fn: Callable) -> None:
        """Add or replace this backend's implementation of kernel ``name``."""
        if not callable(fn):
            raise TypeError(f"kernel {name!r} for backend {self.name!r} must be callable, got {type(fn).__name__}")
        self.overrides[name] = fn

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    # A backend is a process-wide singleton holding a module object: copies of tensors (deepcopy of a model,
    # pickling for worker processes) must refer to the same registered backend, looked up by name.
    def __deepcopy__(self, memo) -> Backend:
        return self

    def __copy__(self) -> Backend:
        return self

    def __reduce__(self):
        return (get_backend, (self.name,))


@dataclass(frozen=True)
class BackendInfo:
    """One line of :func:`list_backends`."""

    name: str
    available: bool
    reason: str | None
    provider: str

    def __str__(self) -> str:
        status = "available" if self.available else f"unavailable: {self.reason}"
        return f"{self.name}: {status}"


def _load_numpy_namespace():
    import array_api_compat.numpy as xp

    from .host_memory import keep_freed_memory

    keep_freed_memory()  # reuse warm heap pages for large arrays; see segcore.host_memory for why
    return xp


NUMPY_BACKEND = Backend("numpy", _load_numpy_namespace)

# name -> (backend, provider). Empty until first use: the built-in plugin (segcore.builtin_plugin) registers
# the NumPy backend through the segcore_register_backends hook, exactly like a third-party backend.
_BACKENDS: dict[str, tuple[Backend, str]] = {}
_default_backend_name = "numpy"


def register_backend(backend: Backend, provider: str = "segcore") -> None:
    """Make ``backend`` known by its name. Registering a second backend under a taken name is an error."""
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a segcore.Backend, got {type(backend).__name__}")
    existing = _BACKENDS.get(backend.name)
    if existing is not None and existing[0] is not backend:
        raise ValueError(
            f"backend {backend.name!r} is registered twice: by {existing[1]!r} and by {provider!r}"
        )
    _BACKENDS[backend.name] = (backend, provider)


def _unregister_backend(name: str) -> None:
    """Remove a backend (tests and plugin unloading only)."""
    if name == "numpy":
        raise ValueError("the numpy reference backend cannot be unregistered")
    _BACKENDS.pop(name, None)


def _all_backends(name: str | None = None) -> dict[str, tuple[Backend, str]]:
    """The backend table, with the plugins that may provide ``name`` (every backend if ``None``) loaded.

    Built-in backends are registered on the first call. Installed plugins are imported only when ``name``
    is not already known or every backend is asked for, so plain NumPy work never imports them.
    """
    # segcore.plugins imports this module (register_backend): import it on first use instead.
    from .plugins import manager

    manager.ensure_builtins_loaded()
    if name is None or name not in _BACKENDS:
        manager.ensure_loaded()
    return _BACKENDS


def get_backend(backend: str | Backend | None = None) -> Backend:
    """Resolve a backend name (or ``None`` for the default) to an available :class:`Backend`."""
    if backend is None:
        backend = _default_backend_name
    if isinstance(backend, Backend):
        backend.require_available()
        return backend
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a name or a Backend, got {type(backend).__name__}")
    table = _all_backends(backend)
    if backend not in table:
        close = difflib.get_close_matches(backend, list(table), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown backend {backend!r}.{hint} Known backends: {', '.join(sorted(table))}")
    found = table[backend][0]
    found.require_available()
    return found


def list_backends() -> list[BackendInfo]:
    """Every known backend, with whether it can run here and, if not, why."""
    return [
        BackendInfo(name, b.is_available(), b.unavailable_reason, provider)
        for name, (b, provider) in sorted(_all_backends().items())
    ]


def set_default_backend(backend: str | Backend) -> None:
    """Set the backend used when ``backend=None`` is passed to tensor constructors and ``build``."""
    global _default_backend_name
    _default_backend_name = get_backend(backend).name


def get_default_backend() -> Backend:
    """The backend used when none is named."""
    return get_backend(None)
