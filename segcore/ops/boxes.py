"""Box utilities with ``torchvision.ops.boxes`` semantics: NMS, IoU, area, format conversion, clipping.

Boxes are ``(x1, y1, x2, y2)`` in pixels unless a format says otherwise. :func:`box_area`, :func:`box_iou`,
:func:`box_convert` and :func:`clip_boxes_to_image` are compositions of differentiable ops, so gradients flow
through them (as in torchvision); :func:`nms`, :func:`batched_nms`, :func:`remove_small_boxes` and
:func:`masks_to_boxes` return indices or new boxes off the graph.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..errors import BackendMismatchError
from ._utils import check_boxes_tensor

__all__ = [
    "nms",
    "batched_nms",
    "remove_small_boxes",
    "clip_boxes_to_image",
    "box_convert",
    "box_area",
    "box_iou",
    "masks_to_boxes",
]

_FORMATS = ("xyxy", "xywh", "cxcywh")


def _check_real(op: str, value, name: str) -> float:
    if not isinstance(value, (numbers.Real, np.number)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    return float(value)


def _same_backend(op: str, first: Tensor, other: Tensor, names: tuple[str, str]) -> None:
    if other.backend is not first.backend:
        raise BackendMismatchError(
            f"{op}: {names[0]} and {names[1]} live on two backends, {first.backend.name!r} and {other.backend.name!r}"
        )


def _check_scores(op: str, boxes: Tensor, scores) -> None:
    if not isinstance(scores, Tensor):
        raise TypeError(f"{op}: scores must be a Tensor, got {type(scores).__name__}")
    if scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"{op}: scores must have shape ({boxes.shape[0]},) like boxes' first dimension, got {scores.shape}"
        )
    _same_backend(op, boxes, scores, ("boxes", "scores"))
    if scores.dtype != boxes.dtype:
        raise TypeError(f"{op}: scores must have the dtype of boxes ({boxes.dtype}), got {scores.dtype}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms`` (CPU).

    Parameters
    ----------
    boxes:
        ``(N, 4)`` floating ``(x1, y1, x2, y2)`` boxes.
    scores:
        ``(N,)`` scores, same dtype.
    iou_threshold:
        Boxes overlapping a kept, higher-scoring box with IoU ``> iou_threshold`` are discarded.

    Returns
    -------
    Tensor
        int64 indices of the kept boxes, by decreasing score; equal scores keep index order.
    """
    op = "nms"
    check_boxes_tensor(op, boxes, "boxes", 4)
    _check_scores(op, boxes, scores)
    threshold = _check_real(op, iou_threshold, "iou_threshold")
    backend = boxes.backend
    return Tensor(backend.kernel("nms")(backend.xp, boxes.data, scores.data, threshold), backend)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category ``idxs`` independently, as ``torchvision.ops.batched_nms``.

    Uses torchvision's coordinate trick: boxes of category ``i`` are shifted by ``i * (max coordinate + 1)``
    so that boxes of different categories never overlap, then one :func:`nms` runs on all of them.

    Returns
    -------
    Tensor
        int64 indices of the kept boxes, by decreasing score.
    """
    op = "batched_nms"
    check_boxes_tensor(op, boxes, "boxes", 4)
    _check_scores(op, boxes, scores)
    if not isinstance(idxs, Tensor):
        raise TypeError(f"{op}: idxs must be a Tensor, got {type(idxs).__name__}")
    if idxs.ndim != 1 or idxs.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"{op}: idxs must have shape ({boxes.shape[0]},) like boxes' first dimension, got {idxs.shape}"
        )
    if np.dtype(idxs.dtype).kind not in "iu":
        raise TypeError(f"{op}: idxs must be an integer tensor of category indices, got dtype {idxs.dtype}")
    _same_backend(op, boxes, idxs, ("boxes", "idxs"))
    threshold = _check_real(op, iou_threshold, "iou_threshold")
    backend = boxes.backend
    xp = backend.xp
    if boxes.shape[0] == 0:
        return Tensor(xp.zeros((0,), dtype=xp.int64), backend)
    max_coordinate = xp.max(boxes.data)
    offsets = xp.astype(idxs.data, boxes.dtype) * (max_coordinate + xp.asarray(1, dtype=boxes.dtype))
    shifted = boxes.data + offsets[:, None]
    return Tensor(backend.kernel("nms")(xp, shifted, scores.data, threshold), backend)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """int64 indices of the boxes whose width and height are both ``>= min_size``."""
    op = "remove_small_boxes"
    check_boxes_tensor(op, boxes, "boxes", 4, floating=False)
    _check_real(op, min_size, "min_size")
    xp = boxes.backend.xp
    # torch compares in the boxes' dtype (the default float32 for integer boxes and a float bound).
    dtype = boxes.dtype if np.dtype(boxes.dtype).kind == "f" else np.float32
    b = xp.astype(boxes.data, dtype)
    bound = xp.asarray(min_size, dtype=dtype)
    keep = ((b[:, 2] - b[:, 0]) >= bound) & ((b[:, 3] - b[:, 1]) >= bound)
    return Tensor(xp.astype(xp.nonzero(keep)[0], xp.int64), boxes.backend)


def _check_last_dim(op: str, boxes) -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{op}: boxes must be a Tensor, got {type(boxes).__name__}")
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{op}: boxes must have shape (..., 4), got {boxes.shape}")


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip ``(..., 4)`` xyxy boxes to an image of ``size = (height, width)``: x in ``[0, W]``, y in ``[0, H]``."""
    op = "clip_boxes_to_image"
    _check_last_dim(op, boxes)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{op}: size must be (height, width), got {size!r}")
    height, width = (_check_real(op, v, "size") for v in size)
    height, width = (int(v) if float(v).is_integer() else v for v in (height, width))
    boxes_x = F.clamp(boxes[..., 0::2], min=0, max=width)
    boxes_y = F.clamp(boxes[..., 1::2], min=0, max=height)
    return F.reshape(F.stack((boxes_x, boxes_y), dim=boxes.ndim), boxes.shape)


def _unbind(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return tuple(boxes[..., j] for j in range(4))  # type: ignore[return-value]


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``(..., 4)`` boxes between ``'xyxy'``, ``'xywh'`` (corner, size) and ``'cxcywh'`` (centre, size).

    Always returns a new tensor (a copy when the formats are equal), as ``torchvision.ops.box_convert``.
    """
    op = "box_convert"
    _check_last_dim(op, boxes)
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in _FORMATS:
            raise ValueError(f"{op}: {name} must be one of {', '.join(map(repr, _FORMATS))}, got {fmt!r}")
    a, b, c, d = _unbind(boxes)
    # Through xyxy, with torchvision's formulas (cxcywh -> xyxy uses cx - 0.5 * w; xyxy -> cxcywh (x1 + x2) / 2).
    if in_fmt == out_fmt:
        return F.stack((a, b, c, d), dim=-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xywh":
        a, b, c, d = a, b, c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
    return F.stack((a, b, c, d), dim=-1)


def _upcast(boxes: Tensor) -> Tensor:
    # torchvision guards products against overflow: float16 -> float32, small integer types -> int32.
    kind, dtype = np.dtype(boxes.dtype).kind, np.dtype(boxes.dtype)
    if kind == "f":
        return boxes if dtype in (np.float32, np.float64) else F.cast(boxes, np.float32)
    return boxes if dtype in (np.int32, np.int64) else F.cast(boxes, np.int32)


def box_area(boxes: Tensor) -> Tensor:
    """``(N,)`` areas ``(x2 - x1) * (y2 - y1)`` of ``(N, 4)`` xyxy boxes (negative for inverted boxes)."""
    check_boxes_tensor("box_area", boxes, "boxes", 4, floating=False)
    boxes = _upcast(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """``(N, M)`` intersection over union of every pair of ``(N, 4)`` and ``(M, 4)`` xyxy boxes.

    Two zero-area boxes give ``0 / 0 = nan``, as in torchvision.
    """
    op = "box_iou"
    check_boxes_tensor(op, boxes1, "boxes1", 4, floating=False)
    check_boxes_tensor(op, boxes2, "boxes2", 4, floating=False)
    _same_backend(op, boxes1, boxes2, ("boxes1", "boxes2"))
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = F.maximum(boxes1[:, None, :2], boxes2[:, :2])
    rb = F.minimum(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = F.clamp(_upcast(rb - lt), min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    union = area1[:, None] + area2 - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def masks_to_boxes(masks: Tensor) -> Tensor:
    """``(N, 4)`` float32 xyxy boxes around the non-zero pixels of ``(N, H, W)`` masks (inclusive corners).

    A mask with no non-zero pixel has no box and raises ``ValueError`` (torchvision fails on it too).
    """
    op = "masks_to_boxes"
    if not isinstance(masks, Tensor):
        raise TypeError(f"{op}: masks must be a Tensor, got {type(masks).__name__}")
    if masks.ndim != 3:
        raise ValueError(f"{op}: masks must be 3-D (N, H, W), got shape {masks.shape}")
    xp = masks.backend.xp
    n, h, w = masks.shape
    if n == 0:
        return Tensor(xp.zeros((0, 4), dtype=xp.float32), masks.backend)
    filled = masks.data != 0
    rows = xp.any(filled, axis=2)
    cols = xp.any(filled, axis=1)
    present = xp.any(rows, axis=1) if h and w else xp.zeros((n,), dtype=xp.bool)
    if not bool(xp.all(present)):
        empty = int(xp.argmin(present))
        raise ValueError(f"{op}: masks[{empty}] has no non-zero pixel, so it has no bounding box")
    y1 = xp.argmax(rows, axis=1)
    y2 = h - 1 - xp.argmax(rows[:, ::-1], axis=1)
    x1 = xp.argmax(cols, axis=1)
    x2 = w - 1 - xp.argmax(cols[:, ::-1], axis=1)
    return Tensor(xp.astype(xp.stack([x1, y1, x2, y2], axis=1), xp.float32), masks.backend)
