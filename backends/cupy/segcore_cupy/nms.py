"""NMS on CuPy arrays: a bitmask kernel (``kernels/nms.cu``) and a sequential reduction on the host."""

from __future__ import annotations

import numpy as np

from segcore.kernels import nms as reference

from ._cuda import function, supported

__all__ = ["nms", "KERNELS"]

# Boxes per mask word and per block; NMS_THREADS in nms.cu.
_WORD = 64


def _keep(mask: np.ndarray, count: int) -> list[int]:
    """Greedy walk over the score-sorted boxes: keep a box unless a kept earlier box suppressed it."""
    removed = np.zeros(mask.shape[1], dtype=np.uint64)
    kept = []
    for i in range(count):
        word, bit = divmod(i, _WORD)
        if (int(removed[word]) >> bit) & 1:
            continue
        kept.append(i)
        removed |= mask[i]
    return kept


def nms(xp, boxes, scores, iou_threshold: float):
    """Indices (int64) of the boxes kept by greedy NMS, in decreasing score order (stable for ties)."""
    if not supported(boxes, scores):
        return reference.nms(xp, boxes, scores, iou_threshold)
    import cupy

    count = int(boxes.shape[0])
    if count == 0:
        return cupy.zeros((0,), dtype=cupy.int64)
    # The reference's own call, so that ties and NaN scores come out in the same order.
    order = xp.argsort(scores, descending=True, stable=True)
    sorted_boxes = cupy.ascontiguousarray(boxes[order])
    chunks = (count + _WORD - 1) // _WORD
    mask = cupy.zeros((count, chunks), dtype=cupy.uint64)
    function("nms", "nms_mask", boxes.dtype)(
        (chunks, chunks), (_WORD,), (sorted_boxes, mask, np.int64(count), np.float64(iou_threshold))
    )
    kept = _keep(cupy.asnumpy(mask), count)
    return order[cupy.asarray(kept, dtype=cupy.int64)]


KERNELS = {"nms": nms}
