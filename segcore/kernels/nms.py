"""Reference non-maximum suppression with torchvision's CPU semantics.

Boxes are visited in decreasing score order (a stable sort: equal scores keep their index order, NaN scores
come first, as ``torch.sort(descending=True, stable=True)``); a box is kept unless an earlier kept box overlaps
it with IoU strictly greater than the threshold. IoU is computed in the boxes' dtype exactly as torchvision's
kernel does (``inter / (area_i + area_j - inter)``, areas possibly negative for inverted boxes, ``0 / 0`` never
suppresses), and compared with the threshold in float64 as C++ promotes it.

Greedy suppression is sequential by nature: the kernel loops over *kept* boxes only, and each step updates the
suppression mask of every later box with one vectorised IoU row, so the cost is O(N * kept) time, O(N) memory.
"""

from __future__ import annotations

import contextlib

__all__ = ["nms", "KERNELS"]


def nms(xp, boxes, scores, iou_threshold: float):
    """Indices (int64) of the boxes kept by greedy NMS, in decreasing score order.

    ``boxes`` is ``(N, 4)`` ``(x1, y1, x2, y2)``, ``scores`` ``(N,)`` of the same dtype.
    """
    count = boxes.shape[0]
    if count == 0:
        return xp.zeros((0,), dtype=xp.int64)
    order = xp.argsort(scores, descending=True, stable=True)
    sorted_boxes = boxes[order]
    x1, y1, x2, y2 = (sorted_boxes[:, j] for j in range(4))
    areas = (x2 - x1) * (y2 - y1)
    suppressed = xp.zeros((count,), dtype=xp.bool)
    kept = []
    i = 0
    while True:
        kept.append(i)
        if i + 1 >= count:
            break
        rest = slice(i + 1, count)
        w = _positive_part(xp, xp.minimum(x2[i], x2[rest]) - xp.maximum(x1[i], x1[rest]))
        h = _positive_part(xp, xp.minimum(y2[i], y2[rest]) - xp.maximum(y1[i], y1[rest]))
        inter = w * h
        # Same grouping as torchvision: inter / ((iarea + area_j) - inter); 0/0 is NaN, which never suppresses.
        with _quiet(xp):
            iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest] |= xp.astype(iou, xp.float64) > float(iou_threshold)
        # The next box to keep is the first later one still unsuppressed.
        remaining = suppressed[rest]
        step = int(xp.argmin(remaining))
        if bool(remaining[step]):
            break
        i = i + 1 + step
    return order[xp.asarray(kept, dtype=xp.int64)]


def _positive_part(xp, d):
    # std::max(0, d) as torchvision writes it: NaN gives 0 (np.maximum would propagate it).
    return xp.where(d > 0, d, xp.zeros_like(d))


def _quiet(xp):
    """Silence NumPy's division warnings for degenerate boxes (namespaces without errstate do not warn)."""
    errstate = getattr(xp, "errstate", None)
    return errstate(divide="ignore", invalid="ignore") if errstate is not None else contextlib.nullcontext()


KERNELS = {"nms": nms}
