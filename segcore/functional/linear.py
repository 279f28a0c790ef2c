"""Fully connected layer op: ``linear(input, weight, bias=None)`` = ``input @ weight.T + bias``."""

from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor

__all__ = ["linear"]


class Linear(Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        xp = ctx.xp
        # Each gradient needs only the other operand: keep x for the weight's, weight for the input's.
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight if ctx.needs_input_grad[0] else None)
        out = xp.matmul(x, weight.T)
        return out if bias is None else out + bias

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        x, weight = ctx.saved
        out_features = g.shape[-1]
        # Leading dims of any number fold into one row axis for the weight and bias reductions.
        rows = g.reshape(-1, out_features)
        gx = xp.matmul(g, weight) if ctx.needs_input_grad[0] else None
        gw = xp.matmul(rows.T, x.reshape(-1, x.shape[-1])) if ctx.needs_input_grad[1] else None
        gb = xp.sum(rows, axis=0) if ctx.needs_input_grad[2] else None
        return gx, gw, gb


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y = input @ weight.T + bias`` over the last dimension of ``input``.

    Parameters
    ----------
    input:
        ``(*, in_features)``; any number of leading dimensions (including none).
    weight:
        ``(out_features, in_features)``.
    bias:
        ``(out_features,)`` or ``None``.

    Returns
    -------
    Tensor of shape ``(*, out_features)``. All tensors must share one dtype, as in torch.
    """
    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"linear: {name} must be a Tensor, got {type(t).__name__}")
    if input is None or weight is None:
        raise TypeError("linear: input and weight are required Tensors")
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input shape {input.shape} must end in in_features = {weight.shape[1]} "
            f"(weight shape {weight.shape})"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(
            f"linear: bias must have shape ({weight.shape[0]},) to match weight {weight.shape}, got {bias.shape}"
        )
    given = [(n, t) for n, t in (("input", input), ("weight", weight), ("bias", bias)) if t is not None]
    if len({np.dtype(t.dtype) for _, t in given}) != 1 or np.dtype(input.dtype).kind != "f":
        found = ", ".join(f"{n}={t.dtype}" for n, t in given)
        raise TypeError(f"linear: input, weight and bias must share one floating dtype, got {found}")
    return Linear.apply(input, weight, bias)
