"""Built-in segmentation models and backbones.

Each architecture module defines ``SEMANTIC_MODELS`` and/or ``INSTANCE_MODELS`` (name -> factory); each module
in :mod:`segcore.models.backbones` defines ``BACKBONES``. The built-in plugin registers everything these
tables hold through the same hooks third-party plugins use, so adding a module adds its models.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from .base import Backbone, SemanticSegmentationModel

__all__ = ["Backbone", "SemanticSegmentationModel", "builtin_models", "builtin_backbones"]


def _tables(package: str, attributes: tuple[str, ...]) -> dict[str, dict[str, Callable]]:
    """Merge the named tables of every public module of ``package``; a name defined twice is an error."""
    merged: dict[str, dict[str, Callable]] = {attribute: {} for attribute in attributes}
    owner: dict[str, str] = {}
    root = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for attribute in attributes:
            for name, factory in getattr(module, attribute, {}).items():
                if name in owner:
                    raise RuntimeError(f"built-in model {name!r} is defined in both {owner[name]} and {module.__name__}")
                owner[name] = module.__name__
                merged[attribute][name] = factory
    return merged


def builtin_models() -> dict[str, tuple[Callable, str]]:
    """name -> (factory, task) for every built-in model."""
    tables = _tables(__name__, ("SEMANTIC_MODELS", "INSTANCE_MODELS"))
    models = {name: (f, "semantic") for name, f in tables["SEMANTIC_MODELS"].items()}
    models.update({name: (f, "instance") for name, f in tables["INSTANCE_MODELS"].items()})
    return models


def builtin_backbones() -> dict[str, Callable]:
    """name -> factory for every built-in backbone."""
    return _tables(f"{__name__}.backbones", ("BACKBONES",))["BACKBONES"]
