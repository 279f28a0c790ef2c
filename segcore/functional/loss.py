"""Classification losses with ``torch.nn.functional`` semantics: cross_entropy and nll_loss.

Both take scores ``(N, K)`` or ``(N, K, d1, d2, ...)`` (or unbatched ``(K,)``) with the class axis second, and
integer class targets of the remaining shape. :func:`cross_entropy` also takes torch's probability targets
(a floating target of the input's shape). Class weights are constants: no gradient flows into ``weight``.

One deliberate departure from torch: when ``reduction='mean'`` and the total weight of the non-ignored
targets is zero (every pixel carries ``ignore_index``, only zero-weight classes occur, or the batch is empty),
torch divides 0 by 0 and returns NaN. segcore returns 0.0 with a zero gradient, so that a crop containing
only "void" pixels cannot poison a training run.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function, Tensor
from ._utils import check_floating

__all__ = ["cross_entropy", "nll_loss"]

_REDUCTIONS = ("none", "mean", "sum")


def _class_axis(ndim: int) -> int:
    return 0 if ndim == 1 else 1


def _class_view(ndim: int, axis: int, classes: int) -> tuple[int, ...]:
    view = [1] * ndim
    view[axis] = classes
    return tuple(view)


def _class_targets(xp, target, weight, ignore_index: int, dtype):
    """``(valid, safe, w_y)``: non-ignored mask, targets with ignored entries set to class 0, target weights."""
    # int64 whatever the label dtype (uint8 label maps): comparing with a negative ignore_index must not wrap.
    target = target.astype(np.int64)
    valid = target != ignore_index
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


def _check_class_target(op: str, input: Tensor, target: Tensor, axis: int, classes: int, ignore_index: int) -> None:
    expected = input.shape[:axis] + input.shape[axis + 1 :]
    if np.dtype(target.dtype).kind not in "iu":
        raise TypeError(f"{op}: class targets must have an integer dtype (int64), got {target.dtype}")
    if target.shape != expected:
        raise ValueError(
            f"{op}: target shape {target.shape} does not match input shape {input.shape}: expected {expected} "
            "(the input's shape without the class dimension)"
        )
    xp = target.backend.xp
    t = target.data.astype(np.int64)
    bad = ((t < 0) | (t >= classes)) & (t != ignore_index)
    if bool(xp.any(bad)):
        host = target.backend.to_numpy(t)[target.backend.to_numpy(bad)]
        raise ValueError(
            f"{op}: target contains class {int(host[0])} outside [0, {classes}) for input with {classes} classes "
            f"({host.size} such entries), and it is not ignore_index={ignore_index}"
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
