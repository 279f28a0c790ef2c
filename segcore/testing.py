"""Public test helpers for segcore developers and plugin authors.

:func:`gradcheck` compares backprop with central differences in float64 along random directions (Chainer's
``check_backward``): two forward passes per direction, not two per element, so it scales to conv-sized
inputs.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .autograd import Tensor, no_grad

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """Backprop and finite differences disagree; the message gives both values."""


def _outputs(result) -> tuple[Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def gradcheck(
    fn: Callable[..., Tensor | tuple[Tensor, ...]],
    inputs: Sequence[Tensor],
    *,
    rng: np.random.Generator | None = None,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-4,
    directions: int = 2,
) -> None:
    """Check ``fn``'s gradients with respect to every input that requires grad.

    For a random output weighting ``w`` and random input direction ``v``, backprop gives
    ``sum_i <dL/dx_i, v_i>`` with ``L = sum(w * fn(x))``; central differences give
    ``(L(x + eps v) - L(x - eps v)) / (2 eps)``. Inputs must be float64 for the difference quotient to be
    meaningful; raises :class:`GradcheckError` on disagreement.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    inputs = list(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} must be float64 for finite differences, got {inputs[i].dtype}")

    outputs = _outputs(fn(*inputs))
    weights = [rng.standard_normal(o.shape) for o in outputs]

    def weighted_sum(outs) -> float:
        return float(sum(np.sum(o.numpy().astype(np.float64) * w) for o, w in zip(outs, weights)))

    # Analytic: backprop the weighting through every differentiable output at once.
    for i in checked:
        inputs[i].grad = None
    loss = None
    for o, w in zip(outputs, weights):
        if not o.requires_grad:
            continue
        term = (o * Tensor(o.backend.asarray(w.astype(o.dtype)), o.backend)).sum()
        loss = term if loss is None else loss + term
    if loss is None:
        raise GradcheckError("gradcheck: no output requires grad although an input does")
    loss.backward()
    grads = {}
    for i in checked:
        g = inputs[i].grad
        grads[i] = np.zeros(inputs[i].shape) if g is None else g.numpy()

    for d in range(directions):
        direction = {i: rng.standard_normal(inputs[i].shape) for i in checked}
        analytic = sum(float(np.sum(grads[i] * direction[i])) for i in checked)

        def shifted(sign: float) -> float:
            moved = list(inputs)
            for i in checked:
                x = inputs[i]
                moved[i] = Tensor(x.backend.asarray(x.numpy() + sign * eps * direction[i]), x.backend)
            with no_grad():
                return weighted_sum(_outputs(fn(*moved)))

        numeric = (shifted(+1.0) - shifted(-1.0)) / (2 * eps)
        if not np.isclose(analytic, numeric, atol=atol, rtol=rtol):
            raise GradcheckError(
                f"gradcheck failed (direction {d}): backprop gives {analytic!r}, "
                f"central differences give {numeric!r} (|diff| = {abs(analytic - numeric):.3g})"
            )
