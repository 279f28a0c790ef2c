"""Non-maximum suppression on the GPU, structured like torchvision's CUDA ``nms``.

Boxes are sorted by decreasing score on the device (``xp.argsort(descending=True, stable=True)``, as the
reference). A kernel then computes the suppression bitmask: one thread per (box ``i``, block of 64 boxes) sets
bit ``j`` of ``mask[i, block]`` when box ``64 * block + j > i`` overlaps box ``i`` with IoU above the threshold.
The mask, ``N * ceil(N / 64)`` 64-bit words, is copied to the host, where the greedy pass is sequential by
nature: walking the boxes in order, a box not yet suppressed is kept and ORs its row into the suppression set.

IoU is the reference's (torchvision's): ``inter / ((area_i + area_j) - inter)`` in the boxes' dtype, with NaN
intersections counting as 0, compared with the threshold in float64; ``0 / 0`` never suppresses, ``x / 0`` for
``x > 0`` is ``+inf`` and does (below an infinite threshold).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from numba import cuda

from segcore.kernels import nms as reference

from . import _launch

__all__ = ["nms", "KERNELS"]

_WORD = 64


@lru_cache(maxsize=None)
def _mask_kernel(t: type):
    """The IoU bitmask kernel computing in ``t``, the boxes' type."""

    @cuda.jit(device=True)
    def nan_min(a, b):
        # NaN-propagating, like the reference's xp.minimum.
        return a if (a < b or a != a) else b

    @cuda.jit(device=True)
    def nan_max(a, b):
        return a if (a > b or a != a) else b

    @cuda.jit(device=True)
    def positive_part(d):
        # std::max(0, d) as torchvision writes it: NaN gives 0.
        return d if d > t(0) else t(0)

    @cuda.jit
    def iou_mask(boxes, threshold, mask):
        count = boxes.shape[0]
        words = mask.shape[1]
        total = count * words
        item = cuda.grid(1)
        step = cuda.gridsize(1)
        while item < total:
            i = item // words
            block = item - i * words
            x1, y1, x2, y2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
            area_i = (x2 - x1) * (y2 - y1)
            bits = np.uint64(0)
            j0 = block * _WORD
            for j in range(max(j0, i + 1), min(j0 + _WORD, count)):
                area_j = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
                w = positive_part(nan_min(x2, boxes[j, 2]) - nan_max(x1, boxes[j, 0]))
                h = positive_part(nan_min(y2, boxes[j, 3]) - nan_max(y1, boxes[j, 1]))
                inter = w * h
                union = area_i + area_j - inter
                if union != t(0):
                    suppress = np.float64(inter / union) > threshold
                else:
                    # inter / 0 without the division (and its warning in the simulator): +inf for inter > 0,
                    # NaN (never suppresses) for 0 or NaN.
                    suppress = inter > t(0) and np.float64(np.inf) > threshold
                if suppress:
                    bits |= np.uint64(1) << np.uint64(j - j0)
            mask[i, block] = bits
            item += step

    return iou_mask


def _greedy(mask: np.ndarray) -> list[int]:
    """Sorted positions kept by greedy suppression, given each box's suppression bitmask over later boxes."""
    count, words = mask.shape
    removed = np.zeros(words, dtype=np.uint64)
    kept = []
    for i in range(count):
        word, bit = divmod(i, _WORD)
        if (int(removed[word]) >> bit) & 1:
            continue
        kept.append(i)
        # Row i only has bits for boxes after i: the words before i's own cannot change.
        removed[word:] |= mask[i, word:]
    return kept


def nms(xp, boxes, scores, iou_threshold: float):
    """Indices (int64) of the boxes kept by greedy NMS, in decreasing score order.

    ``boxes`` is ``(N, 4)`` ``(x1, y1, x2, y2)``, ``scores`` ``(N,)`` of the same dtype.
    """
    if not _launch.supported(boxes):
        return reference.nms(xp, boxes, scores, iou_threshold)
    count = int(boxes.shape[0])
    if count == 0:
        return xp.zeros((0,), dtype=xp.int64)
    order = xp.argsort(scores, descending=True, stable=True)
    sorted_boxes = xp.ascontiguousarray(boxes[order])
    mask = xp.empty((count, -(-count // _WORD)), dtype=xp.uint64)
    kernel = _mask_kernel(_launch.scalar_type(boxes.dtype))
    _launch.launch(kernel, mask.size, sorted_boxes, float(iou_threshold), mask)
    kept = _greedy(_launch.to_host(mask))
    return order[xp.asarray(kept, dtype=xp.int64)]


KERNELS: dict[str, Callable] = {"nms": nms}
