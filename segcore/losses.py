"""Losses for segmentation: the functional losses, region and set losses, composite losses, loss modules.

* Per-position losses (re-exported from :mod:`segcore.functional`): ``cross_entropy``, ``nll_loss``,
  ``binary_cross_entropy[_with_logits]``, ``multi_margin_loss``, ``pixel_hinge_loss``, ``sigmoid_focal_loss``,
  ``softmax_focal_loss``, ``l1_loss``, ``mse_loss``, ``smooth_l1_loss``.
* Region losses with segmentation_models.pytorch semantics: :func:`dice_loss`, :func:`jaccard_loss`,
  :func:`tversky_loss`; and :func:`lovasz_softmax` (Berman et al. 2018).
* Composite: :func:`detection_loss` (``L_cls + lambda * L_box``, Fast R-CNN) and :func:`discriminative_loss`
  (instance embeddings, De Brabandere et al. 2017), each returning its terms separately.
* ``torch.nn``-style modules (``CrossEntropyLoss``, ``DiceLoss``, ...) that hold the hyper-parameters and are
  called as ``loss(input, target)``, and :data:`LOSSES`, the name -> factory table registered through the
  ``segcore_register_losses`` hook (``segcore.registry.build_loss("dice", mode="multiclass")``).

Losses that are defined as 0 on an empty set (every pixel ignored, no instance in the batch) return a 0 that is
still part of the graph, so ``backward()`` runs and gives zero gradients.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from .autograd import Tensor
from .functional import activation as _act
from .functional import arithmetic as _ar
from .functional import reduction as _red
from .functional import shape as _shape
from .functional.loss import (
    VectorNorm,
    _check_class_target,
    _check_real,
    _check_reduction,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    connected_zero,
    cross_entropy,
    l1_loss,
    mse_loss,
    multi_margin_loss,
    nll_loss,
    pixel_hinge_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
    softmax_focal_loss,
)
from .nn import Module

__all__ = [
    # functional losses
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "multi_margin_loss",
    "pixel_hinge_loss",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "l1_loss",
    "mse_loss",
    "smooth_l1_loss",
    "dice_loss",
    "jaccard_loss",
    "tversky_loss",
    "lovasz_softmax",
    "detection_loss",
    "DetectionLoss",
    "discriminative_loss",
    "DiscriminativeLossTerms",
    # modules
    "CrossEntropyLoss",
    "NLLLoss",
    "BCEWithLogitsLoss",
    "BCELoss",
    "MultiMarginLoss",
    "PixelHingeLoss",
    "SigmoidFocalLoss",
    "FocalLoss",
    "DiceLoss",
    "JaccardLoss",
    "TverskyLoss",
    "LovaszSoftmaxLoss",
    "L1Loss",
    "MSELoss",
    "SmoothL1Loss",
    "DiscriminativeLoss",
    "LOSSES",
]

BINARY_MODE, MULTICLASS_MODE, MULTILABEL_MODE = "binary", "multiclass", "multilabel"
_MODES = (BINARY_MODE, MULTICLASS_MODE, MULTILABEL_MODE)


# -- argument checks ------------------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_floating_tensor(op: str, name: str, x, min_ndim: int, layout: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    if np.dtype(x.dtype).kind != "f":
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{op}: {name} must be {layout}, got shape {x.shape}")


def _check_bool(op: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
    return bool(value)


def _check_optional_index(op: str, name: str, value) -> int | None:
    if value is not None and not _is_int(value):
        raise TypeError(f"{op}: {name} must be an int or None, got {value!r}")
    return None if value is None else int(value)


def _check_classes_list(op: str, classes, num_classes: int | None = None) -> tuple[int, ...]:
    """A non-empty sequence of class indices (in ``[0, num_classes)`` once that is known)."""
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or isinstance(classes, Tensor):
        raise TypeError(f"{op}: classes must be a sequence of class indices, got {classes!r}")
    if not classes or not all(_is_int(c) for c in classes):
        raise ValueError(f"{op}: classes must be a non-empty sequence of ints, got {classes!r}")
    if num_classes is not None:
        outside = [int(c) for c in classes if not 0 <= c < num_classes]
        if outside:
            raise ValueError(
                f"{op}: classes {outside} are outside [0, {num_classes}) for input with {num_classes} classes"
            )
    return tuple(int(c) for c in classes)


def _check_region_options(op, mode, classes, log_loss, from_logits, smooth, ignore_index, eps) -> dict[str, Any]:
    """The hyper-parameters shared by the dice, Jaccard and Tversky losses, checked and normalised."""
    if mode not in _MODES:
        raise ValueError(f"{op}: mode must be one of {_MODES}, got {mode!r}")
    if classes is not None:
        if mode == BINARY_MODE:
            raise ValueError(
                f"{op}: classes cannot be selected in mode='binary' (there is one channel), got {classes!r}"
            )
        classes = _check_classes_list(op, classes)
    return dict(
        mode=mode,
        classes=classes,
        log_loss=_check_bool(op, "log_loss", log_loss),
        from_logits=_check_bool(op, "from_logits", from_logits),
        smooth=_check_real(op, "smooth", smooth, minimum=0.0),
        ignore_index=_check_optional_index(op, "ignore_index", ignore_index),
        eps=_check_real(op, "eps", eps, minimum=0.0),
    )


def _check_tversky_options(op, alpha, beta, gamma) -> dict[str, float]:
    gamma = _check_real(op, "gamma", gamma, minimum=0.0)
    if gamma == 0:
        raise ValueError(f"{op}: gamma must be > 0 (the loss is mean ** gamma), got {gamma!r}")
    return dict(
        alpha=_check_real(op, "alpha", alpha, minimum=0.0), beta=_check_real(op, "beta", beta, minimum=0.0), gamma=gamma
    )


def _check_lovasz_options(op, classes, per_image, ignore) -> dict[str, Any]:
    if not (isinstance(classes, str) and classes in ("all", "present")):
        if isinstance(classes, str):
            raise ValueError(f"{op}: classes must be 'all', 'present' or a sequence of class indices, got {classes!r}")
        classes = _check_classes_list(op, classes)
    return dict(
        classes=classes,
        per_image=_check_bool(op, "per_image", per_image),
        ignore=_check_optional_index(op, "ignore", ignore),
    )


def _constant(array, like: Tensor) -> Tensor:
    """A backend array as a constant Tensor in ``like``'s dtype."""
    return Tensor(like.backend.asarray(array).astype(like.dtype), like.backend)


# -- region losses (segmentation_models.pytorch semantics) ---------------------------------------------------
def _region_loss(op: str, input, target, options: dict[str, Any], score: Callable, gamma: float = 1.0) -> Tensor:
    """smp's DiceLoss skeleton: per-class soft scores over batch and pixels, absent classes zeroed, mean over
    classes (then ``** gamma`` for Tversky)."""
    _check_floating_tensor(op, "input", input, 2, "(N, K, ...) scores with the class/channel axis second")
    if not isinstance(target, Tensor):
        raise TypeError(f"{op}: target must be a Tensor, got {type(target).__name__}")
    mode, ignore_index = options["mode"], options["ignore_index"]
    n, k = input.shape[0], input.shape[1]
    spatial = input.shape[:1] + input.shape[2:]
    xp = input.backend.xp
    kind = np.dtype(target.dtype).kind
    if mode == BINARY_MODE:
        if k != 1:
            raise ValueError(f"{op}: mode='binary' needs input of shape (N, 1, ...), got {input.shape}")
        if target.shape not in (spatial, input.shape):
            raise ValueError(
                f"{op}: mode='binary' needs target of shape {spatial} or {input.shape}, got {target.shape}"
            )
    elif mode == MULTICLASS_MODE:
        _check_class_target(op, input, target, 1, k, ignore_index)
    else:
        if target.shape != input.shape:
            raise ValueError(
                f"{op}: mode='multilabel' needs target of the input's shape {input.shape}, got {target.shape}"
            )
    if mode != MULTICLASS_MODE and kind not in "biuf":
        raise TypeError(f"{op}: target must hold numbers, got dtype {target.dtype}")
    if options["classes"] is not None:
        _check_classes_list(op, options["classes"], k)

    if options["from_logits"]:
        # smp: softmax over classes for multiclass, an independent sigmoid per channel otherwise.
        probs = _act.softmax(input, dim=1) if mode == MULTICLASS_MODE else _act.sigmoid(input)
    else:
        probs = input
    probs = _shape.reshape(probs, (n, k, -1))
    t = target.data
    mask = None
    if mode == MULTICLASS_MODE:
        t = xp.reshape(t, (n, -1)).astype(np.int64)
        valid = None if ignore_index is None else t != ignore_index
        safe = t if valid is None else xp.where(valid, t, 0)
        truth = xp.expand_dims(safe, axis=1) == xp.reshape(xp.arange(k), (1, k, 1))
        if valid is not None:
            mask = xp.expand_dims(valid, axis=1)
            truth = truth & mask
    else:
        t = xp.reshape(t, (n, k, -1))
        if ignore_index is not None:
            mask = t != ignore_index
            t = xp.where(mask, t, 0)
        truth = t
    truth = _constant(truth, input)
    if mask is not None:
        probs = probs * _constant(mask, input)

    axes = (0, 2)
    intersection = _red.sum(probs * truth, dim=axes)
    predicted = _red.sum(probs, dim=axes)
    true_sum = xp.sum(truth.data, axis=axes)
    scores = score(intersection, predicted, Tensor(true_sum, input.backend), options["smooth"], options["eps"])
    if options["log_loss"]:
        loss = -_ar.log(_ar.clamp(scores, min=options["eps"]))
    else:
        loss = 1.0 - scores
    # smp: the score is undefined for a class without true pixels, so such classes contribute 0 (still
    # counted in the mean over classes).
    loss = loss * _constant(true_sum > 0, input)
    if options["classes"] is not None:
        loss = _shape.getitem(loss, list(options["classes"]))
    loss = _red.mean(loss)
    if gamma != 1.0:
        # The gradient of m ** gamma at m == 0 is infinite for gamma < 1; taken as 0 there (the loss is at its
        # minimum, or every class is absent/ignored and the loss is a constant 0).
        positive = Tensor(loss.data > 0, input.backend)
        loss = _ar.where(positive, _ar.where(positive, loss, 1.0) ** gamma, 0.0)
    return loss


def _dice_score(intersection, predicted, true_sum, smooth, eps):
    return (2.0 * intersection + smooth) / _ar.clamp(predicted + true_sum + smooth, min=eps)


def _jaccard_score(intersection, predicted, true_sum, smooth, eps):
    return (intersection + smooth) / _ar.clamp(predicted + true_sum - intersection + smooth, min=eps)


def dice_loss(
    input: Tensor,
    target: Tensor,
    mode: str = MULTICLASS_MODE,
    classes: Sequence[int] | None = None,
    log_loss: bool = False,
    from_logits: bool = True,
    smooth: float = 0.0,
    ignore_index: int | None = None,
    eps: float = 1e-7,
) -> Tensor:
    """Soft Dice loss with segmentation_models.pytorch's ``DiceLoss`` semantics.

    Per class ``c``, over the whole batch and all pixels, ``score_c = (2 I_c + smooth) / max(P_c + T_c + smooth,
    eps)`` with ``I_c = sum p t``, ``P_c = sum p``, ``T_c = sum t``; the loss per class is ``1 - score_c`` (or
    ``-log(max(score_c, eps))`` with ``log_loss``), 0 for classes without true pixels, and the result is the mean
    over classes (or over ``classes``).

    Parameters
    ----------
    input:
        ``(N, K, ...)`` logits (``from_logits=True``: softmax over K in multiclass mode, sigmoid otherwise) or
        probabilities.
    target:
        ``'binary'``: ``(N, ...)`` or ``(N, 1, ...)`` 0/1 (input has K = 1); ``'multiclass'``: ``(N, ...)`` class
        indices; ``'multilabel'``: ``(N, K, ...)`` 0/1 per channel.
    classes:
        Classes whose losses are averaged (not in binary mode); all by default.
    ignore_index:
        Target value whose pixels are removed from both prediction and target.
    """
    options = _check_region_options("dice_loss", mode, classes, log_loss, from_logits, smooth, ignore_index, eps)
    return _region_loss("dice_loss", input, target, options, _dice_score)


def jaccard_loss(
    input: Tensor,
    target: Tensor,
    mode: str = MULTICLASS_MODE,
    classes: Sequence[int] | None = None,
    log_loss: bool = False,
    from_logits: bool = True,
    smooth: float = 0.0,
    ignore_index: int | None = None,
    eps: float = 1e-7,
) -> Tensor:
    """Soft Jaccard (IoU) loss with segmentation_models.pytorch's ``JaccardLoss`` semantics.

    As :func:`dice_loss` with ``score_c = (I_c + smooth) / max(P_c + T_c - I_c + smooth, eps)``.
    """
    options = _check_region_options("jaccard_loss", mode, classes, log_loss, from_logits, smooth, ignore_index, eps)
    return _region_loss("jaccard_loss", input, target, options, _jaccard_score)


def tversky_loss(
    input: Tensor,
    target: Tensor,
    mode: str = MULTICLASS_MODE,
    classes: Sequence[int] | None = None,
    log_loss: bool = False,
    from_logits: bool = True,
    smooth: float = 0.0,
    ignore_index: int | None = None,
    eps: float = 1e-7,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.0,
) -> Tensor:
    """Tversky loss with segmentation_models.pytorch's ``TverskyLoss`` semantics (focal Tversky for gamma != 1).

    As :func:`dice_loss` with ``score_c = (I_c + smooth) / max(I_c + alpha FP_c + beta FN_c + smooth, eps)``,
    ``FP_c = P_c - I_c``, ``FN_c = T_c - I_c``; the mean over classes is raised to ``gamma``. ``alpha = beta =
    0.5`` is the Dice loss, ``alpha = beta = 1`` the Jaccard loss.
    """
    op = "tversky_loss"
    options = _check_region_options(op, mode, classes, log_loss, from_logits, smooth, ignore_index, eps)
    weights = _check_tversky_options(op, alpha, beta, gamma)
    a, b = weights["alpha"], weights["beta"]

    def score(intersection, predicted, true_sum, smooth, eps):
        false_pos = predicted - intersection
        false_neg = true_sum - intersection
        return (intersection + smooth) / _ar.clamp(intersection + a * false_pos + b * false_neg + smooth, min=eps)

    return _region_loss(op, input, target, options, score, gamma=weights["gamma"])


# -- Lovasz-softmax -------------------------------------------------------------------------------------------
def _lovasz_flat(probas: Tensor, labels, classes, ignore: int | None) -> Tensor:
    """Lovasz-softmax of one group of pixels: ``probas`` ``(M, K, ...)``, ``labels`` the matching raw array.

    For each class the errors ``|fg - p_c|`` are sorted in decreasing order and dotted with the Lovasz extension
    gradient of the Jaccard loss at that order. The gradient vector depends on the order only, so it is built
    as a constant (scattered back to the unsorted positions) and autograd differentiates ``sum(errors * w)``.
    """
    xp = probas.backend.xp
    k = probas.shape[1]
    axes = (0,) + tuple(range(2, probas.ndim)) + (1,)
    flat = _shape.reshape(_shape.permute(probas, axes), (-1, k))
    lab = xp.reshape(labels, (-1,)).astype(np.int64)
    if ignore is not None:
        keep = xp.nonzero(lab != ignore)[0]
        flat = _shape.getitem(flat, Tensor(keep, probas.backend))
        lab = lab[keep]
    fg = (xp.expand_dims(lab, axis=1) == xp.reshape(xp.arange(k), (1, k))).astype(probas.dtype)
    errors = _ar.abs(Tensor(fg, probas.backend) - flat)
    # Ties may be ordered either way: the extension's value does not depend on it.
    order = xp.argsort(-errors.data, axis=0)
    fg_sorted = xp.take_along_axis(fg, order, axis=0)
    gts = xp.sum(fg_sorted, axis=0, keepdims=True)
    intersection = gts - xp.cumsum(fg_sorted, axis=0)
    union = gts + xp.cumsum(1.0 - fg_sorted, axis=0)  # >= 1 everywhere, so no division by zero
    jaccard = 1.0 - intersection / union
    grad_sorted = xp.concat([jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0)
    weights = xp.take_along_axis(grad_sorted, xp.argsort(order, axis=0), axis=0)
    if classes == "all":
        counted = xp.ones((k,), dtype=probas.dtype)
    elif classes == "present":
        counted = (gts[0] > 0).astype(probas.dtype)
    else:
        counted = probas.backend.asarray(np.bincount(np.asarray(classes), minlength=k).astype(probas.dtype))
    total = xp.sum(counted)
    # The mean over counted classes; no class counted (no valid pixel) gives 0 without a host round trip.
    scale = xp.where(total > 0, 1.0 / xp.where(total > 0, total, 1.0), 0.0)
    return _red.sum(errors * _constant(weights * counted * scale, probas))


def lovasz_softmax(
    probas: Tensor, labels: Tensor, classes="present", per_image: bool = False, ignore: int | None = None
) -> Tensor:
    """Lovasz-softmax loss of Berman et al. (2018), a convex surrogate of the mean Jaccard loss.

    Parameters
    ----------
    probas:
        Class probabilities ``(N, K, H, W)`` (or ``(N, K, ...)``), e.g. ``softmax(logits, dim=1)``.
    labels:
        Integer labels ``(N, H, W)`` in ``[0, K)`` or ``ignore``.
    classes:
        ``'present'`` (average over classes present in the labels), ``'all'``, or a list of class indices.
    per_image:
        Compute the loss per image and average over images (an image without valid pixels counts as 0).
    ignore:
        Label of void pixels, which are removed.

    The loss is 0 (with zero gradient) when no pixel is valid or no class is counted.
    """
    op = "lovasz_softmax"
    options = _check_lovasz_options(op, classes, per_image, ignore)
    _check_floating_tensor(op, "probas", probas, 2, "(N, K, H, W) class probabilities")
    if not isinstance(labels, Tensor):
        raise TypeError(f"{op}: labels must be a Tensor, got {type(labels).__name__}")
    _check_class_target(op, probas, labels, 1, probas.shape[1], options["ignore"], "labels", "probas")
    if options["classes"] not in ("all", "present"):
        _check_classes_list(op, options["classes"], probas.shape[1])
    if not options["per_image"] or probas.shape[0] == 0:
        return _lovasz_flat(probas, labels.data, options["classes"], options["ignore"])
    n = probas.shape[0]
    losses = [
        _lovasz_flat(
            _shape.getitem(probas, slice(i, i + 1)), labels.data[i : i + 1], options["classes"], options["ignore"]
        )
        for i in range(n)
    ]
    return _red.sum(_shape.stack(losses)) * (1.0 / n)


# -- detection (Fast R-CNN multi-task loss) -------------------------------------------------------------------
class DetectionLoss(NamedTuple):
    """Terms of :func:`detection_loss`: ``loss = classification + box_weight * box_regression``."""

    loss: Tensor
    classification: Tensor
    box_regression: Tensor


def detection_loss(
    class_logits: Tensor,
    labels: Tensor,
    box_regression: Tensor,
    box_targets: Tensor,
    *,
    box_weight: float = 1.0,
    beta: float = 1.0 / 9.0,
) -> DetectionLoss:
    """Multi-task loss ``L = L_cls + box_weight * L_box`` of Fast R-CNN, normalised as torchvision's fastrcnn_loss.

    ``L_cls`` is the mean cross-entropy over the ``R`` sampled boxes; ``L_box`` is the smooth-L1 (``beta``) sum over
    the foreground boxes (``labels > 0``; 0 is background) of the regression of their own class, divided by
    ``R`` (all samples, not only the positives).

    Parameters
    ----------
    class_logits:
        ``(R, K)`` classification logits.
    labels:
        ``(R,)`` int64 class indices in ``[0, K)``.
    box_regression:
        ``(R, 4 K)`` class-specific (torchvision's layout: class ``c`` in columns ``4c:4c+4``) or ``(R, 4)``
        class-agnostic box deltas.
    box_targets:
        ``(R, 4)`` encoded regression targets.

    Returns the total and both terms; with no sample at all every term is 0.
    """
    op = "detection_loss"
    _check_floating_tensor(op, "class_logits", class_logits, 2, "(R, K) logits")
    if class_logits.ndim != 2:
        raise ValueError(f"{op}: class_logits must be (R, K), got shape {class_logits.shape}")
    r, k = class_logits.shape
    if not isinstance(labels, Tensor):
        raise TypeError(f"{op}: labels must be a Tensor, got {type(labels).__name__}")
    _check_class_target(op, class_logits, labels, 1, k, None, "labels", "class_logits")
    _check_floating_tensor(op, "box_regression", box_regression, 2, "(R, 4 K) or (R, 4) box deltas")
    if box_regression.shape not in ((r, 4 * k), (r, 4)):
        raise ValueError(
            f"{op}: box_regression must be ({r}, {4 * k}) (class-specific) or ({r}, 4) (class-agnostic) for "
            f"class_logits of shape {class_logits.shape}, got {box_regression.shape}"
        )
    _check_floating_tensor(op, "box_targets", box_targets, 2, f"({r}, 4) regression targets")
    if box_targets.shape != (r, 4):
        raise ValueError(f"{op}: box_targets must be ({r}, 4), got {box_targets.shape}")
    for name, x in (("box_regression", box_regression), ("box_targets", box_targets)):
        if x.dtype != class_logits.dtype:
            raise TypeError(f"{op}: {name} has dtype {x.dtype} but class_logits has dtype {class_logits.dtype}")
    box_weight = _check_real(op, "box_weight", box_weight, minimum=0.0)
    beta = _check_real(op, "beta", beta, minimum=0.0)

    xp = class_logits.backend.xp
    classification = cross_entropy(class_logits, labels)
    positive = xp.nonzero(labels.data > 0)[0]
    rows = Tensor(positive, class_logits.backend)
    if box_regression.shape[1] == 4:
        predicted = _shape.getitem(box_regression, rows)
    else:
        per_class = _shape.reshape(box_regression, (r, k, 4))
        predicted = _shape.getitem(per_class, (rows, Tensor(labels.data[positive], class_logits.backend)))
    box_sum = smooth_l1_loss(predicted, _shape.getitem(box_targets, rows), reduction="sum", beta=beta)
    box = box_sum * (1.0 / r if r else 0.0)
    return DetectionLoss(classification + box_weight * box, classification, box)


# -- discriminative loss (instance embeddings) ----------------------------------------------------------------
class DiscriminativeLossTerms(NamedTuple):
    """Terms of :func:`discriminative_loss`: ``loss = alpha variance + beta distance + gamma regularization``."""

    loss: Tensor
    variance: Tensor
    distance: Tensor
    regularization: Tensor


def _instance_sets(op: str, instance_masks, embeddings: Tensor) -> list[np.ndarray]:
    """Per image, a host boolean array ``(C, P)`` of its non-empty instances over the flattened pixels."""
    n, spatial = embeddings.shape[0], embeddings.shape[2:]
    pixels = int(np.prod(spatial, dtype=np.int64))

    def as_masks(where: str, m: Tensor, expected: tuple[int | None, ...]) -> np.ndarray:
        # None in ``expected`` is the free number of instances.
        if len(m.shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, m.shape)):
            shown = "(" + ", ".join("C" if e is None else str(e) for e in expected) + ")"
            raise ValueError(
                f"{op}: {where} must have shape {shown} to match embeddings of shape {embeddings.shape}, got {m.shape}"
            )
        host = m.numpy()
        if host.dtype.kind not in "biu":
            raise TypeError(f"{op}: {where} must be boolean (or 0/1 integer) masks, got dtype {host.dtype}")
        if host.dtype.kind != "b" and host.size and (host.min() < 0 or host.max() > 1):
            raise ValueError(f"{op}: {where} must hold 0/1 masks, got values in [{host.min()}, {host.max()}]")
        return host.astype(bool)

    if isinstance(instance_masks, Tensor) and instance_masks.ndim == embeddings.ndim - 1:
        labels = instance_masks.numpy()
        if labels.dtype.kind not in "iu":
            raise TypeError(
                f"{op}: a label map instance_masks must hold integer instance ids, got dtype {labels.dtype}"
            )
        if labels.shape != (n,) + spatial:
            raise ValueError(f"{op}: label map instance_masks must have shape {(n,) + spatial}, got {labels.shape}")
        if labels.size and labels.min() < 0:
            raise ValueError(f"{op}: label map instance_masks must be >= 0 (0 = background), got {labels.min()}")
        sets = []
        for image in labels.reshape(n, pixels):
            ids = np.unique(image)
            ids = ids[ids > 0]
            sets.append(image[None, :] == ids[:, None])
        return sets
    if isinstance(instance_masks, Tensor) and instance_masks.ndim == embeddings.ndim:
        masks = as_masks("instance_masks", instance_masks, (n, None) + spatial)
        per_image = list(masks.reshape(n, masks.shape[1], pixels))
    elif isinstance(instance_masks, (list, tuple)):
        if len(instance_masks) != n:
            raise ValueError(f"{op}: instance_masks lists {len(instance_masks)} images but embeddings has {n}")
        per_image = []
        for i, m in enumerate(instance_masks):
            if not isinstance(m, Tensor):
                raise TypeError(f"{op}: instance_masks[{i}] must be a Tensor, got {type(m).__name__}")
            per_image.append(as_masks(f"instance_masks[{i}]", m, (None,) + spatial).reshape(m.shape[0], pixels))
    else:
        given = (
            f"a Tensor of shape {instance_masks.shape}"
            if isinstance(instance_masks, Tensor)
            else type(instance_masks).__name__
        )
        raise TypeError(
            f"{op}: instance_masks must be a (N, C, H, W) mask Tensor, a (N, H, W) label map Tensor or a list of "
            f"N (C_n, H, W) mask Tensors for embeddings of shape {embeddings.shape}, got {given}"
        )
    return [m[m.any(axis=1)] for m in per_image]


def _norm(x: Tensor, dim: int) -> Tensor:
    return VectorNorm.apply(x, axis=dim)


def _image_terms(x: Tensor, masks: np.ndarray, delta_v: float, delta_d: float) -> tuple[Tensor, Tensor, Tensor]:
    """Variance, distance and regularisation terms of one image: ``x`` ``(P, D)``, ``masks`` ``(C, P)``, C >= 1."""
    backend = x.backend
    c = masks.shape[0]
    counts = masks.sum(axis=1)
    means = _ar.matmul(_constant(masks / counts[:, None], x), x)  # (C, D) cluster centres
    cluster, pixel = np.nonzero(masks)
    pull = _norm(
        _shape.getitem(means, Tensor(backend.asarray(cluster), backend))
        - _shape.getitem(x, Tensor(backend.asarray(pixel), backend)),
        dim=1,
    )
    pull = _act.relu(pull - delta_v)
    # Mean over each cluster's pixels, then over clusters: one weight 1 / (C N_c) per (cluster, pixel) pair.
    variance = _red.sum(pull * pull * _constant(1.0 / (c * counts[cluster]), x))
    if c > 1:
        first, second = np.triu_indices(c, 1)
        gap = _norm(
            _shape.getitem(means, Tensor(backend.asarray(first), backend))
            - _shape.getitem(means, Tensor(backend.asarray(second), backend)),
            dim=1,
        )
        push = _act.relu(2.0 * delta_d - gap)
        # The mean over ordered pairs c != c' equals the mean over unordered ones (the term is symmetric).
        distance = _red.sum(push * push) * (1.0 / first.size)
    else:
        distance = connected_zero(x)
    regularization = _red.sum(_norm(means, dim=1)) * (1.0 / c)
    return variance, distance, regularization


def discriminative_loss(
    embeddings: Tensor,
    instance_masks,
    delta_v: float = 0.5,
    delta_d: float = 1.5,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 0.001,
) -> DiscriminativeLossTerms:
    """Discriminative loss for instance embeddings of De Brabandere et al. (2017).

    Per image with clusters ``c = 1..C`` (instances), ``mu_c`` the mean embedding of cluster ``c``:

    * variance (pull): ``1/C sum_c 1/N_c sum_{i in c} [||mu_c - x_i|| - delta_v]_+^2``;
    * distance (push): ``1/(C(C-1)) sum_{c != c'} [2 delta_d - ||mu_c - mu_c'||]_+^2`` (0 when ``C == 1``);
    * regularisation: ``1/C sum_c ||mu_c||``.

    Each term is averaged over the ``N`` images of the batch; an image without instances contributes 0 to each
    term (and counts in the average). With no instance in the whole batch every term is 0 with a zero gradient.
    Where a norm is 0 (a pixel on its centre, two equal centres) its gradient is taken as 0.

    Parameters
    ----------
    embeddings:
        ``(N, D, H, W)`` pixel embeddings (any number of spatial dimensions).
    instance_masks:
        ``(N, C, H, W)`` boolean (or 0/1) masks, one channel per instance (empty channels are skipped, masks may
        overlap); or a ``(N, H, W)`` integer label map with 0 = background and each positive id an instance; or a
        list of ``N`` ``(C_n, H, W)`` mask Tensors.

    Returns
    -------
    DiscriminativeLossTerms
        ``(loss, variance, distance, regularization)`` with ``loss = alpha variance + beta distance + gamma
        regularization``.
    """
    op = "discriminative_loss"
    _check_floating_tensor(op, "embeddings", embeddings, 3, "(N, D, H, W) pixel embeddings")
    delta_v = _check_real(op, "delta_v", delta_v, minimum=0.0)
    delta_d = _check_real(op, "delta_d", delta_d, minimum=0.0)
    alpha = _check_real(op, "alpha", alpha, minimum=0.0)
    beta = _check_real(op, "beta", beta, minimum=0.0)
    gamma = _check_real(op, "gamma", gamma, minimum=0.0)
    sets = _instance_sets(op, instance_masks, embeddings)
    n, d = embeddings.shape[:2]
    terms: list[list[Tensor]] = [[], [], []]
    for i, masks in enumerate(sets):
        if masks.shape[0] == 0:
            continue
        x = _shape.transpose(_shape.reshape(_shape.getitem(embeddings, i), (d, -1)), 0, 1)  # (P, D)
        for bucket, term in zip(terms, _image_terms(x, masks, delta_v, delta_d)):
            bucket.append(term)
    if not terms[0]:
        zero = connected_zero(embeddings)
        return DiscriminativeLossTerms(zero, zero, zero, zero)
    variance, distance, regularization = (_red.sum(_shape.stack(bucket)) * (1.0 / n) for bucket in terms)
    total = alpha * variance + beta * distance + gamma * regularization
    return DiscriminativeLossTerms(total, variance, distance, regularization)


# -- modules --------------------------------------------------------------------------------------------------
class _Loss(Module):
    """A loss module: holds hyper-parameters and calls its functional loss as ``loss(input, target)``.

    Tensor hyper-parameters (class weights) are buffers, so ``.to(backend)`` moves them with the module.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self._options: dict[str, Any] = {}
        for name, value in options.items():
            if isinstance(value, Tensor):
                self.register_buffer(name, value)
            else:
                self._options[name] = value

    def _call_options(self) -> dict[str, Any]:
        return {**self._options, **dict(self._buffers)}

    def extra_repr(self) -> str:
        options = [f"{name}={value!r}" for name, value in self._options.items()]
        # Weight tensors are summarised by shape: their values belong in state_dict, not in a one-line repr.
        tensors = [f"{name}=<Tensor of shape {b.shape}>" for name, b in self._buffers.items() if b is not None]
        return ", ".join(options + tensors)


def _check_weight(op: str, name: str, weight) -> None:
    if weight is not None and not isinstance(weight, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(weight).__name__}")


class CrossEntropyLoss(_Loss):
    """Cross-entropy on logits (``torch.nn.CrossEntropyLoss``); see :func:`cross_entropy`."""

    def __init__(
        self,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        _check_weight("CrossEntropyLoss", "weight", weight)
        _check_reduction("CrossEntropyLoss", reduction)
        super().__init__(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(input, target, **self._call_options())


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (``torch.nn.NLLLoss``); see :func:`nll_loss`."""

    def __init__(self, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean") -> None:
        _check_weight("NLLLoss", "weight", weight)
        _check_reduction("NLLLoss", reduction)
        super().__init__(weight=weight, ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return nll_loss(input, target, **self._call_options())


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy on logits (``torch.nn.BCEWithLogitsLoss``); see :func:`binary_cross_entropy_with_logits`."""

    def __init__(
        self, weight: Tensor | None = None, reduction: str = "mean", pos_weight: Tensor | None = None
    ) -> None:
        _check_weight("BCEWithLogitsLoss", "weight", weight)
        _check_weight("BCEWithLogitsLoss", "pos_weight", pos_weight)
        _check_reduction("BCEWithLogitsLoss", reduction)
        super().__init__(weight=weight, reduction=reduction, pos_weight=pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(input, target, **self._call_options())


class BCELoss(_Loss):
    """Binary cross-entropy on probabilities (``torch.nn.BCELoss``); see :func:`binary_cross_entropy`."""

    def __init__(self, weight: Tensor | None = None, reduction: str = "mean") -> None:
        _check_weight("BCELoss", "weight", weight)
        _check_reduction("BCELoss", reduction)
        super().__init__(weight=weight, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(input, target, **self._call_options())


def _check_margin_options(op: str, p, margin) -> None:
    if p not in (1, 2) or isinstance(p, bool):
        raise ValueError(f"{op}: p must be 1 or 2, got {p!r}")
    _check_real(op, "margin", margin)


class MultiMarginLoss(_Loss):
    """Multi-class hinge loss (``torch.nn.MultiMarginLoss``); see :func:`multi_margin_loss`."""

    def __init__(
        self, p: int = 1, margin: float = 1.0, weight: Tensor | None = None, reduction: str = "mean"
    ) -> None:
        _check_margin_options("MultiMarginLoss", p, margin)
        _check_weight("MultiMarginLoss", "weight", weight)
        _check_reduction("MultiMarginLoss", reduction)
        super().__init__(p=p, margin=margin, weight=weight, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return multi_margin_loss(input, target, **self._call_options())


class PixelHingeLoss(_Loss):
    """Pixel-wise multi-class hinge loss for segmentation logits; see :func:`pixel_hinge_loss`."""

    def __init__(
        self,
        p: int = 1,
        margin: float = 1.0,
        weight: Tensor | None = None,
        ignore_index: int = 255,
        reduction: str = "mean",
    ) -> None:
        _check_margin_options("PixelHingeLoss", p, margin)
        _check_weight("PixelHingeLoss", "weight", weight)
        _check_reduction("PixelHingeLoss", reduction)
        super().__init__(p=p, margin=margin, weight=weight, ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return pixel_hinge_loss(input, target, **self._call_options())


class SigmoidFocalLoss(_Loss):
    """Sigmoid focal loss (torchvision's formula) averaged over elements; see :func:`sigmoid_focal_loss`.

    Unlike the function (torchvision's ``reduction='none'``), the module defaults to ``reduction='mean'``: a
    training loss is a scalar.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean") -> None:
        _check_real("SigmoidFocalLoss", "alpha", alpha)
        _check_real("SigmoidFocalLoss", "gamma", gamma, minimum=0.0)
        _check_reduction("SigmoidFocalLoss", reduction)
        super().__init__(alpha=alpha, gamma=gamma, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return sigmoid_focal_loss(input, target, **self._call_options())


class FocalLoss(_Loss):
    """Softmax focal loss for multi-class segmentation (Lin et al.); see :func:`softmax_focal_loss`."""

    def __init__(
        self, gamma: float = 2.0, alpha=None, ignore_index: int = 255, reduction: str = "mean"
    ) -> None:
        _check_real("FocalLoss", "gamma", gamma, minimum=0.0)
        if isinstance(alpha, (list, tuple)):
            alpha = tuple(_check_real("FocalLoss", f"alpha[{i}]", a, minimum=0.0) for i, a in enumerate(alpha))
        elif alpha is not None and not isinstance(alpha, Tensor):
            alpha = _check_real("FocalLoss", "alpha", alpha, minimum=0.0)
        _check_reduction("FocalLoss", reduction)
        super().__init__(gamma=gamma, alpha=alpha, ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return softmax_focal_loss(input, target, **self._call_options())


class DiceLoss(_Loss):
    """Soft Dice loss (segmentation_models.pytorch's DiceLoss); see :func:`dice_loss`."""

    def __init__(
        self,
        mode: str = MULTICLASS_MODE,
        classes: Sequence[int] | None = None,
        log_loss: bool = False,
        from_logits: bool = True,
        smooth: float = 0.0,
        ignore_index: int | None = None,
        eps: float = 1e-7,
    ) -> None:
        op = type(self).__name__
        super().__init__(**_check_region_options(op, mode, classes, log_loss, from_logits, smooth, ignore_index, eps))

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return dice_loss(input, target, **self._call_options())


class JaccardLoss(DiceLoss):
    """Soft Jaccard (IoU) loss (segmentation_models.pytorch's JaccardLoss); see :func:`jaccard_loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return jaccard_loss(input, target, **self._call_options())


class TverskyLoss(_Loss):
    """Tversky / focal Tversky loss (segmentation_models.pytorch's TverskyLoss); see :func:`tversky_loss`."""

    def __init__(
        self,
        mode: str = MULTICLASS_MODE,
        classes: Sequence[int] | None = None,
        log_loss: bool = False,
        from_logits: bool = True,
        smooth: float = 0.0,
        ignore_index: int | None = None,
        eps: float = 1e-7,
        alpha: float = 0.5,
        beta: float = 0.5,
        gamma: float = 1.0,
    ) -> None:
        op = type(self).__name__
        super().__init__(
            **_check_region_options(op, mode, classes, log_loss, from_logits, smooth, ignore_index, eps),
            **_check_tversky_options(op, alpha, beta, gamma),
        )

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return tversky_loss(input, target, **self._call_options())


class LovaszSoftmaxLoss(_Loss):
    """Lovasz-softmax loss on logits (softmax applied first) or probabilities; see :func:`lovasz_softmax`."""

    def __init__(
        self, classes="present", per_image: bool = False, ignore_index: int | None = None, from_logits: bool = True
    ) -> None:
        options = _check_lovasz_options("LovaszSoftmaxLoss", classes, per_image, ignore_index)
        super().__init__(
            classes=options["classes"],
            per_image=options["per_image"],
            ignore_index=options["ignore"],
            from_logits=_check_bool("LovaszSoftmaxLoss", "from_logits", from_logits),
        )

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        o = self._options
        probas = _act.softmax(input, dim=1) if o["from_logits"] else input
        return lovasz_softmax(probas, target, classes=o["classes"], per_image=o["per_image"], ignore=o["ignore_index"])


class L1Loss(_Loss):
    """Mean absolute error (``torch.nn.L1Loss``); see :func:`l1_loss`."""

    def __init__(self, reduction: str = "mean") -> None:
        _check_reduction("L1Loss", reduction)
        super().__init__(reduction=reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return l1_loss(input, target, **self._call_options())


class MSELoss(_Loss):
    """Mean squared error (``torch.nn.MSELoss``); see :func:`mse_loss`."""

    def __init__(self, reduction: str = "mean") -> None:
        _check_reduction("MSELoss", reduction)
        super().__init__(reduction=reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mse_loss(input, target, **self._call_options())


class SmoothL1Loss(_Loss):
    """Smooth L1 (Huber-like) loss (``torch.nn.SmoothL1Loss``); see :func:`smooth_l1_loss`."""

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        _check_reduction("SmoothL1Loss", reduction)
        _check_real("SmoothL1Loss", "beta", beta, minimum=0.0)
        super().__init__(reduction=reduction, beta=beta)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return smooth_l1_loss(input, target, **self._call_options())


class DiscriminativeLoss(_Loss):
    """Discriminative instance-embedding loss (De Brabandere et al.); see :func:`discriminative_loss`.

    Called as ``loss(embeddings, instance_masks)``, it returns the weighted total only.
    """

    def __init__(
        self,
        delta_v: float = 0.5,
        delta_d: float = 1.5,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 0.001,
    ) -> None:
        options = dict(delta_v=delta_v, delta_d=delta_d, alpha=alpha, beta=beta, gamma=gamma)
        for name, value in options.items():
            _check_real("DiscriminativeLoss", name, value, minimum=0.0)
        super().__init__(**options)

    def forward(self, embeddings: Tensor, instance_masks) -> Tensor:
        """The weighted total; call :func:`discriminative_loss` for the separate terms."""
        return discriminative_loss(embeddings, instance_masks, **self._call_options()).loss


#: Loss name -> factory; ``factory(**hyper_parameters)`` returns a callable ``loss(input, target) -> Tensor``.
#: The built-in plugin registers every entry through ``segcore_register_losses``.
LOSSES: dict[str, Callable[..., Module]] = {
    "cross_entropy": CrossEntropyLoss,
    "nll": NLLLoss,
    "bce_with_logits": BCEWithLogitsLoss,
    "bce": BCELoss,
    "multi_margin": MultiMarginLoss,
    "pixel_hinge": PixelHingeLoss,
    "sigmoid_focal": SigmoidFocalLoss,
    "focal": FocalLoss,
    "dice": DiceLoss,
    "jaccard": JaccardLoss,
    "tversky": TverskyLoss,
    "lovasz_softmax": LovaszSoftmaxLoss,
    "l1": L1Loss,
    "mse": MSELoss,
    "smooth_l1": SmoothL1Loss,
    "discriminative": DiscriminativeLoss,
}
