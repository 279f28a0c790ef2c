"""Numba CPU non-maximum suppression with torchvision's CPU semantics.

Same contract as :mod:`segcore.kernels.nms`: boxes are visited in decreasing score order (stable, NaN scores
first, as the reference sorts them), and a box is kept unless an earlier kept box overlaps it with IoU
strictly greater than the threshold, IoU computed in the boxes' dtype with torchvision's grouping and
compared in float64. Greedy suppression is sequential, so the kernel is a plain compiled loop (one pass over
the boxes, an inner pass per kept box), like torchvision's own CPU kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["nms", "KERNELS"]


@njit(fastmath=False, cache=True, error_model="numpy")
def _greedy(boxes, threshold, keep):
    """Kept positions of ``boxes`` (sorted by decreasing score) written to ``keep``; returns how many."""
    count = boxes.shape[0]
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(count, dtype=np.bool_)
    zero = boxes.dtype.type(0)
    kept = 0
    for i in range(count):
        if suppressed[i]:
            continue
        keep[kept] = i
        kept += 1
        for j in range(i + 1, count):
            if suppressed[j]:
                continue
            # std::max(0, d) as torchvision writes it: NaN gives 0.
            w = min(x2[i], x2[j]) - max(x1[i], x1[j])
            h = min(y2[i], y2[j]) - max(y1[i], y1[j])
            w = w if w > zero else zero
            h = h if h > zero else zero
            inter = w * h
            # inter / ((area_i + area_j) - inter); 0 / 0 is NaN, which never suppresses.
            iou = inter / (areas[i] + areas[j] - inter)
            if np.float64(iou) > threshold:
                suppressed[j] = True
    return kept


def nms(xp, boxes, scores, iou_threshold: float):
    """Indices (int64) of the boxes kept by greedy NMS, in decreasing score order."""
    count = boxes.shape[0]
    if count == 0:
        return np.zeros((0,), dtype=np.int64)
    # The reference's sort (stable, descending, NaN first) through the same namespace call.
    order = np.asarray(xp.argsort(scores, descending=True, stable=True), dtype=np.int64)
    sorted_boxes = np.ascontiguousarray(np.asarray(boxes)[order])
    keep = np.empty(count, dtype=np.int64)
    kept = _greedy(sorted_boxes, float(iou_threshold), keep)
    return order[keep[:kept]]


KERNELS = {"nms": nms}
