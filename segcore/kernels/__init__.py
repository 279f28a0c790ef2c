"""Reference kernels: forward and backward maths on raw arrays, no autograd.

Every kernel takes the array namespace first, ``kernel(xp, *arrays, **params)``, and uses only the NumPy API
subset that CuPy also implements, so an accelerated backend can fall back to it. Each family module exports
a ``KERNELS`` dict; :func:`reference_kernels` merges them into the table that ``Backend.kernel`` consults.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Callable

# One module per kernel family; each defines KERNELS = {name: function}.
FAMILIES = ("conv", "pool", "resample", "norm", "special", "roi", "nms", "crf")


@lru_cache(maxsize=None)
def reference_kernels() -> dict[str, Callable]:
    table: dict[str, Callable] = {}
    for family in FAMILIES:
        module = importlib.import_module(f"{__name__}.{family}")
        for name, fn in module.KERNELS.items():
            if name in table:
                raise RuntimeError(f"reference kernel {name!r} is defined by two families (second: {family!r})")
            table[name] = fn
    return table
