"""segcore's own plugin: what the core provides, registered through the same hooks as third-party code.

Listed in :data:`segcore.plugins.DEFAULT_PLUGINS`, so it loads before any installed plugin and cannot be
disabled.
"""

from __future__ import annotations

from .backend import NUMPY_BACKEND
from .hookspecs import RegisterBackbone, RegisterBackend, RegisterLoss, RegisterModel, hookimpl


@hookimpl
def segcore_register_backends(register: RegisterBackend) -> None:
    # The reference backend: every kernel, no overrides; the one every other backend is checked against.
    register(NUMPY_BACKEND)


@hookimpl
def segcore_register_backbones(register: RegisterBackbone) -> None:
    from .models import builtin_backbones

    for name, factory in builtin_backbones().items():
        register(name, factory)


@hookimpl
def segcore_register_models(register: RegisterModel) -> None:
    from .models import builtin_models

    for name, (factory, task) in builtin_models().items():
        register(name, factory, task=task)


@hookimpl
def segcore_register_losses(register: RegisterLoss) -> None:
    from .losses import LOSSES

    for name, factory in LOSSES.items():
        register(name, factory)
