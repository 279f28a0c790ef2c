"""Instance-count and overlap metrics of the CVPPP leaf segmentation challenge (Scharr et al. 2016), as
reported by the recurrent (Romera-Paredes & Torr 2016, Ren & Zemel 2017) and embedding-based (De Brabandere
et al. 2017) instance segmentation papers.

Inputs are instance label maps: ``0`` is background, every other value one instance (values need not be
consecutive). Instances are counted as distinct non-zero labels.
"""

from __future__ import annotations

import numpy as np

from ._arrays import as_label_array

__all__ = ["best_dice", "difference_in_count", "symmetric_best_dice"]


def _label_maps(a: object, b: object, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    a = as_label_array(a, name_a)
    b = as_label_array(b, name_b)
    if a.ndim != 2:
        raise ValueError(f"{name_a} must be a 2-D (H, W) label map, got shape {a.shape}")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")
    return a.astype(np.int64, copy=False), b.astype(np.int64, copy=False)


def _dice_table(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(#instances of a, #instances of b)`` Dice between every pair, from one joint histogram."""
    a_ids, a_idx = np.unique(a, return_inverse=True)
    b_ids, b_idx = np.unique(b, return_inverse=True)
    joint = np.bincount(a_idx.ravel() * len(b_ids) + b_idx.ravel(), minlength=len(a_ids) * len(b_ids))
    joint = joint.reshape(len(a_ids), len(b_ids)).astype(np.float64)
    a_size, b_size = joint.sum(axis=1), joint.sum(axis=0)
    dice = 2.0 * joint / (a_size[:, None] + b_size[None, :])
    return dice[a_ids != 0][:, b_ids != 0]


def _best_dice(dice: np.ndarray) -> float:
    if dice.shape[0] == 0:
        return 1.0 if dice.shape[1] == 0 else 0.0
    if dice.shape[1] == 0:
        return 0.0
    return float(dice.max(axis=1).mean())


def best_dice(a: object, b: object) -> float:
    """BD(a, b): mean over the instances of ``a`` of their best Dice with any instance of ``b``.

    Parameters
    ----------
    a, b : array-like or Tensor
        ``(H, W)`` integer instance label maps, ``0`` = background.

    Returns
    -------
    float
        In ``[0, 1]``. If ``a`` has no instance the mean is over nothing; it is then defined as 1.0 when ``b``
        has none either and 0.0 otherwise (so that :func:`symmetric_best_dice` is 0 whenever exactly one
        side is empty). If only ``b`` is empty every best Dice is 0, so the result is 0.0.
    """
    a, b = _label_maps(a, b, "a", "b")
    return _best_dice(_dice_table(a, b))


def symmetric_best_dice(pred_instances: object, gt_instances: object) -> float:
    """SBD = min(BD(pred, gt), BD(gt, pred)) of two instance label maps (``0`` = background).

    Both maps without any instance give 1.0 (nothing to find, nothing found); exactly one map without
    instances gives 0.0. See :func:`best_dice`.
    """
    pred, gt = _label_maps(pred_instances, gt_instances, "pred_instances", "gt_instances")
    dice = _dice_table(pred, gt)
    return min(_best_dice(dice), _best_dice(dice.T))


def difference_in_count(pred: object, gt: object, signed: bool = False) -> int:
    """Difference in count: ``#pred instances - #gt instances`` (DiC), by default its absolute value |DiC|.

    Parameters
    ----------
    pred, gt : array-like or Tensor
        ``(H, W)`` integer instance label maps, ``0`` = background.
    signed : bool
        Return DiC (positive when over-counting, the CVPPP sign convention) instead of |DiC|.
    """
    pred, gt = _label_maps(pred, gt, "pred", "gt")
    dic = int(np.count_nonzero(np.unique(pred))) - int(np.count_nonzero(np.unique(gt)))
    return dic if signed else abs(dic)
