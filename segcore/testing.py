"""Public test helpers for segcore developers and plugin authors.

:func:`gradcheck` compares backprop with central differences in float64 along random directions (Chainer's
``check_backward``): two forward passes per direction, not two per element, so it scales to conv-sized
inputs. The model-contract assertions let plugin authors check their own models with one call, and
:func:`isolated_plugins` gives a test a clean plugin state.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .autograd import Tensor, no_grad

if TYPE_CHECKING:
    from .plugins import PluginManager

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


# -- segmentation model contract and plugin isolation -----------------------------------------------------
# The contract of DESIGN.md ("Models"), checked the way ChainerCV's assert_is_semantic_segmentation_link
# does, so plugin authors can test their own models with one call.

__all__ += ["ModelContractError", "assert_is_semantic_segmentation_model", "assert_is_instance_segmentation_model"]


class ModelContractError(AssertionError):
    """A model breaks the segmentation model contract; the message says which part and what was seen."""


class _Contract:
    def __init__(self, task: str, model) -> None:
        self.prefix = f"{type(model).__name__} breaks the {task} segmentation model contract"

    def fail(self, part: str, message: str) -> None:
        raise ModelContractError(f"{self.prefix}: {part}: {message}")

    def call(self, part: str, fn: Callable, *args):
        """``fn(*args)``; an exception becomes a contract failure of ``part`` (the original is chained)."""
        try:
            return fn(*args)
        except Exception as exc:
            raise ModelContractError(f"{self.prefix}: {part}: raised {type(exc).__name__}: {exc}") from exc


def _check_contract_args(input_size, num_classes, rng) -> tuple[tuple[int, int, int, int], np.random.Generator]:
    size = tuple(input_size) if isinstance(input_size, (tuple, list)) else None
    if size is None or len(size) != 4 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in size):
        raise ValueError(f"input_size must be four positive ints (N, C, H, W), got {input_size!r}")
    if num_classes is not None and (not isinstance(num_classes, (int, np.integer)) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return tuple(int(n) for n in size), (np.random.default_rng(0) if rng is None else rng)


def _contract_parameters(contract: _Contract, model) -> list:
    from .nn import Module

    if not isinstance(model, Module):
        contract.fail("type", f"expected a segcore.nn.Module, got {type(model).__name__}")
    for method in ("losses", "predict"):
        if not callable(getattr(model, method, None)):
            contract.fail(method, f"the model has no {method}() method")
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not params:
        contract.fail("parameters", "the model has no trainable parameters")
    return params


@contextmanager
def _model_state_kept(model):
    """Restore ``model``'s training mode and buffers (BatchNorm running statistics) and clear gradients."""
    was_training = model.training
    buffers = [(b, b.data.copy()) for _, b in model.named_buffers()]
    try:
        yield
    finally:
        model.train(was_training)
        for buffer, data in buffers:
            buffer.data = data
        for p in model.parameters():
            p.grad = None


def _check_losses(contract: _Contract, model, params: list, images: Tensor, targets) -> None:
    for _, p in params:
        p.grad = None
    losses = contract.call("losses(images, targets)", model.losses, images, targets)
    if not isinstance(losses, dict) or not losses:
        contract.fail("losses(images, targets)", f"must return a non-empty dict[str, Tensor], got {losses!r:.200}")
    total = None
    for key, value in losses.items():
        where = f"losses(images, targets)[{key!r}]"
        if not isinstance(key, str):
            contract.fail("losses(images, targets)", f"keys must be str, got {type(key).__name__} {key!r}")
        if not isinstance(value, Tensor):
            contract.fail(where, f"must be a segcore Tensor, got {type(value).__name__}")
        if value.shape != ():
            contract.fail(where, f"must be a scalar tensor (shape ()), got shape {value.shape}")
        if np.dtype(value.dtype).kind != "f":
            contract.fail(where, f"must be floating point, got dtype {value.dtype}")
        if not value.requires_grad:
            contract.fail(where, "does not require grad: it is not connected to the parameters (no_grad or detach?)")
        if not np.isfinite(value.item()):
            contract.fail(where, f"must be finite, got {value.item()}")
        total = value if total is None else total + value
    contract.call("losses backward", total.backward)
    reached = []
    for name, p in params:
        if p.grad is None:
            continue
        grad = p.grad.numpy()
        if grad.shape != p.shape:
            contract.fail("losses backward", f"gradient of {name!r} has shape {grad.shape}, parameter has {p.shape}")
        if not np.all(np.isfinite(grad)):
            contract.fail("losses backward", f"gradient of {name!r} is not finite")
        if np.any(grad != 0):
            reached.append(name)
    if not reached:
        contract.fail(
            "losses backward",
            "the summed losses do not backpropagate into any parameter (all gradients are None or zero)",
        )


def _check_predict_list(contract: _Contract, results, n: int) -> None:
    if not isinstance(results, (list, tuple)):
        contract.fail(
            "predict(images)", f"must return a list with one result per image, got {type(results).__name__}"
        )
    if len(results) != n:
        contract.fail("predict(images)", f"returned {len(results)} results for {n} images")


def _array(contract: _Contract, where: str, value, kinds: str, shape: tuple) -> np.ndarray:
    """Check a NumPy result: dtype kind in ``kinds``, shape matching ``shape`` (``None`` = any size)."""
    names = {"b": "bool", "i": "integer", "u": "integer", "f": "floating-point"}
    if not isinstance(value, np.ndarray):
        contract.fail(where, f"must be a NumPy array, got {type(value).__name__}")
    if value.dtype.kind not in kinds:
        wanted = " or ".join(dict.fromkeys(names[k] for k in kinds))
        contract.fail(where, f"dtype must be {wanted}, got {value.dtype}")
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        expected = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        contract.fail(where, f"must have shape {expected}, got {value.shape}")
    return value


def assert_is_semantic_segmentation_model(
    model,
    *,
    num_classes: int | None = None,
    input_size: Sequence[int] = (2, 3, 32, 32),
    rng: np.random.Generator | None = None,
) -> None:
    """Check that ``model`` follows the semantic segmentation model contract.

    On random float32 images of ``input_size`` (on the model's backend):

    * ``model(images)`` (eval mode) returns finite floating logits ``(N, K, H, W)`` at input resolution,
      ``K == num_classes`` when given;
    * ``model.losses(images, targets)`` (train mode; targets ``(N, H, W)`` int64 in ``[0, K)`` with some
      pixels 255 = ignore) returns a non-empty ``dict[str, Tensor]`` of finite scalar tensors that require
      grad, and their sum backpropagates into the parameters;
    * ``model.predict(images)`` (eval mode) returns ``N`` NumPy integer label maps ``(H, W)`` in ``[0, K)``.

    The model's training mode and buffers (BatchNorm statistics) are restored and its gradients cleared
    afterwards. Raises :class:`ModelContractError` naming the part of the contract that failed and what
    was seen.
    """
    from .autograd import tensor

    (n, c, h, w), rng = _check_contract_args(input_size, num_classes, rng)
    contract = _Contract("semantic", model)
    params = _contract_parameters(contract, model)
    backend = params[0][1].backend
    images = tensor(rng.standard_normal((n, c, h, w)).astype(np.float32), backend=backend)
    with _model_state_kept(model):
        model.eval()
        where = f"forward(images of shape {images.shape})"
        with no_grad():
            logits = contract.call(where, model, images)
        if not isinstance(logits, Tensor):
            contract.fail(where, f"must return a logits Tensor, got {type(logits).__name__}")
        k = num_classes if num_classes is not None else (logits.shape[1] if logits.ndim == 4 else 0)
        if logits.ndim != 4 or logits.shape != (n, k, h, w) or k < 1:
            expected = f"({n}, {num_classes if num_classes is not None else 'K >= 1'}, {h}, {w})"
            contract.fail(where, f"must return logits of shape (N, K, H, W) = {expected}, got {logits.shape}")
        if np.dtype(logits.dtype).kind != "f" or not np.all(np.isfinite(logits.numpy())):
            contract.fail(where, f"must return finite floating logits, got dtype {logits.dtype}")

        model.train()
        labels = rng.integers(0, k, size=(n, h, w))
        labels[rng.random((n, h, w)) < 0.1] = 255
        _check_losses(contract, model, params, images, tensor(labels.astype(np.int64), backend=backend))

        model.eval()
        results = contract.call("predict(images)", model.predict, images)
        _check_predict_list(contract, results, n)
        for i, label_map in enumerate(results):
            where = f"predict(images)[{i}]"
            _array(contract, where, label_map, "iu", (h, w))
            if label_map.size and (label_map.min() < 0 or label_map.max() >= k):
                contract.fail(
                    where, f"labels must lie in [0, {k}), got values in [{label_map.min()}, {label_map.max()}]"
                )


def _instance_targets(rng: np.random.Generator, n: int, h: int, w: int, k: int, backend) -> list[dict]:
    """One or two random boxes per image with filled-box masks and labels in [1, K) (0 is background)."""
    from .autograd import tensor

    targets = []
    for _ in range(n):
        r = int(rng.integers(1, 3))
        boxes = np.zeros((r, 4), dtype=np.float32)
        masks = np.zeros((r, h, w), dtype=np.uint8)
        for j in range(r):
            bw = int(rng.integers(max(1, w // 4), max(1, w // 2) + 1))
            bh = int(rng.integers(max(1, h // 4), max(1, h // 2) + 1))
            x1, y1 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            boxes[j] = (x1, y1, x1 + bw, y1 + bh)
            masks[j, y1 : y1 + bh, x1 : x1 + bw] = 1
        labels = rng.integers(1, max(k, 2), size=r).astype(np.int64)
        targets.append(
            {
                "boxes": tensor(boxes, backend=backend),
                "labels": tensor(labels, backend=backend),
                "masks": tensor(masks, backend=backend),
            }
        )
    return targets


def assert_is_instance_segmentation_model(
    model,
    *,
    num_classes: int | None = None,
    input_size: Sequence[int] = (2, 3, 32, 32),
    rng: np.random.Generator | None = None,
) -> None:
    """Check that ``model`` follows the instance segmentation model contract.

    On random float32 images of ``input_size``:

    * ``model.losses(images, targets)`` (train mode; torchvision-style targets: one dict per image with
      ``boxes (R, 4)`` float32 xyxy, ``labels (R,)`` int64 in ``[1, K)`` and ``masks (R, H, W)`` uint8
      Tensors) returns a non-empty ``dict[str, Tensor]`` of finite scalar tensors that require grad, and
      their sum backpropagates into the parameters;
    * ``model.predict(images)`` (eval mode) returns ``N`` dicts of NumPy arrays: ``boxes (R, 4)`` float
      xyxy with ``x1 <= x2`` and ``y1 <= y2``, ``labels (R,)`` int (in ``[0, K)`` when ``K`` is known),
      ``scores (R,)`` float, ``masks (R, H, W)`` bool.

    ``K`` is ``num_classes``, else the model's ``num_classes`` attribute, else 2 (background counted).
    ``forward``'s raw output is not constrained for instance models. Raises :class:`ModelContractError`.
    """
    (n, c, h, w), rng = _check_contract_args(input_size, num_classes, rng)
    contract = _Contract("instance", model)
    params = _contract_parameters(contract, model)
    backend = params[0][1].backend
    known_k = num_classes if num_classes is not None else getattr(model, "num_classes", None)
    if known_k is not None and (not isinstance(known_k, (int, np.integer)) or known_k < 1):
        known_k = None
    from .autograd import tensor

    images = tensor(rng.standard_normal((n, c, h, w)).astype(np.float32), backend=backend)
    with _model_state_kept(model):
        model.train()
        _check_losses(contract, model, params, images, _instance_targets(rng, n, h, w, known_k or 2, backend))

        model.eval()
        results = contract.call("predict(images)", model.predict, images)
        _check_predict_list(contract, results, n)
        for i, result in enumerate(results):
            where = f"predict(images)[{i}]"
            if not isinstance(result, dict):
                contract.fail(
                    where, f"must be a dict with boxes, labels, scores and masks, got {type(result).__name__}"
                )
            missing = [key for key in ("boxes", "labels", "scores", "masks") if key not in result]
            if missing:
                contract.fail(where, f"is missing key(s) {', '.join(map(repr, missing))}; got keys {sorted(result)}")
            boxes = _array(contract, f"{where}['boxes']", result["boxes"], "f", (None, 4))
            r = boxes.shape[0]
            labels = _array(contract, f"{where}['labels']", result["labels"], "iu", (r,))
            scores = _array(contract, f"{where}['scores']", result["scores"], "f", (r,))
            _array(contract, f"{where}['masks']", result["masks"], "b", (r, h, w))
            if not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
                contract.fail(where, "boxes and scores must be finite")
            inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
            if np.any(inverted):
                contract.fail(
                    f"{where}['boxes']",
                    f"must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2, got {boxes[inverted][0].tolist()}",
                )
            upper = "K" if known_k is None else known_k
            if r and (labels.min() < 0 or (known_k is not None and labels.max() >= known_k)):
                contract.fail(
                    f"{where}['labels']", f"must lie in [0, {upper}), got values in [{labels.min()}, {labels.max()}]"
                )


# -- plugins in tests -------------------------------------------------------------------------------------

__all__ += ["isolated_plugins"]

_PLUGIN_ENV = ("SEGCORE_PLUGINS", "SEGCORE_STRICT_PLUGINS", "SEGCORE_DISABLE_PLUGIN_AUTOLOAD")


@contextmanager
def isolated_plugins(
    entry_points: Iterable[EntryPoint] | None = None, *, env: Mapping[str, str] | None = None
) -> Iterator[PluginManager]:
    """Run a block (a test) against a clean plugin state, restored afterwards.

    Inside the block the process-wide :data:`segcore.plugins.manager` has only its built-in plugins
    loaded; installed plugins load lazily as usual, from ``entry_points`` instead of the installed ones
    when given (``importlib.metadata.EntryPoint(name, "module", "segcore")`` objects). The ``SEGCORE_*``
    plugin variables are unset except those in ``env``. On exit plugins registered with
    ``manager.register`` are removed, the variables and entry points are restored, and the next use
    reloads the installed plugins.

    Yields
    ------
    segcore.plugins.PluginManager
        The manager, for ``register(plugin, name)`` / ``unregister(name)`` / ``plugins()``.
    """
    from . import plugins

    env = dict(env or {})
    unknown = sorted(set(env) - set(_PLUGIN_ENV))
    if unknown:
        raise ValueError(f"env may only set {', '.join(_PLUGIN_ENV)}; got {', '.join(unknown)}")
    saved_env = {name: os.environ.get(name) for name in _PLUGIN_ENV}
    saved_entry_points = plugins.installed_entry_points
    if entry_points is not None:
        fixed = list(entry_points)
        plugins.installed_entry_points = lambda group=plugins.ENTRY_POINT_GROUP: [
            ep for ep in fixed if ep.group == group
        ]
    try:
        for name in _PLUGIN_ENV:
            os.environ.pop(name, None)
        os.environ.update(env)
        plugins.manager.reset()
        yield plugins.manager
    finally:
        plugins.installed_entry_points = saved_entry_points
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        plugins.manager.reset()


# -- every backend against the reference ------------------------------------------------------------------------
# Differential testing (tinygrad's idea): the NumPy backend defines the semantics, and every other registered
# backend must give the same kernel outputs. Tests parametrise over backend_params(), so a newly installed
# backend joins every such test without editing it, and one that cannot run here is skipped with its reason.

__all__ += [
    "BackendMismatchError",
    "TOLERANCES",
    "tolerance",
    "available_backends",
    "backend_params",
    "run_kernel",
    "assert_arrays_agree",
    "assert_backend_agrees",
    "conv_geometries",
    "pool_geometries",
    "interpolate_geometries",
    "roi_boxes",
    "nms_boxes",
]

REFERENCE_BACKEND = "numpy"

#: Default ``(rtol, atol)`` by dtype for backend-vs-reference comparisons. Accelerated kernels may sum in
#: another order (BLAS blocking, parallel reductions) but must stay within a few float32 roundings of a
#: reduction's magnitude; float64 must agree to near machine precision.
TOLERANCES: dict[np.dtype, tuple[float, float]] = {
    np.dtype(np.float16): (1e-2, 1e-2),
    np.dtype(np.float32): (1e-4, 1e-4),
    np.dtype(np.float64): (1e-10, 1e-10),
}


class BackendMismatchError(AssertionError):
    """A backend's kernel output differs from the NumPy reference's; the message says where and by how much."""


def tolerance(dtype) -> tuple[float, float]:
    """``(rtol, atol)`` for comparing outputs of ``dtype`` (exact, ``(0, 0)``, for integer and bool)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biu":
        return 0.0, 0.0
    return TOLERANCES.get(dtype, TOLERANCES[np.dtype(np.float32)])


def available_backends(*, include_reference: bool = False) -> list[str]:
    """Names of the registered backends that can run here (the ``numpy`` reference only if asked)."""
    from .backend import list_backends

    return [
        info.name
        for info in list_backends()
        if info.available and (include_reference or info.name != REFERENCE_BACKEND)
    ]


def backend_params(*, include_reference: bool = False) -> list:
    """``pytest.param`` per registered backend, for ``@pytest.mark.parametrize("backend", backend_params())``.

    Every registered backend is listed (installed plugins included), not only the available ones: a backend
    that cannot run here is marked skipped with the reason ``segcore backends`` gives, so the test report
    says why it did not run. The ``numpy`` reference is left out unless ``include_reference``; when no other
    backend is registered the single parameter is skipped with that reason.
    """
    import pytest

    from .backend import list_backends

    params = []
    for info in list_backends():
        if info.name == REFERENCE_BACKEND and not include_reference:
            continue
        reason = f"backend {info.name!r} is not available: {info.reason}"
        marks = () if info.available else (pytest.mark.skip(reason=reason),)
        params.append(pytest.param(info.name, id=info.name, marks=marks))
    if not params:
        reason = "no backend other than the numpy reference is registered (install one, e.g. backends/numba)"
        params.append(pytest.param(None, id="no-backend", marks=pytest.mark.skip(reason=reason)))
    return params


def _to_backend(backend, value):
    """NumPy arrays (also inside tuples and lists) moved to ``backend``; anything else passed through."""
    if isinstance(value, np.ndarray):
        return backend.asarray(value)
    if isinstance(value, (tuple, list)) and any(isinstance(v, np.ndarray) for v in value):
        return type(value)(_to_backend(backend, v) for v in value)
    return value


def run_kernel(name: str, backend, *args, **params):
    """Call ``backend``'s kernel ``name`` with its namespace, NumPy arrays in ``args`` moved to the backend.

    ``backend`` is a name or a :class:`~segcore.Backend`. Returns the raw output (backend arrays).
    """
    from .backend import get_backend

    target = get_backend(backend)
    return target.kernel(name)(target.xp, *(_to_backend(target, a) for a in args), **params)


def _host(backend, value):
    if isinstance(value, tuple):
        return tuple(_host(backend, v) for v in value)
    return np.asarray(backend.to_numpy(value))


def assert_arrays_agree(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    what: str = "output",
) -> None:
    """Same shape and dtype, and values within :func:`tolerance` of ``expected``'s dtype (NaN equals NaN).

    Raises :class:`BackendMismatchError` naming the worst element.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise BackendMismatchError(f"{what}: shape {actual.shape}, reference has {expected.shape}")
    if actual.dtype != expected.dtype:
        raise BackendMismatchError(f"{what}: dtype {actual.dtype}, reference has {expected.dtype}")
    default_rtol, default_atol = tolerance(expected.dtype)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    if expected.dtype.kind in "biu":
        bad = actual != expected
    else:
        a, e = actual.astype(np.float64), expected.astype(np.float64)
        close = np.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
        bad = ~close
    if np.any(bad):
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        worst = tuple(int(i) for i in np.unravel_index(np.nanargmax(np.where(bad, diff, -1.0)), diff.shape))
        raise BackendMismatchError(
            f"{what}: {int(np.sum(bad))} of {bad.size} elements differ from the reference "
            f"(rtol={rtol}, atol={atol}); first at {where}: {actual[where]!r} vs {expected[where]!r}; "
            f"largest at {worst}: {actual[worst]!r} vs {expected[worst]!r}"
        )


def assert_backend_agrees(name: str, backend, *args, rtol: float | None = None, atol: float | None = None, **params):
    """Run kernel ``name`` on ``backend`` and on the NumPy reference and compare every output array.

    ``args`` are the kernel's positional arguments after the namespace, with NumPy arrays for the array ones
    (moved to ``backend`` here); ``params`` its keyword arguments. Outputs (an array or a tuple of arrays) are
    compared with :func:`assert_arrays_agree`: exactly for integer outputs (indices, argmax), within
    :func:`tolerance` of their dtype otherwise, unless ``rtol`` / ``atol`` are given. Returns the backend's
    outputs as NumPy arrays.
    """
    from .backend import get_backend

    target = get_backend(backend)
    expected = run_kernel(name, REFERENCE_BACKEND, *args, **params)
    actual = _host(target, run_kernel(name, target, *args, **params))
    expected = _host(get_backend(REFERENCE_BACKEND), expected)
    if isinstance(expected, tuple) != isinstance(actual, tuple) or (
        isinstance(expected, tuple) and len(expected) != len(actual)
    ):
        raise BackendMismatchError(
            f"{name} on {target.name!r}: returned {type(actual).__name__}, reference {type(expected).__name__}"
        )
    pairs = zip(actual, expected) if isinstance(expected, tuple) else [(actual, expected)]
    for i, (a, e) in enumerate(pairs):
        label = f"{name} on {target.name!r}" + (f", output {i}" if isinstance(expected, tuple) else "")
        assert_arrays_agree(a, e, rtol=rtol, atol=atol, what=label)
    return actual


# -- hypothesis strategies for kernel geometries --------------------------------------------------------------
# Each returns a hypothesis strategy of plain dicts (shapes and parameters, no arrays: tests draw values from a
# seeded NumPy Generator). hypothesis is imported when a strategy is asked for, so segcore.testing itself does
# not depend on it.


def _conv_output(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv_geometries(
    *, max_batch: int = 2, max_channels: int = 6, max_size: int = 9, max_kernel: int = 3, min_channels: int = 1
):
    """Valid ``conv2d`` geometries: ``n, c, h, w, out_channels, kernel, stride, padding, dilation, groups``.

    Covers odd and size-1 batches, channels and spatial sizes, strides larger than the kernel, asymmetric
    padding and dilation, grouped and depthwise (``groups == c``, channel multiplier 1-2) convolutions; the
    output is at least 1x1. ``min_channels`` > 1 asks for at least that many input channels per group (no
    depthwise ones then), for the code paths a backend keeps for wide layers.
    """
    from hypothesis import strategies as st

    if not 1 <= min_channels <= max_channels:
        raise ValueError(
            f"conv_geometries needs 1 <= min_channels <= max_channels, got {min_channels} and {max_channels}"
        )

    @st.composite
    def geometry(draw):
        kind = draw(st.sampled_from(["dense", "grouped", "depthwise"] if min_channels == 1 else ["dense", "grouped"]))
        groups = 1 if kind == "dense" else draw(st.integers(1, max(1, max_channels // (2 * min_channels))))
        if kind == "depthwise":
            c = groups
            out = groups * draw(st.integers(1, 2))
        else:
            c = groups * draw(st.integers(min_channels, max(min_channels, max_channels // groups)))
            out = groups * draw(st.integers(1, max(1, max_channels // groups)))
        kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
        stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        # Spatial sizes large enough for one output window.
        h = draw(st.integers(max(1, dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0]), max_size + 4))
        w = draw(st.integers(max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1]), max_size + 4))
        n = draw(st.integers(1, max_batch))
        ho, wo = (_conv_output(s, k, st_, p, d) for s, k, st_, p, d in zip((h, w), kernel, stride, padding, dilation))
        assert ho >= 1 and wo >= 1
        return dict(n=n, c=c, h=h, w=w, out_channels=out, kernel=kernel, stride=stride, padding=padding,
                    dilation=dilation, groups=groups, output=(ho, wo))  # fmt: skip

    return geometry()


def pool_geometries(*, max_batch: int = 2, max_channels: int = 3, max_size: int = 10, max_kernel: int = 4):
    """Valid ``max_pool2d`` geometries: ``n, c, h, w, kernel, stride, padding, dilation, ceil_mode``.

    Padding is at most half the kernel (torch's rule); strides may exceed the kernel; ``ceil_mode`` windows
    may run past the padding; the output is at least 1x1.
    """
    from hypothesis import assume
    from hypothesis import strategies as st

    from .kernels.pool import pool_output_size

    @st.composite
    def geometry(draw):
        kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
        stride = (draw(st.integers(1, max_kernel + 1)), draw(st.integers(1, max_kernel + 1)))
        padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        ceil_mode = draw(st.booleans())
        h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
        axes = zip((h, w), kernel, stride, padding, dilation)
        out = [pool_output_size(s, k, st_, p, d, ceil_mode) for s, k, st_, p, d in axes]
        assume(out[0] >= 1 and out[1] >= 1)
        return dict(n=draw(st.integers(1, max_batch)), c=draw(st.integers(1, max_channels)), h=h, w=w, kernel=kernel,
                    stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)  # fmt: skip

    return geometry()


def interpolate_geometries(*, max_batch: int = 2, max_channels: int = 3, max_size: int = 12):
    """Bilinear resize settings: ``n, c, h, w, output (oh, ow), align_corners, scales``.

    Sizes go down, up and stay equal (including 1-pixel inputs and outputs); ``scales`` is ``(None, None)``
    or torch's user scale factors, which then decide the source coordinates.
    """
    from hypothesis import strategies as st

    @st.composite
    def geometry(draw):
        h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
        oh, ow = draw(st.integers(1, 2 * max_size)), draw(st.integers(1, 2 * max_size))
        align_corners = draw(st.booleans())
        if draw(st.booleans()):
            scales = (None, None)
        else:
            scales = (oh / h * draw(st.sampled_from([1.0, 0.9, 1.1])), ow / w * draw(st.sampled_from([1.0, 0.9, 1.1])))
        return dict(n=draw(st.integers(1, max_batch)), c=draw(st.integers(1, max_channels)), h=h, w=w,
                    output=(oh, ow), align_corners=align_corners, scales=scales)  # fmt: skip

    return geometry()


def roi_boxes(images: int, height: float, width: float, *, max_boxes: int = 8):
    """``(K, 5)`` float64 RoIs ``(batch_index, x1, y1, x2, y2)`` over ``images`` maps of ``height x width``.

    Mixes ordinary boxes with the degenerate ones kernels must survive: zero width or height, single points,
    inverted corners (``x2 < x1``), boxes partly or entirely outside the map, and boxes much larger than it.
    ``K`` may be 0.
    """
    from hypothesis import strategies as st

    coordinate_x = st.floats(-0.5 * width, 1.5 * width, allow_nan=False, width=32)
    coordinate_y = st.floats(-0.5 * height, 1.5 * height, allow_nan=False, width=32)

    @st.composite
    def box(draw):
        b = draw(st.integers(0, images - 1))
        x1, y1 = draw(coordinate_x), draw(coordinate_y)
        kind = draw(st.sampled_from(["ordinary", "ordinary", "zero-width", "point", "inverted", "outside", "huge"]))
        if kind == "ordinary":
            x2, y2 = x1 + draw(st.floats(0.25, width, width=32)), y1 + draw(st.floats(0.25, height, width=32))
        elif kind == "zero-width":
            x2, y2 = x1, y1 + draw(st.floats(0.0, height, width=32))
        elif kind == "point":
            x2, y2 = x1, y1
        elif kind == "inverted":
            x2, y2 = x1 - draw(st.floats(0.25, width, width=32)), y1 - draw(st.floats(0.0, height, width=32))
        elif kind == "outside":
            x1, y1 = width + draw(st.floats(2.0, width, width=32)), -height - draw(st.floats(2.0, height, width=32))
            x2, y2 = x1 + draw(st.floats(0.5, 3.0, width=32)), y1 + draw(st.floats(0.5, 3.0, width=32))
        else:
            x1, y1, x2, y2 = -width, -height, 2 * width, 2 * height
        return [float(b), x1, y1, x2, y2]

    boxes = st.lists(box(), min_size=0, max_size=max_boxes)
    return boxes.map(lambda rows: np.asarray(rows, dtype=np.float64).reshape(-1, 5))


def nms_boxes(*, max_boxes: int = 24, extent: float = 32.0):
    """``(boxes (N, 4), scores (N,))`` float64 for NMS: clusters of overlapping boxes, exact duplicates, tied
    scores, zero-area and inverted boxes. ``N`` may be 0."""
    from hypothesis import strategies as st

    @st.composite
    def boxes(draw):
        n = draw(st.integers(0, max_boxes))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        centres = rng.uniform(0, extent, (max(1, n // 4 + 1), 2))
        pick = centres[rng.integers(0, len(centres), n)] + rng.normal(0, extent / 16, (n, 2))
        sizes = rng.uniform(0, extent / 3, (n, 2))
        out = np.concatenate([pick - sizes / 2, pick + sizes / 2], axis=1)
        if n:
            special = rng.random(n)
            out[special < 0.1, 2:] = out[special < 0.1, :2]  # zero area
            flip = (special >= 0.1) & (special < 0.15)
            out[flip] = out[flip][:, [2, 3, 0, 1]]  # inverted corners
            dup = rng.integers(0, n, n // 5)
            out[dup[1:]] = out[dup[0]] if len(dup) > 1 else out[dup[1:]]
        # Quantised scores give ties, which must keep index order.
        scores = np.round(rng.random(n) * 8) / 8
        return out, scores

    return boxes()
