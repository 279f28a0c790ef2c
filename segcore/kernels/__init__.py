"""Reference kernels: forward and backward maths on raw arrays, no autograd.

Every kernel takes the array namespace first, ``kernel(xp, *arrays, **params)``, and uses only the NumPy API
subset that CuPy also implements, so an accelerated backend can fall back to it. Each family module exports
a ``KERNELS`` dict; :func:`reference_kernels` merges them into the table that ``Backend.kernel`` consults.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Callable, Iterable

# One module per kernel family; each defines KERNELS = {name: function}.
FAMILIES = ("conv", "pool", "resample", "norm", "special", "roi", "nms", "crf")


def collect_kernels(package: str, families: Iterable[str], owner: str) -> dict[str, Callable]:
    """Merge the ``KERNELS`` tables of ``package.<family>`` modules; a name defined twice is an error.

    Used for the reference table and by backends that keep one module per kernel family (``owner`` names
    the table in the error message).
    """
    table: dict[str, Callable] = {}
    for family in families:
        module = importlib.import_module(f"{package}.{family}")
        for name, fn in module.KERNELS.items():
            if name in table:
                raise RuntimeError(f"{owner} kernel {name!r} is defined by two families (second: {family!r})")
            table[name] = fn
    return table


@lru_cache(maxsize=None)
def reference_kernels() -> dict[str, Callable]:
    """The reference kernel table, name -> function, that every backend falls back to."""
    return collect_kernels(__name__, FAMILIES, "reference")
