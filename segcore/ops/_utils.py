"""Argument checks shared by the RoI ops, and torchvision's list-of-boxes -> ``(K, 5)`` rois conversion."""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np

from ..autograd import Tensor
from ..errors import BackendMismatchError
from ..functional._utils import ntuple

__all__ = [
    "check_input_map",
    "check_boxes_tensor",
    "convert_boxes_to_roi_format",
    "check_rois",
    "output_pair",
    "positive_scale",
    "check_bool",
    "check_int",
]


def check_input_map(op: str, input) -> None:
    """``input`` must be a floating ``(N, C, H, W)`` Tensor with non-empty spatial dimensions."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {input.shape}")
    if input.shape[2] == 0 or input.shape[3] == 0:
        raise ValueError(f"{op}: input must have non-zero height and width, got shape {input.shape}")
    if np.dtype(input.dtype).kind != "f":
        raise TypeError(f"{op}: input must be a floating-point tensor, got dtype {input.dtype}")


def check_boxes_tensor(op: str, boxes, name: str, columns: int, *, floating: bool = True) -> None:
    """``boxes`` must be a 2-D ``(L, columns)`` Tensor (of floating dtype unless ``floating=False``)."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[1] != columns:
        raise ValueError(f"{op}: {name} must have shape (L, {columns}), got {boxes.shape}")
    if floating and np.dtype(boxes.dtype).kind != "f":
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {boxes.dtype}")


def convert_boxes_to_roi_format(boxes: Sequence[Tensor], op: str = "convert_boxes_to_roi_format") -> Tensor:
    """torchvision's conversion: ``[(L_i, 4)]`` per image -> ``(sum L_i, 5)`` with the image index first.

    The result is a new tensor off the autograd graph (RoI ops give boxes no gradient, as torchvision).
    """
    if len(boxes) == 0:
        raise ValueError(f"{op}: boxes must be a non-empty list of (L, 4) Tensors, one per image, got []")
    for i, b in enumerate(boxes):
        check_boxes_tensor(op, b, f"boxes[{i}]", 4)
    first = boxes[0]
    for i, b in enumerate(boxes[1:], start=1):
        if b.backend is not first.backend:
            raise BackendMismatchError(
                f"{op}: boxes[0] and boxes[{i}] live on two backends, {first.backend.name!r} and {b.backend.name!r}"
            )
        if b.dtype != first.dtype:
            raise TypeError(
                f"{op}: boxes must share one dtype, got {first.dtype} (boxes[0]) and {b.dtype} (boxes[{i}])"
            )
    xp = first.backend.xp
    parts = [
        xp.concat([xp.full((b.shape[0], 1), i, dtype=b.dtype), b.data], axis=1) for i, b in enumerate(boxes)
    ]
    return Tensor(xp.concat(parts, axis=0), first.backend)


def check_rois(op: str, input: Tensor, boxes) -> Tensor:
    """Validate ``boxes`` (``(K, 5)`` Tensor or list of ``(L, 4)`` Tensors) against ``input``; return rois.

    Checks the backend and dtype against ``input``, that coordinates are finite, and that every batch index
    is an integer in ``[0, N)``.
    """
    if isinstance(boxes, (list, tuple)):
        rois = convert_boxes_to_roi_format(boxes, op)
        if len(boxes) > input.shape[0]:
            raise ValueError(
                f"{op}: boxes is a list of {len(boxes)} tensors (one per image) but input has a batch of "
                f"{input.shape[0]}"
            )
    elif isinstance(boxes, Tensor):
        check_boxes_tensor(op, boxes, "boxes", 5)
        rois = boxes
    else:
        raise TypeError(
            f"{op}: boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}"
        )
    if rois.backend is not input.backend:
        raise BackendMismatchError(
            f"{op}: input and boxes live on two backends, {input.backend.name!r} and {rois.backend.name!r}"
        )
    if rois.dtype != input.dtype:
        raise TypeError(f"{op}: boxes must have the dtype of input ({input.dtype}), got {rois.dtype}")
    host = rois.numpy()
    if not np.all(np.isfinite(host)):
        bad = host[~np.all(np.isfinite(host), axis=1)][0]
        raise ValueError(f"{op}: boxes must be finite, got the row {bad.tolist()}")
    index = host[:, 0]
    wrong = (index != np.floor(index)) | (index < 0) | (index >= input.shape[0])
    if np.any(wrong):
        raise ValueError(
            f"{op}: batch index {float(index[wrong][0])} (boxes[:, 0]) must be an integer in [0, {input.shape[0] - 1}] "
            f"for an input batch of {input.shape[0]}"
        )
    return rois


def output_pair(op: str, output_size) -> tuple[int, int]:
    """torchvision's ``_pair``: an int or an ``(h, w)`` pair of positive ints."""
    try:
        return ntuple(output_size, 2, "output_size", minimum=1)
    except ValueError as exc:
        raise ValueError(f"{op}: {exc}") from None


def positive_scale(op: str, value, name: str = "spatial_scale") -> float:
    if not isinstance(value, (numbers.Real, np.number)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{op}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_bool(op: str, value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
    return bool(value)


def check_int(op: str, value, name: str) -> int:
    if not isinstance(value, (numbers.Integral, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    return int(value)
