"""The ``numba`` backend's kernels: Numba CPU implementations of segcore's hot kernels.

Each family module mirrors one of :mod:`segcore.kernels` and exports ``KERNELS`` with the same names and
signatures as the reference kernels it overrides; every other kernel falls back to the reference.
"""

from __future__ import annotations

import os
from typing import Callable

import numba

# The kernels alternate parallel Numba loops with multi-threaded OpenBLAS calls (im2col, then GEMM). Worker
# threads of Numba's OpenMP layer keep spinning after a parallel loop and take the cores from OpenBLAS's threads:
# measured 3-10x slower convolutions on 2 cores. The workqueue layer's workers sleep. A layer the user chose
# (NUMBA_THREADING_LAYER or numba.config) is kept.
if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

from . import conv, crf, nms, pool, resample, roi  # noqa: E402  (after the threading layer is chosen)

KERNELS: dict[str, Callable] = {}
for _family in (conv, pool, resample, roi, nms, crf):
    KERNELS.update(_family.KERNELS)
del _family
