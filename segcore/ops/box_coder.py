"""Box regression targets (R-CNN parameterisation), as torchvision's ``det_utils.BoxCoder``.

For a proposal of centre ``(px, py)`` and size ``(pw, ph)`` and a target box ``(gx, gy, gw, gh)`` (no "+1"
in widths, as current torchvision), the code is

    dx = wx * (gx - px) / pw,  dy = wy * (gy - py) / ph,  dw = ww * log(gw / pw),  dh = wh * log(gh / ph)

and decoding inverts it, clamping ``dw / ww`` and ``dh / wh`` at ``bbox_xform_clip`` (default
``log(1000 / 16)``) before the exponential. Encoding and decoding are compositions of differentiable ops.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np

from .. import functional as F
from ..autograd import Tensor

__all__ = ["BoxCoder", "encode_boxes"]


def _check_boxes(op: str, boxes, name: str) -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{op}: {name} must have shape (N, 4), got {boxes.shape}")
    if np.dtype(boxes.dtype).kind != "f":
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {boxes.dtype}")


def _check_list(op: str, boxes, name: str) -> list[Tensor]:
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"{op}: {name} must be a list of (N_i, 4) Tensors, one per image, got {type(boxes).__name__}")
    if not boxes:
        raise ValueError(f"{op}: {name} must hold one (N_i, 4) Tensor per image, got an empty list")
    for i, b in enumerate(boxes):
        _check_boxes(op, b, f"{name}[{i}]")
    return list(boxes)


def encode_boxes(reference_boxes: Tensor, proposals: Tensor, weights: Sequence[float]) -> Tensor:
    """``(N, 4)`` codes ``(dx, dy, dw, dh)`` of ``reference_boxes`` relative to ``proposals`` (both xyxy)."""
    op = "encode_boxes"
    _check_boxes(op, reference_boxes, "reference_boxes")
    _check_boxes(op, proposals, "proposals")
    if proposals.shape[0] != reference_boxes.shape[0]:
        raise ValueError(
            f"{op}: reference_boxes and proposals must have the same number of boxes, got "
            f"{reference_boxes.shape[0]} and {proposals.shape[0]}"
        )
    dtype = reference_boxes.dtype
    # torchvision turns the weights into a tensor of the reference boxes' dtype.
    wx, wy, ww, wh = (Tensor(reference_boxes.backend.asarray(w, dtype=dtype), reference_boxes.backend) for w in weights)
    ex_widths = proposals[:, 2:3] - proposals[:, 0:1]
    ex_heights = proposals[:, 3:4] - proposals[:, 1:2]
    ex_ctr_x = proposals[:, 0:1] + 0.5 * ex_widths
    ex_ctr_y = proposals[:, 1:2] + 0.5 * ex_heights
    gt_widths = reference_boxes[:, 2:3] - reference_boxes[:, 0:1]
    gt_heights = reference_boxes[:, 3:4] - reference_boxes[:, 1:2]
    gt_ctr_x = reference_boxes[:, 0:1] + 0.5 * gt_widths
    gt_ctr_y = reference_boxes[:, 1:2] + 0.5 * gt_heights
    targets_dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
    targets_dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
    targets_dw = ww * F.log(gt_widths / ex_widths)
    targets_dh = wh * F.log(gt_heights / ex_heights)
    return F.cat((targets_dx, targets_dy, targets_dw, targets_dh), dim=1)


class BoxCoder:
    """Encodes boxes as regression targets relative to proposals and decodes predictions back to boxes.

    Parameters
    ----------
    weights:
        ``(wx, wy, ww, wh)`` multipliers of the four codes (Faster R-CNN's box head uses ``(10, 10, 5, 5)``,
        its RPN ``(1, 1, 1, 1)``).
    bbox_xform_clip:
        Upper bound of ``dw`` and ``dh`` (after dividing by the weights) when decoding.
    """

    def __init__(self, weights: Sequence[float], bbox_xform_clip: float = math.log(1000.0 / 16)) -> None:
        if (
            not isinstance(weights, (tuple, list))
            or len(weights) != 4
            or not all(isinstance(w, (numbers.Real, np.number)) and not isinstance(w, bool) for w in weights)
        ):
            raise ValueError(f"BoxCoder: weights must be four numbers (wx, wy, ww, wh), got {weights!r}")
        if any(float(w) == 0 for w in weights):
            raise ValueError(f"BoxCoder: weights must be non-zero (decoding divides by them), got {weights!r}")
        if not isinstance(bbox_xform_clip, (numbers.Real, np.number)) or isinstance(bbox_xform_clip, bool):
            raise TypeError(f"BoxCoder: bbox_xform_clip must be a real number, got {bbox_xform_clip!r}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip})"

    def encode(self, reference_boxes: Sequence[Tensor], proposals: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Per-image codes: lists of ``(N_i, 4)`` targets and proposals -> tuple of ``(N_i, 4)`` codes."""
        op = "BoxCoder.encode"
        reference_boxes = _check_list(op, reference_boxes, "reference_boxes")
        proposals = _check_list(op, proposals, "proposals")
        counts = [b.shape[0] for b in reference_boxes]
        if counts != [p.shape[0] for p in proposals]:
            raise ValueError(
                f"{op}: reference_boxes and proposals must hold as many boxes per image, got {counts} and "
                f"{[p.shape[0] for p in proposals]}"
            )
        targets = self.encode_single(F.cat(reference_boxes, dim=0), F.cat(proposals, dim=0))
        return F.split(targets, counts, dim=0)

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """``(N, 4)`` codes of ``reference_boxes`` relative to ``proposals``."""
        return encode_boxes(reference_boxes, proposals, self.weights)

    def decode(self, rel_codes: Tensor, boxes: Sequence[Tensor]) -> Tensor:
        """Decode ``rel_codes`` ``(sum N_i, 4 * K)`` against per-image reference boxes -> ``(sum N_i, K, 4)``."""
        op = "BoxCoder.decode"
        boxes = _check_list(op, boxes, "boxes")
        if not isinstance(rel_codes, Tensor):
            raise TypeError(f"{op}: rel_codes must be a Tensor, got {type(rel_codes).__name__}")
        box_sum = sum(b.shape[0] for b in boxes)
        concat_boxes = F.cat(boxes, dim=0)
        if box_sum > 0:
            if rel_codes.numel() % (4 * box_sum):
                raise ValueError(
                    f"{op}: rel_codes of shape {rel_codes.shape} cannot be split into {box_sum} rows of 4 * K codes"
                )
            rel_codes = F.reshape(rel_codes, (box_sum, -1))
        pred_boxes = self.decode_single(rel_codes, concat_boxes)
        if box_sum > 0:
            pred_boxes = F.reshape(pred_boxes, (box_sum, -1, 4))
        return pred_boxes

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """Boxes ``(N, 4 * K)`` xyxy from codes ``(N, 4 * K)`` and reference boxes ``(N, 4)``."""
        op = "BoxCoder.decode_single"
        _check_boxes(op, boxes, "boxes")
        if not isinstance(rel_codes, Tensor):
            raise TypeError(f"{op}: rel_codes must be a Tensor, got {type(rel_codes).__name__}")
        if rel_codes.ndim != 2 or rel_codes.shape[0] != boxes.shape[0] or rel_codes.shape[1] % 4:
            raise ValueError(
                f"{op}: rel_codes must have shape ({boxes.shape[0]}, 4 * K) for {boxes.shape[0]} boxes, got "
                f"{rel_codes.shape}"
            )
        if np.dtype(rel_codes.dtype).kind != "f":
            raise TypeError(f"{op}: rel_codes must be a floating-point tensor, got dtype {rel_codes.dtype}")
        boxes = F.cast(boxes, rel_codes.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = rel_codes[:, 0::4] / wx
        dy = rel_codes[:, 1::4] / wy
        dw = F.clamp(rel_codes[:, 2::4] / ww, max=self.bbox_xform_clip)
        dh = F.clamp(rel_codes[:, 3::4] / wh, max=self.bbox_xform_clip)
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = F.exp(dw) * widths[:, None]
        pred_h = F.exp(dh) * heights[:, None]
        # Distance from the centre to the corners.
        c_to_c_h = 0.5 * pred_h
        c_to_c_w = 0.5 * pred_w
        pred = F.stack(
            (pred_ctr_x - c_to_c_w, pred_ctr_y - c_to_c_h, pred_ctr_x + c_to_c_w, pred_ctr_y + c_to_c_h), dim=2
        )
        return F.flatten(pred, 1)
