"""Reference normalisation kernels (batch, group and layer norm) with closed-form backward.

All three norms standardise ``x`` over a set of ``M`` elements, ``xhat = (x - mean) * invstd`` with the biased
variance, then apply a per-channel (or per-element) affine map. Their input gradients share one closed form:
with ``dxhat = grad_output * weight``,

    dx = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))      (means over the normalised set)

so backward costs a few element-wise passes and never differentiates through the mean and variance
step by step. Kernels return ``None`` for gradients that were not asked for (``needs``), so a frozen
``weight`` costs nothing.
"""

from __future__ import annotations

from typing import Callable

__all__ = [
    "batch_norm_forward_training",
    "batch_norm_forward_inference",
    "batch_norm_backward",
    "group_norm_forward",
    "group_norm_backward",
    "layer_norm_forward",
    "layer_norm_backward",
    "KERNELS",
]


def _channel_view(shape: tuple[int, ...]) -> tuple[int, ...]:
    # (C,) parameters broadcast against (N, C, *spatial) as (1, C, 1, ..., 1).
    return (1, shape[1]) + (1,) * (len(shape) - 2)


def _affine(xp, xhat, weight, bias, view: tuple[int, ...]):
    out = xhat
    if weight is not None:
        out = out * xp.reshape(weight, view)
    if bias is not None:
        out = out + xp.reshape(bias, view)
    return out


def _standardised_backward(xp, dxhat, xhat, invstd, axes: tuple[int, ...]):
    """Input gradient of ``xhat = (x - mean(x)) * invstd`` with batch statistics, given ``dL/dxhat``."""
    mean_d = xp.mean(dxhat, axis=axes, keepdims=True)
    mean_dx = xp.mean(dxhat * xhat, axis=axes, keepdims=True)
    return invstd * (dxhat - mean_d - xhat * mean_dx)


# -- batch norm -----------------------------------------------------------------------------------------------
def batch_norm_forward_training(xp, x, weight, bias, *, eps: float):
    """Normalise ``x`` (N, C, *) with its own per-channel statistics.

    Returns ``(out, mean, var, invstd)`` where ``mean``, ``var`` (biased) and ``invstd = 1/sqrt(var + eps)``
    have shape (C,).
    """
    axes = (0,) + tuple(range(2, x.ndim))
    view = _channel_view(x.shape)
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    # Two passes (mean, then mean of squared deviations) avoid the cancellation of E[x^2] - E[x]^2.
    var = xp.mean(centred * centred, axis=axes, keepdims=True)
    invstd = 1.0 / xp.sqrt(var + eps)
    out = _affine(xp, centred * invstd, weight, bias, view)
    return out, xp.reshape(mean, (x.shape[1],)), xp.reshape(var, (x.shape[1],)), xp.reshape(invstd, (x.shape[1],))


def batch_norm_forward_inference(xp, x, running_mean, running_var, weight, bias, *, eps: float):
    """Normalise ``x`` (N, C, *) with given statistics. Returns ``(out, invstd)``, ``invstd`` of shape (C,)."""
    view = _channel_view(x.shape)
    invstd = 1.0 / xp.sqrt(running_var + eps)
    xhat = (x - xp.reshape(running_mean, view)) * xp.reshape(invstd, view)
    return _affine(xp, xhat, weight, bias, view), invstd


def batch_norm_backward(
    xp, grad_output, x, mean, invstd, weight, *, training: bool, needs: tuple[bool, bool, bool] = (True, True, True)
):
    """Gradients ``(grad_input, grad_weight, grad_bias)`` of batch norm; ``None`` where ``needs`` is false.

    ``mean``/``invstd`` (C,) are the statistics the forward used: the batch's when ``training`` (they then
    depend on ``x``), the running ones otherwise (constants, so ``grad_input`` is a per-channel scaling).
    """
    axes = (0,) + tuple(range(2, x.ndim))
    view = _channel_view(x.shape)
    invstd_b = xp.reshape(invstd, view)
    xhat = (x - xp.reshape(mean, view)) * invstd_b
    grad_input = grad_weight = grad_bias = None
    if needs[0]:
        dxhat = grad_output if weight is None else grad_output * xp.reshape(weight, view)
        if training:
            grad_input = _standardised_backward(xp, dxhat, xhat, invstd_b, axes)
        else:
            grad_input = dxhat * invstd_b
    if needs[1]:
        grad_weight = xp.sum(grad_output * xhat, axis=axes)
    if needs[2]:
        grad_bias = xp.sum(grad_output, axis=axes)
    return grad_input, grad_weight, grad_bias


# -- group norm -----------------------------------------------------------------------------------------------
def _grouped_shape(shape: tuple[int, ...], num_groups: int) -> tuple[int, int, int]:
    # Explicit group size instead of -1: reshape cannot infer -1 when the batch is empty.
    size = 1
    for n in shape[1:]:
        size *= n
    return (shape[0], num_groups, size // num_groups)


def group_norm_forward(xp, x, weight, bias, *, num_groups: int, eps: float):
    """Normalise each group of ``C // num_groups`` channels of ``x`` (N, C, *) per sample.

    Returns ``(out, mean, invstd)`` with ``mean``/``invstd`` of shape (N, num_groups).
    """
    grouped = xp.reshape(x, _grouped_shape(x.shape, num_groups))
    mean = xp.mean(grouped, axis=2, keepdims=True)
    centred = grouped - mean
    var = xp.mean(centred * centred, axis=2, keepdims=True)
    invstd = 1.0 / xp.sqrt(var + eps)
    xhat = xp.reshape(centred * invstd, x.shape)
    out = _affine(xp, xhat, weight, bias, _channel_view(x.shape))
    return out, mean[:, :, 0], invstd[:, :, 0]


def group_norm_backward(
    xp, grad_output, x, mean, invstd, weight, *, num_groups: int, needs: tuple[bool, bool, bool] = (True, True, True)
):
    """Gradients ``(grad_input, grad_weight, grad_bias)`` of group norm; ``None`` where ``needs`` is false."""
    grouped_shape = _grouped_shape(x.shape, num_groups)
    view = _channel_view(x.shape)
    mean_b = mean[:, :, None]
    invstd_b = invstd[:, :, None]
    xhat = (xp.reshape(x, grouped_shape) - mean_b) * invstd_b
    axes = (0,) + tuple(range(2, x.ndim))
    grad_input = grad_weight = grad_bias = None
    if needs[0]:
        dxhat = grad_output if weight is None else grad_output * xp.reshape(weight, view)
        grad = _standardised_backward(xp, xp.reshape(dxhat, grouped_shape), xhat, invstd_b, (2,))
        grad_input = xp.reshape(grad, x.shape)
    if needs[1]:
        grad_weight = xp.sum(grad_output * xp.reshape(xhat, x.shape), axis=axes)
    if needs[2]:
        grad_bias = xp.sum(grad_output, axis=axes)
    return grad_input, grad_weight, grad_bias


# -- layer norm -----------------------------------------------------------------------------------------------
def layer_norm_forward(xp, x, weight, bias, *, normalized_ndim: int, eps: float):
    """Normalise ``x`` over its last ``normalized_ndim`` dimensions; ``weight``/``bias`` have those dims' shape.

    Returns ``(out, mean, invstd)`` with ``mean``/``invstd`` keeping the reduced dimensions as size 1.
    """
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    var = xp.mean(centred * centred, axis=axes, keepdims=True)
    invstd = 1.0 / xp.sqrt(var + eps)
    out = centred * invstd
    # weight/bias of shape normalized_shape broadcast against the trailing dimensions as they are.
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out, mean, invstd


def layer_norm_backward(
    xp,
    grad_output,
    x,
    mean,
    invstd,
    weight,
    *,
    normalized_ndim: int,
    needs: tuple[bool, bool, bool] = (True, True, True),
):
    """Gradients ``(grad_input, grad_weight, grad_bias)`` of layer norm; ``None`` where ``needs`` is false."""
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    leading = tuple(range(x.ndim - normalized_ndim))
    xhat = (x - mean) * invstd
    grad_input = grad_weight = grad_bias = None
    if needs[0]:
        dxhat = grad_output if weight is None else grad_output * weight
        grad_input = _standardised_backward(xp, dxhat, xhat, invstd, axes)
    if needs[1]:
        grad_weight = xp.sum(grad_output * xhat, axis=leading)
    if needs[2]:
        grad_bias = xp.sum(grad_output, axis=leading)
    return grad_input, grad_weight, grad_bias


KERNELS: dict[str, Callable] = {
    "batch_norm_forward_training": batch_norm_forward_training,
    "batch_norm_forward_inference": batch_norm_forward_inference,
    "batch_norm_backward": batch_norm_backward,
    "group_norm_forward": group_norm_forward,
    "group_norm_backward": group_norm_backward,
    "layer_norm_forward": layer_norm_forward,
    "layer_norm_backward": layer_norm_backward,
}
