"""Normalisation ops with ``torch.nn.functional`` semantics: batch_norm, group_norm, layer_norm.

The maths (forward and the closed-form backward) lives in the ``norm`` kernel family
(:mod:`segcore.kernels.norm`), looked up through ``ctx.kernel`` so that backends can override it.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function, Tensor
from ..errors import BackendMismatchError
from ._utils import check_floating

__all__ = ["batch_norm", "group_norm", "layer_norm"]


class BatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, *, running_mean, running_var, training, momentum, eps):
        xp = ctx.xp
        if training:
            out, mean, var, invstd = ctx.kernel("batch_norm_forward_training")(xp, x, weight, bias, eps=eps)
            if running_mean is not None:
                _update_running_stats(xp, running_mean, running_var, mean, var, x, momentum)
        else:
            mean = running_mean.data.astype(x.dtype)
            out, invstd = ctx.kernel("batch_norm_forward_inference")(
                xp, x, mean, running_var.data.astype(x.dtype), weight, bias, eps=eps
            )
        ctx.training = training
        ctx.save_for_backward(x, mean, invstd, weight)
        return out

    @staticmethod
    def backward(ctx, g):
        x, mean, invstd, weight = ctx.saved
        return ctx.kernel("batch_norm_backward")(
            ctx.xp, g, x, mean, invstd, weight, training=ctx.training, needs=ctx.needs_input_grad
        )


def _update_running_stats(xp, running_mean: Tensor, running_var: Tensor, mean, var, x, momentum: float) -> None:
    # torch's rule: the running variance tracks the unbiased batch variance although normalisation uses the
    # biased one. The buffers' arrays are replaced, not written into: an array may be shared or read-only.
    count = x.size // x.shape[1]
    unbiased = var * (count / (count - 1))
    running_mean.data = ((1.0 - momentum) * running_mean.data + momentum * mean.astype(running_mean.dtype)).astype(
        running_mean.dtype
    )
    running_var.data = ((1.0 - momentum) * running_var.data + momentum * unbiased.astype(running_var.dtype)).astype(
        running_var.dtype
    )


class GroupNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, *, num_groups, eps):
        out, mean, invstd = ctx.kernel("group_norm_forward")(ctx.xp, x, weight, bias, num_groups=num_groups, eps=eps)
        ctx.num_groups = num_groups
        ctx.save_for_backward(x, mean, invstd, weight)
        return out

    @staticmethod
    def backward(ctx, g):
        x, mean, invstd, weight = ctx.saved
        return ctx.kernel("group_norm_backward")(
            ctx.xp, g, x, mean, invstd, weight, num_groups=ctx.num_groups, needs=ctx.needs_input_grad
        )


class LayerNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, *, normalized_ndim, eps):
        out, mean, invstd = ctx.kernel("layer_norm_forward")(
            ctx.xp, x, weight, bias, normalized_ndim=normalized_ndim, eps=eps
        )
        ctx.normalized_ndim = normalized_ndim
        ctx.save_for_backward(x, mean, invstd, weight)
        return out

    @staticmethod
    def backward(ctx, g):
        x, mean, invstd, weight = ctx.saved
        return ctx.kernel("layer_norm_backward")(
            ctx.xp, g, x, mean, invstd, weight, normalized_ndim=ctx.normalized_ndim, needs=ctx.needs_input_grad
        )


# -- validation -----------------------------------------------------------------------------------------------
def _check_input(op: str, input, min_ndim: int, what: str) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim < min_ndim:
        raise ValueError(f"{op}: input must have at least {min_ndim} dimensions ({what}), got shape {input.shape}")
    check_floating(input, f"{op}: input")


def _check_param(op: str, name: str, value, input: Tensor, shape: tuple[int, ...]) -> None:
    if value is None:
        return
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(value).__name__}")
    if value.shape != shape:
        raise ValueError(f"{op}: {name} must have shape {shape} for input of shape {input.shape}, got {value.shape}")
    if value.dtype != input.dtype:
        raise TypeError(f"{op}: {name} has dtype {value.dtype} but input has dtype {input.dtype}; cast one of them")


def _check_eps(op: str, eps) -> float:
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"{op}: eps must be a non-negative number, got {eps!r}")
    return float(eps)


def _check_running(op: str, name: str, value, input: Tensor) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(value).__name__}")
    channels = input.shape[1]
    if value.shape != (channels,):
        raise ValueError(
            f"{op}: {name} must have shape ({channels},) for input of shape {input.shape}, got {value.shape}"
        )
    check_floating(value, f"{op}: {name}")
    if value.backend is not input.backend:
        raise BackendMismatchError(
            f"{op}: {name} lives on backend {value.backend.name!r} but input on {input.backend.name!r}; "
            f"move it with .to({input.backend.name!r}) first"
        )


# -- public API -----------------------------------------------------------------------------------------------
def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalisation over ``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``, ... inputs, per channel ``C``.

    ``training=True`` normalises with the batch's mean and biased variance and, when running statistics are
    given, updates them in place (their ``.data`` is replaced):
    ``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* batch variance, as torch
    does. ``training=False`` normalises with ``running_mean``/``running_var``. Running statistics are buffers,
    never part of the autograd graph.

    ``momentum=None`` (torch's cumulative average) needs a batch counter, which a functional call does not
    have: the layer computes ``1 / num_batches_tracked`` and passes it as ``momentum``.
    """
    op = "batch_norm"
    _check_input(op, input, 2, "(N, C, *)")
    channels = input.shape[1]
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: running_mean and running_var must both be given or both be None")
    if running_mean is not None:
        _check_running(op, "running_mean", running_mean, input)
        _check_running(op, "running_var", running_var, input)
    elif not training:
        raise ValueError(f"{op}: running_mean and running_var are required when training=False, got None")
    _check_param(op, "weight", weight, input, (channels,))
    _check_param(op, "bias", bias, input, (channels,))
    if momentum is None:
        raise ValueError(
            f"{op}: momentum=None (cumulative moving average) needs a count of batches seen, which the functional "
            "op does not track; pass momentum=1/num_batches_tracked instead"
        )
    if not isinstance(momentum, numbers.Real) or isinstance(momentum, bool) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"{op}: momentum must be a number in [0, 1], got {momentum!r}")
    eps = _check_eps(op, eps)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{op}: training must be a bool, got {type(training).__name__}")
    if training and input.numel() // max(channels, 1) <= 1:
        raise ValueError(
            f"{op}: training needs more than 1 value per channel to compute a variance, got input shape {input.shape}"
        )
    return BatchNorm.apply(
        input,
        weight,
        bias,
        running_mean=running_mean,
        running_var=running_var,
        training=bool(training),
        momentum=float(momentum),
        eps=eps,
    )


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Group normalisation: per sample, normalise each of ``num_groups`` groups of consecutive channels.

    ``input`` is ``(N, C, *)`` with ``C`` divisible by ``num_groups``; ``weight``/``bias`` are per channel (C,).
    """
    op = "group_norm"
    _check_input(op, input, 2, "(N, C, *)")
    channels = input.shape[1]
    if not isinstance(num_groups, numbers.Integral) or isinstance(num_groups, bool) or num_groups < 1:
        raise ValueError(f"{op}: num_groups must be a positive int, got {num_groups!r}")
    if channels % num_groups:
        raise ValueError(
            f"{op}: number of channels {channels} (input shape {input.shape}) is not divisible by "
            f"num_groups={num_groups}"
        )
    _check_param(op, "weight", weight, input, (channels,))
    _check_param(op, "bias", bias, input, (channels,))
    return GroupNorm.apply(input, weight, bias, num_groups=int(num_groups), eps=_check_eps(op, eps))


def layer_norm(
    input: Tensor,
    normalized_shape: int | tuple[int, ...] | list[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Layer normalisation over the trailing dimensions ``normalized_shape`` of ``input``.

    ``weight``/``bias`` (element-wise affine) have shape ``normalized_shape``.
    """
    op = "layer_norm"
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        normalized_shape = (int(normalized_shape),)
    elif isinstance(normalized_shape, (tuple, list)) and all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in normalized_shape
    ):
        normalized_shape = tuple(int(n) for n in normalized_shape)
    else:
        raise ValueError(f"{op}: normalized_shape must be an int or a sequence of ints, got {normalized_shape!r}")
    if not normalized_shape:
        raise ValueError(f"{op}: normalized_shape must name at least one dimension, got ()")
    _check_input(op, input, len(normalized_shape), f"ending in normalized_shape={normalized_shape}")
    if input.shape[-len(normalized_shape) :] != normalized_shape:
        raise ValueError(
            f"{op}: input shape {input.shape} does not end in normalized_shape={normalized_shape}"
        )
    _check_param(op, "weight", weight, input, normalized_shape)
    _check_param(op, "bias", bias, input, normalized_shape)
    return LayerNorm.apply(input, weight, bias, normalized_ndim=len(normalized_shape), eps=_check_eps(op, eps))
