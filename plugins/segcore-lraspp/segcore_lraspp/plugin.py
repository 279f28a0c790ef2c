"""segcore hook implementations: what this distribution adds to segcore.

segcore finds this module through the ``segcore`` entry point in ``pyproject.toml`` and calls these hooks
with a ``register`` callback; every name registered here shows ``segcore-lraspp`` as its plugin.
"""

from __future__ import annotations

from segcore.hookspecs import RegisterBackbone, RegisterModel, hookimpl

from .lraspp import lraspp_mobilenet_v3_large, lraspp_mobilenet_v3_small
from .mobilenetv3 import mobilenet_v3_large, mobilenet_v3_small


@hookimpl
def segcore_register_backbones(register: RegisterBackbone) -> None:
    register("mobilenet_v3_large", mobilenet_v3_large)
    register("mobilenet_v3_small", mobilenet_v3_small)


@hookimpl
def segcore_register_models(register: RegisterModel) -> None:
    register("lraspp_mobilenet_v3_large", lraspp_mobilenet_v3_large, task="semantic")
    register("lraspp_mobilenet_v3_small", lraspp_mobilenet_v3_small, task="semantic")
