"""Per-position losses with ``torch.nn.functional`` / ``torchvision.ops`` semantics.

Classification: :func:`cross_entropy`, :func:`nll_loss`, :func:`binary_cross_entropy_with_logits`,
:func:`binary_cross_entropy`, :func:`multi_margin_loss`, :func:`sigmoid_focal_loss` (torchvision.ops), and two
segmentation forms without a torch counterpart, :func:`softmax_focal_loss` and :func:`pixel_hinge_loss`.
Regression: :func:`l1_loss`, :func:`mse_loss`, :func:`smooth_l1_loss`. Region losses (Dice, Lovasz, ...) and
composite losses live in :mod:`segcore.losses`.

Class-index losses take scores ``(N, K)`` or ``(N, K, d1, d2, ...)`` (or unbatched ``(K,)``) with the class
axis second, and integer class targets of the remaining shape. :func:`cross_entropy` also takes torch's
probability targets (a floating target of the input's shape). Class weights are constants: no gradient flows
into ``weight`` of the class-index losses.

One deliberate departure from torch: when ``reduction='mean'`` and the total weight of the non-ignored
targets is zero (every pixel carries ``ignore_index``, only zero-weight classes occur, or the batch is empty),
torch divides 0 by 0 and returns NaN. segcore returns 0.0 with a zero gradient, so that a crop containing
only "void" pixels cannot poison a training run. The same holds for every loss here under ``'mean'`` of an
empty input.

Losses whose composition from differentiable ops would be unstable are dedicated Functions with closed-form
backward passes (BCE with logits, BCE, both focal losses); the others are compositions and autograd supplies
their gradients.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np

from ..autograd import Function, Tensor
from ._utils import check_floating
from .activation import _stable_sigmoid, relu
from .arithmetic import abs as _abs
from .arithmetic import where
from .reduction import sum as _sum

__all__ = [
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
]

_REDUCTIONS = ("none", "mean", "sum")


def _class_axis(ndim: int) -> int:
    return 0 if ndim == 1 else 1


def _class_view(ndim: int, axis: int, classes: int) -> tuple[int, ...]:
    view = [1] * ndim
    view[axis] = classes
    return tuple(view)


def _class_targets(xp, target, weight, ignore_index: int | None, dtype):
    """``(valid, safe, w_y)``: non-ignored mask, targets with ignored entries set to class 0, target weights.

    ``ignore_index=None`` (losses without one, e.g. multi_margin_loss) keeps every target.
    """
    # int64 whatever the label dtype (uint8 label maps): comparing with a negative ignore_index must not wrap.
    target = target.astype(np.int64)
    valid = xp.ones(target.shape, dtype=bool) if ignore_index is None else target != ignore_index
    safe = xp.where(valid, target, 0)
    if weight is None:
        w_y = valid.astype(dtype)
    else:
        w_y = xp.where(valid, weight[safe], 0.0).astype(dtype)
    return valid, safe, w_y


def _pick(xp, scores, safe, axis: int):
    """``scores`` at each sample's target class (a gather along the class axis)."""
    return xp.squeeze(xp.take_along_axis(scores, xp.expand_dims(safe, axis=axis), axis=axis), axis=axis)


def _one_hot(xp, safe, axis: int, classes: int, ndim: int):
    labels = xp.reshape(xp.arange(classes), _class_view(ndim, axis, classes))
    return xp.expand_dims(safe, axis=axis) == labels


def _safe_inverse(xp, denominator):
    # 1 / denominator, and 0 where it is 0: the documented "all ignored -> 0 and zero gradient" rule. Kept on
    # the device (no host sync) so the check costs nothing on GPU backends.
    nonzero = denominator != 0
    return xp.where(nonzero, 1.0 / xp.where(nonzero, denominator, 1.0), 0.0)


def _reduce(xp, per_sample, reduction: str, inverse_denominator):
    if reduction == "none":
        return per_sample
    # xp.asarray: NumPy reductions return scalars, and a Tensor's data should be a 0-d array.
    total = xp.sum(per_sample)
    if reduction == "sum":
        return xp.asarray(total)
    return xp.asarray(total * inverse_denominator, dtype=per_sample.dtype)


def _sample_scale(xp, g, ctx, sample_shape: tuple[int, ...]):
    """``dL/d(loss_n)`` from the upstream gradient ``g`` of the (possibly reduced) loss, class axis inserted."""
    if ctx.reduction == "mean":
        g = g * ctx.inverse_denominator
    if ctx.reduction != "none":
        g = xp.broadcast_to(g, sample_shape)
    return xp.expand_dims(g, axis=ctx.axis)


class CrossEntropy(Function):
    """Fused log-softmax + weighted negative log-likelihood, with optional label smoothing.

    Every variant is ``loss_n = -sum_k c_nk log p_nk`` for a coefficient array ``c`` (one-hot target times its
    weight mixed with the smoothing term, or weighted probability targets); its logit gradient is
    ``p_nk * sum_k c_nk - c_nk``. Only ``log p`` and the small per-sample arrays are kept for backward.
    """

    @staticmethod
    def forward(ctx, logits, target, weight, *, ignore_index, reduction, label_smoothing, probabilities):
        xp = ctx.xp
        axis = _class_axis(logits.ndim)
        classes = logits.shape[axis]
        # log-sum-exp with the max subtracted: finite for logits of any magnitude.
        shifted = logits - xp.max(logits, axis=axis, keepdims=True)
        log_p = shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
        w_view = None if weight is None else xp.reshape(weight, _class_view(logits.ndim, axis, classes))
        ctx.axis, ctx.classes, ctx.reduction = axis, classes, reduction
        ctx.label_smoothing, ctx.probabilities = label_smoothing, probabilities
        if probabilities:
            # torch smooths probability targets as p (1 - eps) + eps / K and weights each class term.
            coeff = target if label_smoothing == 0 else target * (1.0 - label_smoothing) + label_smoothing / classes
            if w_view is not None:
                coeff = coeff * w_view
            per_sample = -xp.sum(coeff * log_p, axis=axis)
            # torch divides by the number of positions (numel / K), not by weights, for probability targets.
            denominator = xp.asarray(float(per_sample.size), dtype=logits.dtype)
            ctx.save_for_backward(log_p, coeff, w_view)
        else:
            valid, safe, w_y = _class_targets(xp, target, weight, ignore_index, logits.dtype)
            per_sample = -w_y * _pick(xp, log_p, safe, axis)
            if label_smoothing > 0:
                # torch: (1 - eps) * nll + (eps / K) * smooth with smooth_n = -sum_k w_k log p_nk (0 if ignored),
                # both divided by the same total target weight under 'mean'.
                weighted = log_p if w_view is None else log_p * w_view
                smooth = xp.where(valid, -xp.sum(weighted, axis=axis), 0.0)
                per_sample = (1.0 - label_smoothing) * per_sample + (label_smoothing / classes) * smooth
            denominator = xp.sum(w_y)
            ctx.save_for_backward(log_p, valid, safe, w_y, w_view)
        ctx.inverse_denominator = _safe_inverse(xp, denominator)
        return _reduce(xp, per_sample.astype(logits.dtype), reduction, ctx.inverse_denominator)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        axis, classes, eps = ctx.axis, ctx.classes, ctx.label_smoothing
        log_p = ctx.saved[0]
        scale = _sample_scale(xp, g, ctx, log_p.shape[:axis] + log_p.shape[axis + 1 :])
        if ctx.probabilities:
            _, coeff, w_view = ctx.saved
            grad_logits = grad_target = None
            if ctx.needs_input_grad[0]:
                grad_logits = scale * (xp.exp(log_p) * xp.sum(coeff, axis=axis, keepdims=True) - coeff)
            if ctx.needs_input_grad[1]:
                # Smoothing maps p to p (1 - eps) + eps / K, so d loss_n / d p_nk = -(1 - eps) w_k log p_nk.
                grad_target = -(1.0 - eps) * scale * log_p
                if w_view is not None:
                    grad_target = grad_target * w_view
            return grad_logits, grad_target, None
        _, valid, safe, w_y, w_view = ctx.saved
        target_coeff = xp.expand_dims((1.0 - eps) * w_y, axis=axis)
        coeff = xp.where(_one_hot(xp, safe, axis, classes, log_p.ndim), target_coeff, 0.0)
        total = target_coeff
        if eps > 0:
            view = _class_view(log_p.ndim, axis, classes)
            # A full (1, K, 1, ...) array even without weights: the sum over classes below must see K terms.
            class_weight = xp.ones(view, dtype=log_p.dtype) if w_view is None else w_view
            smooth_coeff = xp.where(xp.expand_dims(valid, axis=axis), (eps / classes) * class_weight, 0.0)
            coeff = coeff + smooth_coeff
            total = total + xp.sum(smooth_coeff, axis=axis, keepdims=True)
        grad_logits = scale * (xp.exp(log_p) * total - coeff)
        return grad_logits.astype(log_p.dtype), None, None


class NLLLoss(Function):
    @staticmethod
    def forward(ctx, log_probs, target, weight, *, ignore_index, reduction):
        xp = ctx.xp
        axis = _class_axis(log_probs.ndim)
        valid, safe, w_y = _class_targets(xp, target, weight, ignore_index, log_probs.dtype)
        per_sample = -w_y * _pick(xp, log_probs, safe, axis)
        ctx.axis, ctx.classes, ctx.reduction = axis, log_probs.shape[axis], reduction
        ctx.shape = log_probs.shape
        ctx.inverse_denominator = _safe_inverse(xp, xp.sum(w_y))
        ctx.save_for_backward(safe, w_y)
        return _reduce(xp, per_sample, reduction, ctx.inverse_denominator)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        safe, w_y = ctx.saved
        axis = ctx.axis
        scale = _sample_scale(xp, g, ctx, safe.shape)
        one_hot = _one_hot(xp, safe, axis, ctx.classes, len(ctx.shape))
        grad = xp.where(one_hot, -scale * xp.expand_dims(w_y, axis=axis), 0.0)
        return grad.astype(w_y.dtype), None, None


# -- validation -----------------------------------------------------------------------------------------------
def _check_common(op: str, input, target, weight, ignore_index, reduction) -> tuple[int, int]:
    """Checks shared by both losses; returns ``(class_axis, num_classes)``."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    check_floating(input, f"{op}: input")
    if input.ndim == 0:
        raise ValueError(f"{op}: input must be (K,), (N, K) or (N, K, d1, ...), got a 0-d tensor")
    if not isinstance(target, Tensor):
        raise TypeError(f"{op}: target must be a Tensor, got {type(target).__name__}")
    axis = _class_axis(input.ndim)
    classes = input.shape[axis]
    if classes < 1:
        raise ValueError(f"{op}: input has no classes (class dimension of size 0), shape {input.shape}")
    if weight is not None:
        if not isinstance(weight, Tensor):
            raise TypeError(f"{op}: weight must be a Tensor or None, got {type(weight).__name__}")
        if weight.shape != (classes,):
            raise ValueError(
                f"{op}: weight must have shape ({classes},), one entry per class of input shape {input.shape}, "
                f"got {weight.shape}"
            )
        if weight.dtype != input.dtype:
            raise TypeError(f"{op}: weight has dtype {weight.dtype} but input has dtype {input.dtype}")
    if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return axis, classes


def _check_class_target(
    op: str,
    input: Tensor,
    target: Tensor,
    axis: int,
    classes: int,
    ignore_index: int | None,
    name: str = "target",
    input_name: str = "input",
) -> None:
    expected = input.shape[:axis] + input.shape[axis + 1 :]
    if np.dtype(target.dtype).kind not in "iu":
        plural = "targets" if name == "target" else name
        raise TypeError(f"{op}: class {plural} must have an integer dtype (int64), got {target.dtype}")
    if target.shape != expected:
        raise ValueError(
            f"{op}: {name} shape {target.shape} does not match {input_name} shape {input.shape}: expected {expected} "
            f"(the {input_name}'s shape without the class dimension)"
        )
    xp = target.backend.xp
    t = target.data.astype(np.int64)
    bad = (t < 0) | (t >= classes)
    if ignore_index is not None:
        bad = bad & (t != ignore_index)
    if bool(xp.any(bad)):
        host = target.backend.to_numpy(t)[target.backend.to_numpy(bad)]
        unless = "" if ignore_index is None else f", and it is not ignore_index={ignore_index}"
        raise ValueError(
            f"{op}: {name} contains class {int(host[0])} outside [0, {classes}) for {input_name} with {classes} "
            f"classes ({host.size} such entries){unless}"
        )


# -- public API -----------------------------------------------------------------------------------------------
def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy between logits ``input`` and ``target``, as ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    input:
        Unnormalised logits ``(N, K)``, ``(N, K, d1, ...)`` or ``(K,)``.
    target:
        Integer class indices of ``input``'s shape without the class dimension, or class probabilities of
        ``input``'s shape (floating dtype; ``ignore_index`` must then stay negative).
    weight:
        Per-class weights ``(K,)``; ``'mean'`` divides by the summed weights of the non-ignored targets.
    ignore_index:
        Class-index targets equal to it contribute neither loss nor gradient.
    reduction:
        ``'none'`` (per-position losses), ``'mean'`` or ``'sum'``.
    label_smoothing:
        ``eps`` in [0, 1]: the target becomes ``(1 - eps) * one_hot + eps / K`` (class weights applied to both).

    ``'mean'`` over targets whose total weight is zero (e.g. all ignored) returns 0.0 with a zero gradient
    where torch returns NaN.
    """
    op = "cross_entropy"
    axis, classes = _check_common(op, input, target, weight, ignore_index, reduction)
    if (
        not isinstance(label_smoothing, numbers.Real)
        or isinstance(label_smoothing, bool)
        or not 0.0 <= label_smoothing <= 1.0
    ):
        raise ValueError(f"{op}: label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    probabilities = target.shape == input.shape
    if probabilities:
        # torch's rule: a target of the input's own shape holds class probabilities.
        if np.dtype(target.dtype).kind != "f":
            raise TypeError(
                f"{op}: a target of the input's shape {input.shape} holds class probabilities and must be "
                f"floating point, got dtype {target.dtype}; class-index targets have shape "
                f"{input.shape[:axis] + input.shape[axis + 1:]}"
            )
        if target.dtype != input.dtype:
            raise TypeError(f"{op}: probability target has dtype {target.dtype} but input has dtype {input.dtype}")
        if ignore_index >= 0:
            raise ValueError(
                f"{op}: ignore_index={ignore_index} is not supported with probability targets (torch's rule); "
                "leave it at its default"
            )
    else:
        _check_class_target(op, input, target, axis, classes, ignore_index)
    return CrossEntropy.apply(
        input,
        target,
        weight,
        ignore_index=int(ignore_index),
        reduction=reduction,
        label_smoothing=float(label_smoothing),
        probabilities=probabilities,
    )


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of log-probabilities ``input`` at class targets, as ``torch``'s ``nll_loss``.

    ``input`` is ``(N, K)``, ``(N, K, d1, ...)`` or ``(K,)`` (typically ``log_softmax(logits, dim=1)``);
    ``loss_n = -weight[y_n] * input[n, y_n]``. ``'mean'`` divides by the summed weights of the non-ignored
    targets, and returns 0.0 with a zero gradient when that sum is zero (torch: NaN).
    """
    op = "nll_loss"
    axis, classes = _check_common(op, input, target, weight, ignore_index, reduction)
    _check_class_target(op, input, target, axis, classes, ignore_index)
    return NLLLoss.apply(input, target, weight, ignore_index=int(ignore_index), reduction=reduction)


# == losses added for segmentation (issue 5) ==================================================================
# -- shared helpers -------------------------------------------------------------------------------------------
def _check_tensor_input(op: str, name: str, x) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    check_floating(x, f"{op}: {name}")


def _check_reduction(op: str, reduction) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_real(op: str, name: str, value, *, minimum: float | None = None) -> float:
    """A finite real hyper-parameter (``>= minimum`` when given) as a Python float."""
    if not isinstance(value, (numbers.Real, np.number)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{op}: {name} must be a finite number{bound}, got {value!r}")
    return float(value)


def _check_same(op: str, name: str, other, input: Tensor) -> None:
    """``other`` must be a floating Tensor of ``input``'s dtype and shape (no silent broadcasting)."""
    if not isinstance(other, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(other).__name__}")
    if other.dtype != input.dtype:
        raise TypeError(f"{op}: {name} has dtype {other.dtype} but input has dtype {input.dtype}")
    if other.shape != input.shape:
        raise ValueError(f"{op}: {name} shape {other.shape} must equal the input shape {input.shape}")


def _check_broadcastable(op: str, name: str, other, input: Tensor) -> None:
    """``other`` (None allowed) must be a Tensor of ``input``'s dtype that broadcasts to ``input``'s shape."""
    if other is None:
        return
    if not isinstance(other, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(other).__name__}")
    if other.dtype != input.dtype:
        raise TypeError(f"{op}: {name} has dtype {other.dtype} but input has dtype {input.dtype}")
    try:
        shape = np.broadcast_shapes(other.shape, input.shape)
    except ValueError:
        shape = None
    if shape != input.shape:
        raise ValueError(f"{op}: {name} of shape {other.shape} does not broadcast to the input shape {input.shape}")


def _elementwise_scale(xp, g, ctx, shape: tuple[int, ...]):
    """``dL/d(loss_i)`` for an element-wise loss from the upstream gradient of the (possibly reduced) loss."""
    if ctx.reduction == "mean":
        g = g * ctx.inverse_denominator
    if ctx.reduction != "none":
        g = xp.broadcast_to(g, shape)
    return g


def _count_inverse(xp, count: int, dtype):
    return _safe_inverse(xp, xp.asarray(float(count), dtype=dtype))


def _reduce_tensor(loss: Tensor, reduction: str, count=None) -> Tensor:
    """Reduce a composed per-position loss. ``count``: a 0-d backend array of the divisor for ``'mean'``
    (default: the number of elements); a zero divisor gives 0 (see the module docstring)."""
    if reduction == "none":
        return loss
    total = _sum(loss)
    if reduction == "sum":
        return total
    xp = loss.backend.xp
    inverse = (
        _count_inverse(xp, loss.numel(), loss.dtype) if count is None else _safe_inverse(xp, count.astype(loss.dtype))
    )
    return total * Tensor(xp.asarray(inverse, dtype=loss.dtype), loss.backend)


# -- binary cross-entropy -------------------------------------------------------------------------------------
class BinaryCrossEntropyWithLogits(Function):
    """``l = w ((1 - t) x + (1 + (pw - 1) t) softplus(-x))``, the log-sum-exp form of weighted BCE.

    Evaluated as ``max(x, 0) - x t + log1p(exp(-|x|)) + (pw - 1) t softplus(-x)``: for hard targets the first two
    terms cancel exactly where the sample is right, so a tiny loss (x = -20, t = 0: 2e-9) is not lost to
    rounding in ``(1 - t) x + softplus(-x)``.

    Gradients: ``dl/dx = w ((1 - t) - (1 + (pw - 1) t) sigmoid(-x))`` and ``dl/dt = w ((pw - 1) softplus(-x) - x)``,
    finite for logits of any magnitude. ``w`` and ``pw`` are constants, as in torch.
    """

    @staticmethod
    def forward(ctx, x, t, w, pw, *, reduction):
        xp = ctx.xp
        log_term = xp.log1p(xp.exp(-xp.abs(x)))
        softplus_neg = xp.maximum(-x, 0.0) + log_term
        log_weight = None if pw is None else 1.0 + (pw - 1.0) * t
        unweighted = xp.maximum(x, 0.0) - x * t + log_term
        if pw is not None:
            unweighted = unweighted + (pw - 1.0) * t * softplus_neg
        loss = unweighted if w is None else unweighted * w
        ctx.reduction = reduction
        ctx.inverse_denominator = _count_inverse(xp, loss.size, x.dtype)
        ctx.save_for_backward(x, t, w, pw, softplus_neg, log_weight)
        return _reduce(xp, loss.astype(x.dtype), reduction, ctx.inverse_denominator)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        x, t, w, pw, softplus_neg, log_weight = ctx.saved
        weighted_scale = _elementwise_scale(xp, g, ctx, x.shape)
        if w is not None:
            weighted_scale = weighted_scale * w
        grad_x = grad_t = None
        if ctx.needs_input_grad[0]:
            factor = 1.0 if log_weight is None else log_weight
            grad_x = weighted_scale * ((1.0 - t) - factor * _stable_sigmoid(xp, -x))
        if ctx.needs_input_grad[1]:
            grad_t = weighted_scale * (-x if pw is None else (pw - 1.0) * softplus_neg - x)
        return grad_x, grad_t, None, None


class BinaryCrossEntropy(Function):
    """``l = -w (t log x + (1 - t) log(1 - x))`` with both logs clamped at -100 and torch's backward
    ``w (x - t) / max(x (1 - x), 1e-12)``, so probabilities of exactly 0 or 1 give finite values. ``w`` is a
    constant, as in torch."""

    @staticmethod
    def forward(ctx, x, t, w, *, reduction):
        xp = ctx.xp
        positive, below_one = x > 0, x < 1
        # The logs are taken of harmless stand-ins where they would be -inf (no warnings, no inf on device).
        log_x = xp.maximum(xp.where(positive, xp.log(xp.where(positive, x, 1.0)), -100.0), -100.0)
        log_1mx = xp.maximum(xp.where(below_one, xp.log1p(-xp.where(below_one, x, 0.0)), -100.0), -100.0)
        unweighted = -(t * log_x + (1.0 - t) * log_1mx)
        loss = unweighted if w is None else unweighted * w
        ctx.reduction = reduction
        ctx.inverse_denominator = _count_inverse(xp, loss.size, x.dtype)
        ctx.save_for_backward(x, t, w, log_x, log_1mx)
        return _reduce(xp, loss.astype(x.dtype), reduction, ctx.inverse_denominator)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        x, t, w, log_x, log_1mx = ctx.saved
        weighted_scale = _elementwise_scale(xp, g, ctx, x.shape)
        if w is not None:
            weighted_scale = weighted_scale * w
        grad_x = grad_t = None
        if ctx.needs_input_grad[0]:
            grad_x = weighted_scale * (x - t) / xp.maximum((1.0 - x) * x, 1e-12)
        if ctx.needs_input_grad[1]:
            grad_t = weighted_scale * (log_1mx - log_x)
        return grad_x, grad_t, None


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Binary cross-entropy on logits, as ``torch.nn.functional.binary_cross_entropy_with_logits``.

    ``l = -w (pw t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))``, computed as
    ``max(x, 0) - x t + log(1 + exp(-|x|))`` (plus the ``pos_weight`` term): finite for logits of any magnitude.

    Parameters
    ----------
    input:
        Logits of any shape.
    target:
        Targets in [0, 1] (soft labels allowed), same shape and dtype as ``input``.
    weight:
        Element weights broadcastable to ``input``.
    pos_weight:
        Weight of the positive term, broadcastable to ``input`` (torch: one entry per class, last dimension).
    reduction:
        ``'none'``, ``'mean'`` (over all elements) or ``'sum'``.

    Gradients flow into ``input`` and ``target``; ``weight`` and ``pos_weight`` are constants, as in torch.
    """
    op = "binary_cross_entropy_with_logits"
    _check_tensor_input(op, "input", input)
    _check_same(op, "target", target, input)
    _check_broadcastable(op, "weight", weight, input)
    _check_broadcastable(op, "pos_weight", pos_weight, input)
    _check_reduction(op, reduction)
    return BinaryCrossEntropyWithLogits.apply(input, target, weight, pos_weight, reduction=reduction)


def binary_cross_entropy(
    input: Tensor, target: Tensor, weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Binary cross-entropy on probabilities, as ``torch.nn.functional.binary_cross_entropy``.

    ``l = -w (t log x + (1 - t) log(1 - x))`` with the logs clamped at -100 as torch does. ``input`` must lie in
    [0, 1]; prefer :func:`binary_cross_entropy_with_logits` on logits, which is exact where this one clamps.
    """
    op = "binary_cross_entropy"
    _check_tensor_input(op, "input", input)
    _check_same(op, "target", target, input)
    _check_broadcastable(op, "weight", weight, input)
    _check_reduction(op, reduction)
    xp = input.backend.xp
    outside = (input.data < 0) | (input.data > 1) | xp.isnan(input.data)
    if bool(xp.any(outside)):
        count = int(xp.sum(outside))
        raise ValueError(
            f"{op}: input must hold probabilities in [0, 1], got {count} element(s) outside (or NaN); "
            "pass logits to binary_cross_entropy_with_logits instead"
        )
    return BinaryCrossEntropy.apply(input, target, weight, reduction=reduction)


# -- margin (hinge) losses ------------------------------------------------------------------------------------
def _margin_loss(op, input, target, p, margin, weight, ignore_index, reduction) -> Tensor:
    """torch's multi-class hinge per position, ``sum_{i != y} w_y max(0, margin - x_y + x_i)^p / K``."""
    axis, classes = _check_common(op, input, target, weight, -100 if ignore_index is None else ignore_index, reduction)
    _check_class_target(op, input, target, axis, classes, ignore_index)
    if p not in (1, 2) or isinstance(p, bool):
        raise ValueError(f"{op}: p must be 1 or 2, got {p!r}")
    margin = _check_real(op, "margin", margin)
    xp = input.backend.xp
    dtype = input.dtype
    valid, safe, w_y = _class_targets(xp, target.data, None if weight is None else weight.data, ignore_index, dtype)
    is_target = _one_hot(xp, safe, axis, classes, input.ndim)
    picked = _sum(input * Tensor(is_target.astype(dtype), input.backend), dim=axis, keepdim=True)
    hinge = relu(input - picked + margin)
    if p == 2:
        hinge = hinge * hinge
    # One constant coefficient folds in: no term for the target class, w_y, ignored positions, and the 1/K.
    coeff = xp.where(is_target, 0.0, xp.expand_dims(w_y / classes, axis=axis)).astype(dtype)
    per_position = _sum(hinge * Tensor(coeff, input.backend), dim=axis)
    return _reduce_tensor(per_position, reduction, xp.sum(valid))


def multi_margin_loss(
    input: Tensor,
    target: Tensor,
    p: int = 1,
    margin: float = 1.0,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Multi-class hinge loss, as ``torch.nn.functional.multi_margin_loss``.

    ``loss_n = sum_{i != y_n} weight[y_n] * max(0, margin - x[n, y_n] + x[n, i])^p / K`` for scores ``(N, K)``
    (or ``(K,)``) and class indices ``(N,)`` (or ``()``); ``p`` is 1 or 2. ``'mean'`` averages over the ``N``
    samples (not over the weights), as torch does. At the kink (``margin - x_y + x_i == 0``) the gradient is 0.
    """
    op = "multi_margin_loss"
    if isinstance(input, Tensor) and input.ndim not in (1, 2):
        raise ValueError(
            f"{op}: input must be (N, K) or (K,), got shape {input.shape}; use pixel_hinge_loss for (N, K, H, W)"
        )
    return _margin_loss(op, input, target, p, margin, weight, None, reduction)


def pixel_hinge_loss(
    input: Tensor,
    target: Tensor,
    p: int = 1,
    margin: float = 1.0,
    weight: Tensor | None = None,
    ignore_index: int = 255,
    reduction: str = "mean",
) -> Tensor:
    """Pixel-wise multi-class hinge loss for segmentation logits ``(N, K, H, W)`` (or ``(N, K, d1, ...)``).

    Each pixel contributes :func:`multi_margin_loss`'s term,
    ``sum_{i != y} weight[y] * max(0, margin - x_y + x_i)^p / K``; pixels whose target is ``ignore_index``
    contribute nothing. ``'mean'`` divides by the number of non-ignored pixels (0.0 when there are none).
    """
    op = "pixel_hinge_loss"
    if isinstance(input, Tensor) and input.ndim < 2:
        raise ValueError(f"{op}: input must be (N, K, H, W) or (N, K, d1, ...), got shape {input.shape}")
    return _margin_loss(op, input, target, p, margin, weight, ignore_index, reduction)


# -- focal losses ---------------------------------------------------------------------------------------------
class SigmoidFocal(Function):
    """torchvision's ``alpha_t * ce * (1 - p_t)^gamma`` with ``ce`` the BCE with logits.

    With ``q = 1 - p_t = p (1 - t) + (1 - p) t`` the gradient is
    ``alpha_t q^gamma ((p - t) + gamma ce (1 - 2t) p (1 - p) / q)``; ``p (1 - p) / q`` lies in [0, 1] and is
    taken as 0 where ``q == 0``, so ``gamma < 1`` does not produce ``0 * inf`` at saturated logits.
    """

    @staticmethod
    def forward(ctx, x, t, *, alpha, gamma, reduction):
        xp = ctx.xp
        p, p_neg = _stable_sigmoid(xp, x), _stable_sigmoid(xp, -x)
        ce = xp.maximum(x, 0.0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))
        q = p * (1.0 - t) + p_neg * t
        q_gamma = q**gamma
        loss = ce * q_gamma
        alpha_t = None
        if alpha >= 0:
            alpha_t = alpha * t + (1.0 - alpha) * (1.0 - t)
            loss = alpha_t * loss
        ctx.gamma, ctx.reduction = gamma, reduction
        ctx.inverse_denominator = _count_inverse(xp, loss.size, x.dtype)
        ctx.save_for_backward(t, p, p_neg, ce, q, q_gamma, alpha_t)
        return _reduce(xp, loss.astype(x.dtype), reduction, ctx.inverse_denominator)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        t, p, p_neg, ce, q, q_gamma, alpha_t = ctx.saved
        positive = q > 0
        ratio = xp.where(positive, p * p_neg / xp.where(positive, q, 1.0), 0.0)
        grad = q_gamma * ((p - t) + ctx.gamma * ce * (1.0 - 2.0 * t) * ratio)
        if alpha_t is not None:
            grad = alpha_t * grad
        return _elementwise_scale(xp, g, ctx, p.shape) * grad, None


class SoftmaxFocal(Function):
    """Lin et al.'s ``-alpha_y (1 - p_y)^gamma log p_y`` on softmax probabilities.

    With ``l = log p_y`` and ``q = 1 - p_y = -expm1(l)``: ``dL/dl = -alpha_y q^gamma (1 - gamma p_y l / q)``
    (``l / q -> -1`` as ``q -> 0``) and ``dl/dx_k = [k == y] - p_k``. Written this way the gradient is finite for
    every ``gamma >= 0`` and logits of any magnitude, where composing ``pow`` would give ``0 * inf``.
    """

    @staticmethod
    def forward(ctx, logits, target, alpha, *, gamma, ignore_index, reduction):
        xp = ctx.xp
        axis = _class_axis(logits.ndim)
        shifted = logits - xp.max(logits, axis=axis, keepdims=True)
        log_p = shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
        valid, safe, alpha_y = _class_targets(xp, target, alpha, ignore_index, logits.dtype)
        log_pt = _pick(xp, log_p, safe, axis)
        q = -xp.expm1(log_pt)
        q_gamma = q**gamma
        per_sample = -alpha_y * q_gamma * log_pt
        ctx.axis, ctx.classes, ctx.gamma, ctx.reduction = axis, logits.shape[axis], gamma, reduction
        ctx.inverse_denominator = _safe_inverse(xp, xp.sum(valid).astype(logits.dtype))
        ctx.save_for_backward(log_p, safe, alpha_y, log_pt, q, q_gamma)
        return _reduce(xp, per_sample.astype(logits.dtype), reduction, ctx.inverse_denominator)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        log_p, safe, alpha_y, log_pt, q, q_gamma = ctx.saved
        axis = ctx.axis
        positive = q > 0
        ratio = xp.where(positive, log_pt / xp.where(positive, q, 1.0), -1.0)
        d_log_pt = -alpha_y * q_gamma * (1.0 - ctx.gamma * xp.exp(log_pt) * ratio)
        scale = _sample_scale(xp, g, ctx, safe.shape) * xp.expand_dims(d_log_pt, axis=axis)
        one_hot = _one_hot(xp, safe, axis, ctx.classes, log_p.ndim)
        grad = scale * (one_hot - xp.exp(log_p))
        return grad.astype(log_p.dtype), None, None


def sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2, reduction: str = "none"
) -> Tensor:
    """Focal loss of Lin et al. on logits, exactly as ``torchvision.ops.sigmoid_focal_loss``.

    ``loss = alpha_t * BCE_with_logits(inputs, targets) * (1 - p_t)^gamma`` with ``p = sigmoid(inputs)``,
    ``p_t = p t + (1 - p)(1 - t)`` and ``alpha_t = alpha t + (1 - alpha)(1 - t)``; a negative ``alpha`` disables
    the weighting. ``reduction`` defaults to ``'none'`` as in torchvision (``'mean'`` averages over all
    elements). ``targets`` (same shape and dtype as ``inputs``) are constants: no gradient flows into them.
    """
    op = "sigmoid_focal_loss"
    _check_tensor_input(op, "inputs", inputs)
    _check_same(op, "targets", targets, inputs)
    alpha = _check_real(op, "alpha", alpha)
    gamma = _check_real(op, "gamma", gamma, minimum=0.0)
    _check_reduction(op, reduction)
    return SigmoidFocal.apply(inputs, targets, alpha=alpha, gamma=gamma, reduction=reduction)


def _class_alpha(op: str, alpha, like: Tensor, classes: int) -> Tensor | None:
    """``alpha`` (None, a number, a sequence of ``classes`` numbers or a ``(classes,)`` Tensor) as a Tensor."""
    if alpha is None:
        return None
    if isinstance(alpha, Tensor):
        if alpha.shape != (classes,):
            raise ValueError(f"{op}: alpha must have shape ({classes},), one entry per class, got {alpha.shape}")
        if alpha.dtype != like.dtype:
            raise TypeError(f"{op}: alpha has dtype {alpha.dtype} but input has dtype {like.dtype}")
        return alpha
    if isinstance(alpha, (numbers.Real, np.number)) and not isinstance(alpha, (bool, np.bool_)):
        values = [_check_real(op, "alpha", alpha, minimum=0.0)] * classes
    elif isinstance(alpha, Sequence) and not isinstance(alpha, str):
        if len(alpha) != classes:
            raise ValueError(f"{op}: alpha must list one weight per class ({classes}), got {len(alpha)}: {alpha!r}")
        values = [_check_real(op, f"alpha[{i}]", a, minimum=0.0) for i, a in enumerate(alpha)]
    else:
        raise TypeError(
            f"{op}: alpha must be None, a number, a sequence of {classes} numbers or a Tensor, got {alpha!r}"
        )
    return Tensor(like.backend.asarray(np.asarray(values, dtype=like.dtype)), like.backend)


def softmax_focal_loss(
    input: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    alpha=None,
    ignore_index: int = 255,
    reduction: str = "mean",
) -> Tensor:
    """Multi-class focal loss of Lin et al. for segmentation logits ``(N, K, H, W)`` (or ``(N, K, ...)``, ``(N, K)``).

    ``FL = -alpha_y (1 - p_y)^gamma log p_y`` with ``p = softmax(input, dim=1)``; ``gamma = 0`` and no ``alpha``
    give cross-entropy. Pixels whose target is ``ignore_index`` contribute nothing.

    Parameters
    ----------
    alpha:
        Per-class weights: ``None`` (all 1), a number (the same for every class), a sequence of ``K`` numbers or
        a ``(K,)`` Tensor (a constant: no gradient flows into it).
    reduction:
        ``'none'`` (0 at ignored pixels), ``'sum'``, or ``'mean'`` over the non-ignored pixels (not weighted
        by ``alpha``; 0.0 with a zero gradient when every pixel is ignored).
    """
    op = "softmax_focal_loss"
    axis, classes = _check_common(op, input, target, None, ignore_index, reduction)
    _check_class_target(op, input, target, axis, classes, ignore_index)
    gamma = _check_real(op, "gamma", gamma, minimum=0.0)
    alpha = _class_alpha(op, alpha, input, classes)
    return SoftmaxFocal.apply(
        input, target, alpha, gamma=gamma, ignore_index=int(ignore_index), reduction=reduction
    )


# -- regression -----------------------------------------------------------------------------------------------
def _check_regression(op: str, input, target, reduction) -> None:
    _check_tensor_input(op, "input", input)
    _check_same(op, "target", target, input)
    _check_reduction(op, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error ``|input - target|``, as ``torch.nn.functional.l1_loss`` (gradient 0 where equal).

    ``target`` must have ``input``'s shape and dtype (torch broadcasts with a warning; segcore refuses).
    """
    _check_regression("l1_loss", input, target, reduction)
    return _reduce_tensor(_abs(input - target), reduction)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Squared error ``(input - target)^2``, as ``torch.nn.functional.mse_loss``."""
    _check_regression("mse_loss", input, target, reduction)
    difference = input - target
    return _reduce_tensor(difference * difference, reduction)


def smooth_l1_loss(input: Tensor, target: Tensor, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """Huber-like loss of Fast R-CNN, as ``torch.nn.functional.smooth_l1_loss``.

    ``0.5 d^2 / beta`` where ``|d| < beta`` and ``|d| - 0.5 beta`` elsewhere, ``d = input - target``;
    ``beta = 0`` is :func:`l1_loss`.
    """
    op = "smooth_l1_loss"
    _check_regression(op, input, target, reduction)
    beta = _check_real(op, "beta", beta, minimum=0.0)
    difference = input - target
    magnitude = _abs(difference)
    if beta == 0:
        return _reduce_tensor(magnitude, reduction)
    quadratic = Tensor(magnitude.data < beta, input.backend)
    loss = where(quadratic, difference * difference * (0.5 / beta), magnitude - 0.5 * beta)
    return _reduce_tensor(loss, reduction)


# -- helpers for the set-based losses of segcore.losses -------------------------------------------------------
class VectorNorm(Function):
    """Euclidean norm along one axis; its gradient ``x / ||x||`` is taken as 0 where the norm is 0.

    Composing ``sqrt(sum(x * x))`` would give ``0 / 0`` in backward at a zero vector, which the
    discriminative loss meets whenever a pixel sits exactly on its cluster mean (a one-pixel instance).
    """

    @staticmethod
    def forward(ctx, x, *, axis):
        norm = ctx.xp.sqrt(ctx.xp.sum(x * x, axis=axis))
        ctx.axis = axis
        ctx.save_for_backward(x, norm)
        return norm

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        x, norm = ctx.saved
        norm = xp.expand_dims(norm, axis=ctx.axis)
        positive = norm > 0
        unit = x / xp.where(positive, norm, 1.0)
        return xp.where(positive, xp.expand_dims(g, axis=ctx.axis) * unit, 0.0).astype(x.dtype)


def connected_zero(like: Tensor) -> Tensor:
    """A scalar 0 that belongs to ``like``'s graph: ``backward()`` works and gives ``like`` a zero gradient.

    Used for losses that are defined as 0 on an empty set (all pixels ignored, no instance), so that a
    training step on such a batch runs instead of failing on a loss that does not require grad.
    """
    xp = like.backend.xp
    nothing = Tensor(xp.zeros(like.shape, dtype=bool), like.backend)
    return _sum(where(nothing, like, 0.0))
