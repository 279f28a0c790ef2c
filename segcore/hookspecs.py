"""The hooks a segcore plugin can implement.

A plugin is any module or object with functions named after these hooks, decorated with
:data:`hookimpl`. Every hook receives a ``register`` callback and returns nothing: the plugin calls
``register`` once per thing it provides, and segcore records which plugin provided it. Built-in models,
losses and backends come through these same hooks (see :mod:`segcore.builtin_plugin`).

Hooks run in this order, all plugins for one hook before the next hook, so a plugin can add kernels to a
backend another plugin registers: backends, kernels, backbones, models, losses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

import pluggy

if TYPE_CHECKING:
    from .backend import Backend

__all__ = [
    "PROJECT_NAME",
    "hookspec",
    "hookimpl",
    "RegisterModel",
    "RegisterBackbone",
    "RegisterLoss",
    "RegisterBackend",
    "RegisterKernel",
    "HOOK_ORDER",
]

PROJECT_NAME = "segcore"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Decorate a plugin's hook implementations with this (``@hookimpl``).
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class RegisterModel(Protocol):
    def __call__(
        self, name: str, factory: Callable[..., object], *, task: str = "semantic", description: str | None = None
    ) -> None: ...


class RegisterBackbone(Protocol):
    def __call__(self, name: str, factory: Callable[..., object], *, description: str | None = None) -> None: ...


class RegisterLoss(Protocol):
    def __call__(self, name: str, factory: Callable[..., object], *, description: str | None = None) -> None: ...


class RegisterBackend(Protocol):
    def __call__(self, backend: Backend) -> None: ...


class RegisterKernel(Protocol):
    def __call__(self, backend: str, name: str, kernel: Callable[..., object]) -> None: ...


@hookspec
def segcore_register_backends(register: RegisterBackend) -> None:
    """Register array backends.

    Call ``register(backend)`` with a :class:`segcore.Backend` for each backend the plugin provides. The
    backend's name must not be taken; listing backends never loads their array library, so keep imports
    of CuPy/Numba inside the backend's ``load_namespace`` and ``probe`` callables.
    """


@hookspec
def segcore_register_kernels(register: RegisterKernel) -> None:
    """Add or override kernels of an existing backend.

    Call ``register(backend_name, kernel_name, kernel)``; the kernel takes the array namespace first,
    ``kernel(xp, *arrays, **params)``, like the reference kernels in :mod:`segcore.kernels`. Runs after
    every plugin's backends are registered. Two plugins overriding the same kernel of the same backend is
    an error naming both.
    """


@hookspec
def segcore_register_backbones(register: RegisterBackbone) -> None:
    """Register backbones: ``register(name, factory, description=None)``.

    ``factory(**kwargs)`` returns a :class:`segcore.nn.Module` whose ``forward`` returns its named
    intermediate features. ``description`` defaults to the first line of the factory's docstring.
    """


@hookspec
def segcore_register_models(register: RegisterModel) -> None:
    """Register segmentation models: ``register(name, factory, task="semantic", description=None)``.

    ``task`` is ``"semantic"`` or ``"instance"``. ``factory(**kwargs)`` returns a
    :class:`segcore.nn.Module` implementing the model contract (``forward``, ``losses``, ``predict``;
    check it with :func:`segcore.testing.assert_is_semantic_segmentation_model`). ``segcore.build`` checks
    user keywords against the factory's signature, so give the factory explicit keyword parameters.
    """


@hookspec
def segcore_register_losses(register: RegisterLoss) -> None:
    """Register losses: ``register(name, factory, description=None)``.

    ``factory(**kwargs)`` returns a callable ``loss(logits, targets) -> Tensor`` (a scalar).
    """


#: The order in which hooks run during loading (backends before the kernels that may target them).
HOOK_ORDER: tuple[str, ...] = (
    "segcore_register_backends",
    "segcore_register_kernels",
    "segcore_register_backbones",
    "segcore_register_models",
    "segcore_register_losses",
)
