"""Semantic segmentation metrics, all read off one confusion matrix.

Policy for classes that are missing (documented on :func:`semantic`, tested in
``tests/metrics/test_semantic_metrics.py``): a class absent from both prediction and ground truth has NaN IoU
and Dice and is left out of the means; a class absent from the ground truth but predicted has IoU 0 and
Dice 0 (pure false positives); class accuracy is NaN for a class absent from the ground truth.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from ._arrays import as_label_array

__all__ = ["SemanticMetric", "SemanticSegmentationResult", "confusion_matrix", "semantic"]


@dataclass(frozen=True)
class SemanticSegmentationResult:
    """Semantic segmentation scores of one evaluation.

    Attributes
    ----------
    confusion_matrix : np.ndarray
        ``(K, K)`` int64; row = ground-truth class, column = predicted class.
    iou, class_accuracy, dice : np.ndarray
        ``(K,)`` float64 per-class IoU, accuracy (recall) and Dice, NaN where undefined.
    miou, mean_class_accuracy, mean_dice : float
        NaN-excluding means of the per-class values (NaN if every class is NaN).
    pixel_accuracy, fwiou : float
        Fraction of correctly labelled pixels; IoU averaged with ground-truth class frequencies as weights.
    """

    confusion_matrix: np.ndarray
    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    class_accuracy: np.ndarray
    mean_class_accuracy: float
    fwiou: float
    dice: np.ndarray
    mean_dice: float

    @classmethod
    def from_confusion_matrix(cls, matrix: np.ndarray) -> SemanticSegmentationResult:
        """Compute every score from a ``(K, K)`` confusion matrix (rows ground truth, columns prediction)."""
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
            raise ValueError(f"matrix must be a non-empty square (K, K) array, got shape {matrix.shape}")
        if matrix.dtype.kind not in "iu" or (matrix < 0).any():
            raise ValueError(f"matrix must hold non-negative integer counts, got dtype {matrix.dtype}")
        matrix = matrix.astype(np.int64)
        true_positive = np.diag(matrix).astype(np.float64)
        gt_count = matrix.sum(axis=1).astype(np.float64)
        pred_count = matrix.sum(axis=0).astype(np.float64)
        total = gt_count.sum()
        union = gt_count + pred_count - true_positive
        # 0/0 (class absent from both sides, or from the ground truth for accuracy) is the NaN the policy
        # asks for, so let NumPy produce it without warning.
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = true_positive / union
            dice = 2.0 * true_positive / (gt_count + pred_count)
            class_accuracy = true_positive / gt_count
            pixel_accuracy = float(true_positive.sum() / total)
            present = gt_count > 0
            fwiou = float((gt_count[present] / total * iou[present]).sum()) if total > 0 else float("nan")
        return cls(
            confusion_matrix=matrix,
            iou=iou,
            miou=_nanmean(iou),
            pixel_accuracy=pixel_accuracy,
            class_accuracy=class_accuracy,
            mean_class_accuracy=_nanmean(class_accuracy),
            fwiou=fwiou,
            dice=dice,
            mean_dice=_nanmean(dice),
        )


def _nanmean(values: np.ndarray) -> float:
    # An all-NaN slice is a legitimate outcome (nothing valid was evaluated): return NaN without the warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return int(num_classes)


def _check_ignore_index(ignore_index: object) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, Integral):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    return int(ignore_index)


def confusion_matrix(pred: object, target: object, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """``(K, K)`` int64 confusion matrix (rows ground truth, columns prediction) from one ``np.bincount``.

    Parameters
    ----------
    pred, target : array-like or Tensor
        Integer label maps of the same shape (any shape: ``(H, W)``, ``(N, H, W)``, ...). Pixels whose
        target equals ``ignore_index`` are left out.
    num_classes : int
        ``K``; every prediction and every non-ignored target must lie in ``[0, K)``.
    ignore_index : int
        Target value marking pixels that are not evaluated.
    """
    num_classes = _check_num_classes(num_classes)
    ignore_index = _check_ignore_index(ignore_index)
    pred = as_label_array(pred, "pred")
    target = as_label_array(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got pred {pred.shape} and target {target.shape}")
    pred = pred.astype(np.int64, copy=False).ravel()
    target = target.astype(np.int64, copy=False).ravel()
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        bad = pred[(pred < 0) | (pred >= num_classes)][0]
        raise ValueError(f"pred holds label {bad}, expected labels in [0, {num_classes})")
    valid = target != ignore_index
    target = target[valid]
    if target.size and (target.min() < 0 or target.max() >= num_classes):
        bad = target[(target < 0) | (target >= num_classes)][0]
        raise ValueError(
            f"target holds label {bad}, expected labels in [0, {num_classes}) or ignore_index={ignore_index}"
        )
    counts = np.bincount(num_classes * target + pred[valid], minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def semantic(
    pred: object, target: object, num_classes: int, ignore_index: int = 255
) -> SemanticSegmentationResult:
    """Per-class IoU, mIoU, pixel accuracy, mean class accuracy, frequency-weighted IoU, Dice, mean Dice.

    Parameters
    ----------
    pred, target : array-like or Tensor
        Integer label maps of identical shape (a single ``(H, W)`` map or a batch).
    num_classes : int
        Number of classes ``K``.
    ignore_index : int
        Target value of pixels left out of every score (default 255, the VOC boundary label).

    Returns
    -------
    SemanticSegmentationResult
        Scores and the confusion matrix. Missing classes: absent from both prediction and ground truth ->
        IoU and Dice NaN, left out of ``miou`` / ``mean_dice``; absent from the ground truth but predicted ->
        IoU 0 and Dice 0; absent from the ground truth -> class accuracy NaN, left out of
        ``mean_class_accuracy``. With no valid pixel at all every score is NaN.
    """
    return SemanticSegmentationResult.from_confusion_matrix(confusion_matrix(pred, target, num_classes, ignore_index))


class SemanticMetric:
    """Accumulates a confusion matrix over batches; ``compute()`` equals :func:`semantic` on all data at once.

    Parameters
    ----------
    num_classes : int
        Number of classes ``K``.
    ignore_index : int
        Target value of pixels that are not evaluated.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_index = _check_ignore_index(ignore_index)
        self.confusion_matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: object, target: object) -> None:
        """Add one batch of predictions and targets (same shape, integer labels)."""
        self.confusion_matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self) -> SemanticSegmentationResult:
        """Scores over everything seen since construction or the last :meth:`reset`."""
        return SemanticSegmentationResult.from_confusion_matrix(self.confusion_matrix.copy())

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.confusion_matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"SemanticMetric(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.confusion_matrix.sum())})"
        )
