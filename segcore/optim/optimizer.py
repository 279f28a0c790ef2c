"""``Optimizer``: parameter groups, ``zero_grad``, ``step`` and ``state_dict`` / ``load_state_dict``.

Behaviour follows ``torch.optim.Optimizer``: hyper-parameters live in ``param_groups`` (a group's own values
override the constructor's defaults), per-parameter state lives in ``state`` keyed by the parameter, and
``state_dict()`` replaces parameters by their position (counted across groups in order) so that a checkpoint
can be loaded into a freshly built model.
"""

from __future__ import annotations

import copy
import math
import numbers
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable

import array_api_compat
import numpy as np

from ..autograd import Tensor, enable_grad, no_grad
from ..backend import Backend, get_backend, list_backends

__all__ = ["Optimizer", "ParamsT"]

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]

# State entries that are counters, not per-element arrays: they keep their value on load (no shape check,
# no cast to the parameter's dtype), as torch does for "step".
_SCALAR_STATE_KEYS = frozenset({"step"})


# -- argument checks shared by the optimizers and the schedulers ------------------------------------------
def _where(owner: str, where: str) -> str:
    return f"{owner} {where}: " if where else f"{owner}: "


def _check_real(owner: str, name: str, value: Any, where: str = "") -> float:
    """``value`` as a Python float; TypeError unless it is a real number, ValueError if it is not finite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{_where(owner, where)}{name} must be a real number, got {value!r} ({type(value).__name__})")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{_where(owner, where)}{name} must be finite, got {value!r}")
    return result


def _check_non_negative(owner: str, name: str, value: Any, where: str = "") -> float:
    """``value`` as a Python float; ValueError unless it is a finite number >= 0."""
    result = _check_real(owner, name, value, where)
    if result < 0:
        raise ValueError(f"{_where(owner, where)}{name} must be >= 0, got {value!r}")
    return result


def _check_int(owner: str, name: str, value: Any, minimum: int, where: str = "") -> int:
    """``value`` as an int; TypeError unless it is an integer, ValueError if it is below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{_where(owner, where)}{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{_where(owner, where)}{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_bool(owner: str, name: str, value: Any, where: str = "") -> bool:
    """``value`` itself; TypeError unless it is a bool (a truthy string or array must not pass)."""
    if not isinstance(value, bool):
        raise TypeError(f"{_where(owner, where)}{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


# -- moving state between backends ------------------------------------------------------------------------
def _is_array(value: Any) -> bool:
    return array_api_compat.is_array_api_obj(value) and not isinstance(value, Tensor)


def _copy_value(value: Any) -> Any:
    """A copy that later in-place edits of either side cannot reach."""
    if isinstance(value, Tensor):
        return Tensor(value.data.copy(), value.backend)
    if _is_array(value):
        return value.copy()
    return copy.deepcopy(value)


def _to_backend(value: Any, backend: Backend):
    """``value`` (a backend array or Tensor) as a fresh array of ``backend``."""
    if isinstance(value, Tensor):
        if value.backend is backend:
            return value.data.copy()
        return backend.asarray(value.backend.to_numpy(value.data))
    namespace = array_api_compat.array_namespace(value)
    if namespace is backend.xp:
        return value.copy()
    # Another backend's array: go through NumPy with that backend's own conversion (e.g. CuPy refuses an
    # implicit np.asarray).
    for info in list_backends():
        if info.available and get_backend(info.name).xp is namespace:
            return backend.asarray(get_backend(info.name).to_numpy(value))
    raise TypeError(f"an array of type {type(value).__name__} belongs to no registered backend")


class Optimizer(ABC):
    """Base class of the optimizers (``torch.optim.Optimizer`` semantics).

    Parameters
    ----------
    params:
        An iterable of leaf Tensors (usually ``model.parameters()``), or of dicts each holding ``"params"``
        and the hyper-parameters that differ for that group.
    defaults:
        Hyper-parameters used by every group that does not set its own.

    Attributes
    ----------
    param_groups:
        List of dicts: ``"params"`` (a list of parameters) plus every hyper-parameter.
    state:
        Per-parameter state (momentum buffers, moment estimates), keyed by the parameter.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        owner = type(self).__name__
        self.defaults: dict[str, Any] = dict(defaults)
        self._validate_group(self.defaults, "")
        self.state: dict[Tensor, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, (Tensor, dict)):
            raise TypeError(
                f"{owner}: params must be an iterable of Tensors or of param-group dicts, got a single "
                f"{type(params).__name__}; wrap it in a list"
            )
        try:
            entries = list(params)
        except TypeError:
            raise TypeError(
                f"{owner}: params must be an iterable of Tensors or of param-group dicts, got {type(params).__name__}"
            ) from None
        n_dicts = sum(isinstance(entry, dict) for entry in entries)
        if n_dicts and n_dicts != len(entries):
            raise TypeError(
                f"{owner}: params mixes Tensors and param-group dicts; give either only Tensors or only dicts"
            )
        groups = entries if n_dicts else [{"params": entries}]
        for group in groups:
            self.add_param_group(group)
        if not any(group["params"] for group in self.param_groups):
            raise ValueError(f"{owner}: params is an empty parameter list; expected at least one parameter")

    # -- groups -------------------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters; hyper-parameters it does not set are taken from ``defaults``.

        A parameter may appear only once across all groups.
        """
        owner = type(self).__name__
        where = f"param group {len(self.param_groups)}"
        if not isinstance(param_group, dict):
            raise TypeError(
                f"{owner}: param_group must be a dict with a 'params' key, got {type(param_group).__name__}"
            )
        if "params" not in param_group:
            raise ValueError(f"{owner} {where}: missing the 'params' key (got keys {sorted(param_group)})")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            # state_dict identifies parameters by position, so their order must be reproducible.
            raise TypeError(f"{owner} {where}: 'params' must be an ordered collection (list, tuple), got a set")
        else:
            try:
                params = list(params)
            except TypeError:
                raise TypeError(
                    f"{owner} {where}: 'params' must be an iterable of Tensors, got {type(params).__name__}"
                ) from None
        owner_group = {id(p): k for k, group in enumerate(self.param_groups) for p in group["params"]}
        position: dict[int, int] = {}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{owner} {where}: params[{i}] must be a segcore Tensor, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(
                    f"{owner} {where}: params[{i}] is not a leaf tensor (made by {p.grad_fn}); "
                    "optimize the leaf Parameter it was computed from"
                )
            if id(p) in position:
                raise ValueError(f"{owner} {where}: params[{i}] is the same tensor as params[{position[id(p)]}]")
            if id(p) in owner_group:
                raise ValueError(
                    f"{owner} {where}: params[{i}] is already in param group {owner_group[id(p)]}; "
                    "a parameter may appear in only one group"
                )
            position[id(p)] = i
        group = {key: value for key, value in param_group.items() if key != "params"}
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._validate_group(group, where)
        group["params"] = params
        self.param_groups.append(group)

    @abstractmethod
    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        """Raise TypeError/ValueError naming the hyper-parameter if ``group`` holds an invalid value.

        ``where`` is ``""`` for the constructor's arguments, else ``"param group <i>"``.
        """

    # -- gradients ----------------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients: set them to ``None`` (default) or to zeros of the same shape and dtype."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data = p.grad.backend.xp.zeros_like(p.grad.data)

    def _params_with_grad(self, index: int, group: dict[str, Any]) -> list[tuple[Tensor, Any]]:
        """``(parameter, gradient array)`` for each parameter of ``group`` that has a gradient."""
        pairs = []
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            grad = p.grad
            # A mismatched gradient would broadcast or upcast silently inside the update.
            if not isinstance(grad, Tensor) or grad.backend is not p.backend:
                found = type(grad).__name__ if not isinstance(grad, Tensor) else f"a Tensor on {grad.backend.name!r}"
                raise TypeError(
                    f"{type(self).__name__} param group {index}, params[{i}]: grad must be a Tensor on the "
                    f"parameter's backend {p.backend.name!r}, got {found}"
                )
            if grad.shape != p.shape or grad.dtype != p.dtype:
                raise ValueError(
                    f"{type(self).__name__} param group {index}, params[{i}]: grad has shape {grad.shape} and "
                    f"dtype {grad.dtype}, expected the parameter's shape {p.shape} and dtype {p.dtype}"
                )
            pairs.append((p, grad.data))
        return pairs

    # -- stepping -----------------------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; parameters whose ``grad`` is ``None`` are skipped.

        Parameters
        ----------
        closure:
            Optional callable that re-evaluates the model, calls ``backward`` and returns the loss.

        Returns
        -------
        The closure's return value, or ``None``.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        # Check every gradient before touching any parameter, so a bad one leaves the model as it was.
        work = [(group, self._params_with_grad(index, group)) for index, group in enumerate(self.param_groups)]
        with no_grad():
            for group, pairs in work:
                self._update_group(group, pairs)
        return loss

    @abstractmethod
    def _update_group(self, group: dict[str, Any], pairs: list[tuple[Tensor, Any]]) -> None:
        """Apply one update with ``group``'s hyper-parameters to each ``(parameter, gradient array)`` pair."""

    # -- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the optimizer: ``{"state": {index: {...}}, "param_groups": [{..., "params": [index]}]}``.

        Parameters are replaced by their position, counted across groups in order. Arrays are copies on the
        parameters' backends, so later steps do not change the snapshot.
        """
        index_of: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {key: copy.deepcopy(value) for key, value in group.items() if key != "params"}
            packed["params"] = [index_of.setdefault(id(p), len(index_of)) for p in group["params"]]
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[index_of[id(p)]] = {key: _copy_value(value) for key, value in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a snapshot made by :meth:`state_dict` (possibly of another optimizer instance).

        The number of groups and each group's size must match; each state array must have its parameter's
        shape. Hyper-parameters are taken from the snapshot. Floating-point state arrays are moved to each
        parameter's backend and cast to its dtype (as torch does); counters such as ``step`` are kept. On any
        error the optimizer is left unchanged.
        """
        owner = type(self).__name__
        if not isinstance(state_dict, dict):
            raise TypeError(f"{owner}.load_state_dict: state_dict must be a dict, got {type(state_dict).__name__}")
        missing = {"state", "param_groups"} - set(state_dict)
        if missing:
            raise ValueError(
                f"{owner}.load_state_dict: state_dict lacks the key(s) {sorted(missing)}; "
                "expected 'state' and 'param_groups' as written by Optimizer.state_dict()"
            )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{owner}.load_state_dict: state_dict has {len(saved_groups)} param groups, "
                f"this optimizer has {len(self.param_groups)}"
            )
        param_at: dict[Any, Tensor] = {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if not isinstance(saved, dict) or "params" not in saved:
                raise ValueError(f"{owner}.load_state_dict: param group {i} of state_dict has no 'params' list")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{owner}.load_state_dict: param group {i} of state_dict has {len(saved['params'])} "
                    f"parameters, this optimizer's group {i} has {len(group['params'])}"
                )
            for index, p in zip(saved["params"], group["params"]):
                if index in param_at:
                    raise ValueError(f"{owner}.load_state_dict: parameter index {index!r} is listed twice")
                param_at[index] = p

        new_state: dict[Tensor, dict[str, Any]] = {}
        for index, entries in state_dict["state"].items():
            if index not in param_at:
                raise ValueError(
                    f"{owner}.load_state_dict: state_dict['state'] has an entry for parameter index {index!r}, "
                    f"which no param group lists (listed: {sorted(param_at, key=repr)})"
                )
            p = param_at[index]
            new_state[p] = {key: self._load_state_value(p, index, key, value) for key, value in entries.items()}

        new_groups = []
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            loaded = {key: copy.deepcopy(value) for key, value in saved.items() if key != "params"}
            # Snapshots from a version that lacked a newer hyper-parameter get its default.
            for key, value in self.defaults.items():
                loaded.setdefault(key, value)
            self._validate_group(loaded, f"param group {i} of the loaded state_dict")
            loaded["params"] = group["params"]
            new_groups.append(loaded)

        self.state = new_state
        self.param_groups = new_groups

    def _load_state_value(self, p: Tensor, index: Any, key: str, value: Any) -> Any:
        owner = type(self).__name__
        if key in _SCALAR_STATE_KEYS:
            count = float(value.item() if hasattr(value, "item") else value)
            if not count.is_integer() or count < 0:
                raise ValueError(
                    f"{owner}.load_state_dict: state[{index!r}][{key!r}] must be a non-negative integer, got {value!r}"
                )
            return int(count)
        if not (_is_array(value) or isinstance(value, Tensor)):
            return copy.deepcopy(value)
        if tuple(value.shape) != p.shape:
            raise ValueError(
                f"{owner}.load_state_dict: state[{index!r}][{key!r}] has shape {tuple(value.shape)}, "
                f"its parameter has shape {p.shape}"
            )
        array = _to_backend(value, p.backend)
        if array.dtype != p.dtype and np.dtype(array.dtype).kind == "f":
            array = array.astype(p.dtype)
        return array

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {key}: {group[key]}" for key in sorted(group) if key != "params")
        lines.append(")")
        return "\n".join(lines)
