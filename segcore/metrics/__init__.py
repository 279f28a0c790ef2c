"""Evaluation metrics on NumPy arrays (segcore Tensors are accepted and copied to host).

* semantic segmentation: :func:`semantic`, :class:`SemanticMetric` (one confusion matrix);
* COCO AP/AR for boxes and masks: :func:`coco_evaluate`, :func:`predictions_to_coco`;
* COCO run-length encoding of masks: :mod:`segcore.metrics.mask_rle`;
* instance counting / overlap (CVPPP): :func:`symmetric_best_dice`, :func:`best_dice`,
  :func:`difference_in_count`.
"""

from . import mask_rle
from .coco import coco_evaluate, predictions_to_coco
from .instance import best_dice, difference_in_count, symmetric_best_dice
from .semantic_seg import SemanticMetric, SemanticSegmentationResult, confusion_matrix, semantic

__all__ = [
    "SemanticMetric",
    "SemanticSegmentationResult",
    "best_dice",
    "coco_evaluate",
    "confusion_matrix",
    "difference_in_count",
    "mask_rle",
    "predictions_to_coco",
    "semantic",
    "symmetric_best_dice",
]
