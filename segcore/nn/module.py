"""``Module``: the base class of layers and models, following ``torch.nn.Module``.

Assigning a :class:`Parameter`, a :class:`Module` or a registered buffer to an attribute registers it, so that
``named_parameters()``, ``state_dict()``, ``train()``/``eval()`` and ``to()`` reach everything without each
layer listing its own state. ``state_dict`` keys are torch's dotted paths (``backbone.layer1.0.conv1.weight``),
so weight files produced from torch/torchvision models load 1:1 when attribute names follow torchvision.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Callable, Iterator, Mapping, NamedTuple, TypeVar

import numpy as np

from ..autograd import Tensor, no_grad
from ..backend import Backend, get_backend
from .parameter import Parameter

__all__ = ["Module", "IncompatibleKeys"]

M = TypeVar("M", bound="Module")


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` could not match: model keys absent from the file, and file keys
    the model does not have."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _addindent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a str, got {type(name).__name__}")
    if name == "" or "." in name:
        raise ValueError(f"{kind} name must be non-empty and contain no '.', got {name!r}")


def _as_numpy(value: Any, key: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"state_dict[{key!r}] must be a Tensor or a numpy array, got {type(value).__name__}")


class Module:
    """Base class of every layer and model.

    Subclasses call ``super().__init__()`` first, assign parameters, sub-modules and buffers as attributes,
    and define ``forward``; calling the module runs ``forward``. ``training`` is ``True`` after construction
    and is switched recursively by :meth:`train` / :meth:`eval`.
    """

    training: bool

    def __init__(self) -> None:
        # Written through object.__setattr__ because our __setattr__ reads these dicts.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())

    # -- forward ------------------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- registration -------------------------------------------------------------------------------------
    def _require_init(self, what: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() call")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (or ``None``, a declared but absent parameter such as a disabled bias)."""
        self._require_init("parameters")
        _check_name("parameter", name)
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute {name!r} already exists on {type(self).__name__}")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign {type(param).__name__} as parameter {name!r} (segcore.nn.Parameter or None expected)"
            )
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Register state that is not trained (e.g. BatchNorm's running statistics).

        Persistent buffers are part of :meth:`state_dict`; all buffers move with :meth:`to`.
        """
        self._require_init("buffers")
        _check_name("buffer", name)
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute {name!r} already exists on {type(self).__name__}")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign {type(tensor).__name__} as buffer {name!r} (Tensor or None expected)")
        if isinstance(tensor, Parameter):
            raise TypeError(f"buffer {name!r} must be a plain Tensor, got a Parameter (use register_parameter)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Register ``module`` as a child called ``name`` (the key segment in ``state_dict``)."""
        self._require_init("child modules")
        _check_name("module", name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a segcore.nn.Module subclass (child {name!r})")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute {name!r} already exists on {type(self).__name__}")
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            self._require_init("parameters")
            self._forget(name, keep="_parameters")
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} "
                    "(segcore.nn.Parameter or None expected)"
                )
            params[name] = None
        elif isinstance(value, Module):
            self._require_init("child modules")
            self._forget(name, keep="_modules")
            self._modules[name] = value
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as child module {name!r} (Module or None expected)"
                )
            self._modules[name] = None
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} (Tensor or None expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name: str, keep: str) -> None:
        # An attribute may change kind (a buffer replaced by a Parameter): drop registrations of other kinds.
        # The table of the new kind is left alone so that a replaced entry keeps its place in state_dict order
        # (``model.fc = Linear(...)`` when fine-tuning must not move ``fc`` to the end).
        self.__dict__.pop(name, None)
        for table in ("_parameters", "_buffers", "_modules"):
            if table != keep:
                getattr(self, table).pop(name, None)
        if keep != "_buffers":
            self._non_persistent_buffers.discard(name)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, i.e. for registered state.
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    # -- traversal ----------------------------------------------------------------------------------------
    def named_modules(
        self, memo: set[int] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first, with dotted names (``""`` for this module)."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct sub-modules with their attribute names (each module once)."""
        seen: set[int] = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def _named_members(
        self, table: str, prefix: str, recurse: bool, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        seen: set[int] = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, table).items():
                if value is None:
                    continue
                if remove_duplicate:
                    if id(value) in seen:
                        continue
                    seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Parameters with dotted names; a parameter shared by several modules is listed once (first name)."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)  # type: ignore[misc]

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        """Buffers (persistent or not) with dotted names, each tensor once."""
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def get_submodule(self, target: str) -> Module:
        """The descendant at dotted path ``target`` (``""`` is this module)."""
        if not isinstance(target, str):
            raise TypeError(f"target must be a dotted path str, got {type(target).__name__}")
        module: Module = self
        if target == "":
            return module
        walked: list[str] = []
        for part in target.split("."):
            child = module._modules.get(part)
            if child is None:
                where = ".".join(walked) or "the root module"
                raise AttributeError(
                    f"get_submodule({target!r}): {where} ({type(module).__name__}) has no child {part!r}; "
                    f"children: {', '.join(module._modules) or 'none'}"
                )
            module = child
            walked.append(part)
        return module

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalar parameters, counting shared parameters once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- modes and gradients ------------------------------------------------------------------------------
    def train(self: M, mode: bool = True) -> M:
        """Set training mode on this module and every descendant (affects Dropout, BatchNorm, ...)."""
        if not isinstance(mode, bool):
            raise ValueError(f"train(mode): mode must be a bool, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self: M) -> M:
        """Shorthand for ``train(False)``."""
        return self.train(False)

    def requires_grad_(self: M, requires_grad: bool = True) -> M:
        """Set ``requires_grad`` on every parameter (e.g. ``backbone.requires_grad_(False)`` to freeze it)."""
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter (to ``None``, or to zeros with ``set_to_none=False``)."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad = Tensor(param.backend.xp.zeros_like(param.grad.data), param.backend)

    def apply(self: M, fn: Callable[[Module], Any]) -> M:
        """Call ``fn`` on every descendant (children first) and then on this module; returns ``self``."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # -- placement ----------------------------------------------------------------------------------------
    def to(self: M, backend: str | Backend | None = None, *, dtype: Any = None) -> M:
        """Move every parameter and buffer to ``backend`` and/or cast floating ones to ``dtype``, in place.

        Parameters and buffers stay the same Python objects (only their ``data`` changes), so an optimizer
        built before ``.to`` keeps working. Integer buffers (``num_batches_tracked``) keep their dtype.
        """
        target = None if backend is None else get_backend(backend)
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype.kind != "f":
                raise TypeError(f"Module.to(dtype=...) needs a floating-point dtype, got {dtype}")
        with no_grad():
            for tensor in list(self.parameters()) + list(self.buffers()):
                _move(tensor, target, dtype)
                if tensor.grad is not None:
                    _move(tensor.grad, target, dtype)
        return self

    def float(self: M) -> M:
        """Cast floating parameters and buffers to float32."""
        return self.to(dtype=np.float32)

    def double(self: M) -> M:
        """Cast floating parameters and buffers to float64 (used for gradient checks)."""
        return self.to(dtype=np.float64)

    # -- state dict ---------------------------------------------------------------------------------------
    def _save_to_state_dict(self, destination: OrderedDict, prefix: str, keep_vars: bool) -> None:
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = buf if keep_vars else buf.detach()

    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> OrderedDict[str, Tensor]:
        """Parameters and persistent buffers by dotted name, in registration order.

        Values are detached tensors sharing data with the module (as in torch): copy them if the module will
        keep training and you need a snapshot. A parameter shared by two modules appears under both names.
        """
        destination: OrderedDict[str, Tensor] = OrderedDict()
        for module_prefix, module in self.named_modules(prefix=prefix.rstrip("."), remove_duplicate=False):
            module._save_to_state_dict(destination, f"{module_prefix}." if module_prefix else "", keep_vars)
        return destination

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        missing_keys: list[str],
        mismatches: list[str],
        loaded_keys: set[str],
    ) -> None:
        """Copy this module's own entries from ``state_dict`` (subclasses extend this for legacy keys)."""
        local = [(n, p) for n, p in self._parameters.items() if p is not None]
        local += [(n, b) for n, b in self._buffers.items() if b is not None and n not in self._non_persistent_buffers]
        for name, target in local:
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                continue
            loaded_keys.add(key)
            value = _as_numpy(state_dict[key], key)
            if tuple(value.shape) != target.shape:
                mismatches.append(
                    f"size mismatch for {key}: copying a param with shape {tuple(value.shape)} from checkpoint, "
                    f"the shape in current model is {target.shape}"
                )
                continue
            source_kind, target_kind = np.dtype(value.dtype).kind, np.dtype(target.dtype).kind
            compatible = source_kind == target_kind or {source_kind, target_kind} <= {"i", "u"}
            if not compatible:
                mismatches.append(
                    f"dtype mismatch for {key}: checkpoint has {value.dtype}, the model has {target.dtype}"
                )
                continue
            # Copy (never alias the caller's array): two models loaded from one dict must not share storage.
            target.data = target.backend.asarray(np.array(value, dtype=target.dtype, copy=True))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy parameters and persistent buffers from ``state_dict`` into this module.

        Values (Tensors or NumPy arrays) are copied into the existing tensors, converted to their backend and
        dtype (float32 <-> float64 is allowed, float <-> int is not), so parameter objects keep their
        identity. A shape or dtype mismatch is always an error; with ``strict=True`` missing and unexpected
        keys are too. The error lists every problem at once. Returns ``(missing_keys, unexpected_keys)``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of str to Tensor, got {type(state_dict).__name__}")
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be a bool, got {strict!r}")
        for key in state_dict:
            if not isinstance(key, str):
                raise TypeError(f"state_dict keys must be str, got {key!r} ({type(key).__name__})")
        missing: list[str] = []
        mismatches: list[str] = []
        loaded: set[str] = set()
        with no_grad():
            for module_prefix, module in self.named_modules(remove_duplicate=False):
                prefix = f"{module_prefix}." if module_prefix else ""
                module._load_from_state_dict(state_dict, prefix, missing, mismatches, loaded)
        unexpected = [key for key in state_dict if key not in loaded]
        problems: list[str] = []
        if strict and missing:
            problems.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if strict and unexpected:
            problems.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        problems.extend(mismatches)
        if problems:
            raise ValueError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(problems)
            )
        return IncompatibleKeys(missing, unexpected)

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to ``path`` as safetensors, atomically (see :func:`segcore.io.save_state_dict`)."""
        from ..io import save_state_dict

        save_state_dict(self.state_dict(), path)

    def load(self, path: str | os.PathLike, strict: bool = True) -> IncompatibleKeys:
        """Load a safetensors file written by :meth:`save` (or converted from torch) into this module."""
        from ..io import load_state_dict

        return self.load_state_dict(load_state_dict(path), strict=strict)

    # -- display ------------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """Hyper-parameters shown inside the parentheses of ``repr``; layers override it."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        for name, module in self._modules.items():
            lines.append(f"({name}): " + _addindent(repr(module), 2))
        if not self._modules:
            return f"{type(self).__name__}({extra})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _move(tensor: Tensor, target: Backend | None, dtype: np.dtype | None) -> None:
    data = tensor.data
    if target is not None and target is not tensor.backend:
        data = target.asarray(tensor.backend.to_numpy(data))
        tensor.backend = target
    if dtype is not None and np.dtype(data.dtype).kind == "f" and data.dtype != dtype:
        data = data.astype(dtype)
    tensor.data = data
