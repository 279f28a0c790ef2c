"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay."""

from __future__ import annotations

from typing import Any

from ..autograd import Tensor
from .optimizer import Optimizer, ParamsT, _check_bool, _check_non_negative, _check_real

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent, ``torch.optim.SGD`` semantics.

    For each parameter ``p`` with gradient ``g``::

        g = -g                                  if maximize
        g = g + weight_decay * p
        buf = g                                 on the first step (no dampening)
        buf = momentum * buf + (1 - dampening) * g   afterwards
        g = g + momentum * buf  if nesterov  else  buf      (when momentum != 0)
        p = p - lr * g

    Parameters
    ----------
    params:
        Parameters, or param-group dicts.
    lr:
        Learning rate (>= 0).
    momentum:
        Momentum factor (>= 0); 0 disables the buffer.
    dampening:
        Dampening of the gradient added to the momentum buffer.
    weight_decay:
        L2 penalty coefficient (>= 0), added to the gradient.
    nesterov:
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    maximize:
        Ascend the objective instead of descending it.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        owner = type(self).__name__
        _check_non_negative(owner, "lr", group["lr"], where)
        momentum = _check_non_negative(owner, "momentum", group["momentum"], where)
        dampening = _check_real(owner, "dampening", group["dampening"], where)
        _check_non_negative(owner, "weight_decay", group["weight_decay"], where)
        nesterov = _check_bool(owner, "nesterov", group["nesterov"], where)
        _check_bool(owner, "maximize", group["maximize"], where)
        if nesterov and (momentum <= 0 or dampening != 0):
            prefix = f"{owner} {where}" if where else owner
            raise ValueError(
                f"{prefix}: nesterov=True needs momentum > 0 and dampening == 0, "
                f"got momentum={group['momentum']!r}, dampening={group['dampening']!r}"
            )

    def _update_group(self, group: dict[str, Any], pairs: list[tuple[Tensor, Any]]) -> None:
        # Python floats keep the arrays' dtype (a NumPy float64 scalar would promote float32 under NEP 50).
        lr = float(group["lr"])
        momentum = float(group["momentum"])
        dampening = float(group["dampening"])
        weight_decay = float(group["weight_decay"])
        nesterov = group["nesterov"]
        for p, grad in pairs:
            if group["maximize"]:
                grad = -grad
            if weight_decay != 0:
                grad = grad + weight_decay * p.data
            if momentum != 0:
                state = self.state.setdefault(p, {})
                buf = state.get("momentum_buffer")
                # The first buffer is a copy: the gradient array may be edited by the caller afterwards.
                buf = grad.copy() if buf is None else momentum * buf + (1 - dampening) * grad
                state["momentum_buffer"] = buf
                grad = grad + momentum * buf if nesterov else buf
            # A new array rather than an in-place edit: a graph retained for a second backward still holds
            # the old values, and backends with immutable arrays work unchanged.
            p.data = p.data - lr * grad
