"""Detection ops with ``torchvision.ops`` names and semantics: RoIAlign, RoIPool, NMS, box utilities.

``import segcore.ops as ops`` then ``ops.roi_align(features, boxes, 7, 1 / 16, 2)``, ``ops.nms(boxes, scores,
0.5)``, ``ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)``, ... The heavy lifting is done by the ``roi_*``
and ``nms`` kernels of the active backend (``segcore/kernels/roi.py``, ``segcore/kernels/nms.py``).
"""

from .box_coder import BoxCoder, encode_boxes
from .boxes import (
    batched_nms,
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    masks_to_boxes,
    nms,
    remove_small_boxes,
)
from ._utils import convert_boxes_to_roi_format
from .poolers import LevelMapper, MultiScaleRoIAlign, infer_scale
from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool

__all__ = [
    "BoxCoder",
    "LevelMapper",
    "MultiScaleRoIAlign",
    "RoIAlign",
    "RoIPool",
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "convert_boxes_to_roi_format",
    "encode_boxes",
    "infer_scale",
    "masks_to_boxes",
    "nms",
    "remove_small_boxes",
    "roi_align",
    "roi_pool",
]
