"""Adam (with optional L2 weight decay and AMSGrad) and AdamW (decoupled weight decay)."""

from __future__ import annotations

from typing import Any

from ..autograd import Tensor
from .optimizer import Optimizer, ParamsT, _check_bool, _check_non_negative, _check_real

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam, ``torch.optim.Adam`` semantics.

    For each parameter ``p`` with gradient ``g``, at step ``t`` (counted per parameter from 1)::

        g = -g                                      if maximize
        g = g + weight_decay * p                    (L2; AdamW decays p instead)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)                       if amsgrad (v_max replaces v below)
        denom = sqrt(v) / sqrt(1 - beta2**t) + eps
        p = p - lr / (1 - beta1**t) * m / denom

    Parameters
    ----------
    params:
        Parameters, or param-group dicts.
    lr:
        Learning rate (>= 0).
    betas:
        Decay rates ``(beta1, beta2)`` of the first and second moment estimates, each in ``[0, 1)``.
    eps:
        Added to the denominator for numerical stability (>= 0).
    weight_decay:
        L2 penalty coefficient (>= 0), added to the gradient.
    amsgrad:
        Use the running maximum of the second moment (AMSGrad).
    maximize:
        Ascend the objective instead of descending it.
    """

    # AdamW flips this: decay multiplies the parameter instead of entering the gradient.
    _decoupled_weight_decay = False

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        owner = type(self).__name__
        _check_non_negative(owner, "lr", group["lr"], where)
        _check_non_negative(owner, "eps", group["eps"], where)
        _check_non_negative(owner, "weight_decay", group["weight_decay"], where)
        _check_bool(owner, "amsgrad", group["amsgrad"], where)
        _check_bool(owner, "maximize", group["maximize"], where)
        betas = group["betas"]
        prefix = f"{owner} {where}" if where else owner
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{prefix}: betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            value = _check_real(owner, f"betas[{i}]", beta, where)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{prefix}: betas[{i}] must be in [0, 1), got {beta!r}")

    def _update_group(self, group: dict[str, Any], pairs: list[tuple[Tensor, Any]]) -> None:
        # Python floats keep the arrays' dtype (a NumPy float64 scalar would promote float32 under NEP 50).
        lr = float(group["lr"])
        beta1, beta2 = (float(beta) for beta in group["betas"])
        eps = float(group["eps"])
        weight_decay = float(group["weight_decay"])
        amsgrad = group["amsgrad"]
        for p, grad in pairs:
            xp = p.backend.xp
            if group["maximize"]:
                grad = -grad
            state = self.state.setdefault(p, {})
            if not state:
                state["step"] = 0
                state["exp_avg"] = xp.zeros_like(p.data)
                state["exp_avg_sq"] = xp.zeros_like(p.data)
            step = state["step"] + 1
            state["step"] = step

            param = p.data
            if weight_decay != 0:
                if self._decoupled_weight_decay:
                    param = param * (1 - lr * weight_decay)
                else:
                    grad = grad + weight_decay * param

            exp_avg = beta1 * state["exp_avg"] + (1 - beta1) * grad
            exp_avg_sq = beta2 * state["exp_avg_sq"] + (1 - beta2) * (grad * grad)
            state["exp_avg"] = exp_avg
            state["exp_avg_sq"] = exp_avg_sq

            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            if amsgrad:
                # A group switched to amsgrad mid-run starts its maximum from the current estimate.
                previous = state.get("max_exp_avg_sq")
                second = exp_avg_sq.copy() if previous is None else xp.maximum(previous, exp_avg_sq)
                state["max_exp_avg_sq"] = second
            else:
                second = exp_avg_sq
            denom = xp.sqrt(second) / bias_correction2_sqrt + eps
            p.data = param - (lr / bias_correction1) * (exp_avg / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay, ``torch.optim.AdamW`` semantics.

    Before the Adam update (which then uses no L2 term) each parameter is shrunk: ``p = p * (1 - lr *
    weight_decay)``. Parameters as :class:`Adam`, with ``weight_decay`` defaulting to ``1e-2``.
    """

    _decoupled_weight_decay = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)
