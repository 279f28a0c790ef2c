"""Define-by-run reverse-mode autograd.

A :class:`Tensor` wraps one backend array. Applying a :class:`Function` to tensors that require gradients
records a node (the function's :class:`Context`) holding the inputs and only the arrays the function chose
to save. ``Tensor.backward`` walks recorded nodes in decreasing rank (a node's rank is one more than its
deepest input's), which is a reverse topological order: by the time a node is popped every consumer of its
outputs has already contributed its gradient. The walk uses a heap, never recursion, so depth is unbounded.
"""

from __future__ import annotations

import heapq
import itertools
import numbers
import threading
from contextlib import contextmanager
from typing import Any, Callable

import numpy as np

from .backend import Backend, get_backend
from .errors import BackendMismatchError

__all__ = [
    "Tensor",
    "Function",
    "Context",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "tensor",
    "unbroadcast",
]

# Grad mode is per thread (data-loader threads must not switch it off for the training thread).
_grad_mode = threading.local()


def is_grad_enabled() -> bool:
    """Whether ops are currently recorded for backward."""
    return getattr(_grad_mode, "enabled", True)


@contextmanager
def _set_grad_enabled(enabled: bool):
    previous = is_grad_enabled()
    _grad_mode.enabled = enabled
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def no_grad():
    """Context manager (and decorator, via ``contextlib``) under which nothing is recorded for backward."""
    return _set_grad_enabled(False)


def enable_grad():
    """Context manager re-enabling recording inside a :func:`no_grad` block."""
    return _set_grad_enabled(True)


def unbroadcast(xp, grad, shape: tuple[int, ...]):
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise ValueError(f"gradient of shape {grad.shape} cannot be reduced to input shape {tuple(shape)}")
    if extra:
        grad = xp.sum(grad, axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = xp.sum(grad, axis=axes, keepdims=True)
    if grad.shape != tuple(shape):
        raise ValueError(f"gradient of shape {grad.shape} does not broadcast to input shape {tuple(shape)}")
    return grad


class Context:
    """Per-call state of a :class:`Function`: the backend, saved arrays, and (when recorded) the graph node.

    ``forward`` may set small attributes on the context (``ctx.stride = ...``) for its ``backward`` to read;
    arrays go through :meth:`save_for_backward` so that they are released once backward has used them.
    """

    def __init__(self, backend: Backend, needs_input_grad: tuple[bool, ...]) -> None:
        self.backend = backend
        self.xp = backend.xp
        self.needs_input_grad = needs_input_grad
        self.saved: tuple = ()
        self._released = False
        # Graph fields, set only when the call is recorded.
        self._function: type[Function] | None = None
        self._inputs: tuple[Tensor | None, ...] = ()
        self._rank = 0
        self._output_meta: list[tuple[tuple[int, ...], Any]] = []

    def save_for_backward(self, *arrays) -> None:
        """Keep ``arrays`` (inputs, outputs or intermediates) until this node's backward has run."""
        self.saved = arrays

    def kernel(self, name: str) -> Callable:
        """Shorthand for ``ctx.backend.kernel(name)``."""
        return self.backend.kernel(name)

    def _release(self) -> None:
        self.saved = ()
        self._inputs = ()
        self._released = True


class Function:
    """One differentiable op: ``forward`` and ``backward`` on raw arrays.

    ``forward(ctx, *arrays, **params)`` receives the arrays of the tensor inputs (``None`` stays ``None``)
    and keyword hyper-parameters, and returns one array or a tuple of arrays. ``backward(ctx, *grads)``
    receives one gradient per output and returns one gradient (or ``None``) per positional input.
    Integer-valued outputs (indices) never require gradients.
    """

    @staticmethod
    def forward(ctx: Context, *arrays, **params):
        raise NotImplementedError("Function subclasses define forward")

    @staticmethod
    def backward(ctx: Context, *grad_outputs):
        raise NotImplementedError("Function subclasses define backward")

    @classmethod
    def apply(cls, *inputs: Tensor | None, **params):
        backend = _common_backend(cls.__name__, inputs)
        needs = tuple(x is not None and x.requires_grad for x in inputs)
        record = is_grad_enabled() and any(needs)
        ctx = Context(backend, needs)
        raw = tuple(None if x is None else x.data for x in inputs)
        out = cls.forward(ctx, *raw, **params)
        multiple = isinstance(out, tuple)
        outputs = out if multiple else (out,)
        if record:
            ctx._function = cls
            ctx._inputs = tuple(x if need else None for x, need in zip(inputs, needs))
            ctx._rank = 1 + max((x._node._rank for x in inputs if x is not None and x._node is not None), default=0)
            ctx._output_meta = [(o.shape, o.dtype) for o in outputs]
        tensors = tuple(
            Tensor._from_op(o, backend, ctx if record and _is_floating(o.dtype) else None, i)
            for i, o in enumerate(outputs)
        )
        return tensors if multiple else tensors[0]


def _is_floating(dtype) -> bool:
    return np.dtype(dtype).kind in "fc"


def _common_backend(op: str, inputs) -> Backend:
    backend: Backend | None = None
    for position, x in enumerate(inputs):
        if x is None:
            continue
        if not isinstance(x, Tensor):
            raise TypeError(f"{op}: input {position} must be a segcore Tensor, got {type(x).__name__}")
        if backend is None:
            backend = x.backend
        elif x.backend is not backend:
            raise BackendMismatchError(
                f"{op}: inputs live on two backends, {backend.name!r} and {x.backend.name!r}; "
                f"move one with .to({backend.name!r}) first"
            )
    if backend is None:
        raise TypeError(f"{op}: needs at least one tensor input")
    return backend


_tiebreak = itertools.count()


def _backward(root: Tensor, grad, retain_graph: bool) -> None:
    xp = root.backend.xp
    if root._node is None:
        root._accumulate(grad)
        return
    pending: dict[Context, list] = {root._node: [None] * len(root._node._output_meta)}
    pending[root._node][root._output_index] = grad
    heap = [(-root._node._rank, next(_tiebreak), root._node)]
    while heap:
        _, _, node = heapq.heappop(heap)
        grads = pending.pop(node)
        if node._released:
            raise RuntimeError(
                f"{node._function.__name__}: trying to backward through the graph a second time; "
                "pass retain_graph=True to the first backward() if you need to"
            )
        grads = [
            xp.zeros(shape, dtype=dtype) if g is None else g for g, (shape, dtype) in zip(grads, node._output_meta)
        ]
        input_grads = node._function.backward(node, *grads)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(node._inputs):
            raise RuntimeError(
                f"{node._function.__name__}.backward returned {len(input_grads)} gradients "
                f"for {len(node._inputs)} inputs"
            )
        for x, g in zip(node._inputs, input_grads):
            if x is None or g is None:
                continue
            g = unbroadcast(xp, g, x.shape)
            if g.dtype != x.dtype:
                g = g.astype(x.dtype)
            if x._node is None:
                x._accumulate(g)
                continue
            parent = x._node
            slots = pending.get(parent)
            if slots is None:
                slots = pending[parent] = [None] * len(parent._output_meta)
                heapq.heappush(heap, (-parent._rank, next(_tiebreak), parent))
            index = x._output_index
            slots[index] = g if slots[index] is None else slots[index] + g
        if not retain_graph:
            node._release()


class Tensor:
    """An n-dimensional array on a backend, with optional gradient tracking.

    Create with :func:`segcore.tensor`. ``data`` is the backend array; ``grad`` is a Tensor (or ``None``)
    filled by ``backward`` for leaf tensors that require gradients.
    """

    __slots__ = ("data", "backend", "requires_grad", "grad", "_node", "_output_index", "__weakref__")

    # Make NumPy defer to Tensor's reflected operators (np.float32(2) * t -> Tensor.__rmul__).
    __array_ufunc__ = None

    def __init__(self, data, backend: Backend, requires_grad: bool = False) -> None:
        if requires_grad and not _is_floating(data.dtype):
            raise TypeError(f"requires_grad=True needs a floating-point tensor, got dtype {data.dtype}")
        self.data = data
        self.backend = backend
        self.requires_grad = bool(requires_grad)
        self.grad: Tensor | None = None
        self._node: Context | None = None
        self._output_index = 0

    @classmethod
    def _from_op(cls, data, backend: Backend, node: Context | None, index: int) -> Tensor:
        t = cls.__new__(cls)
        t.data = data
        t.backend = backend
        t.requires_grad = node is not None
        t.grad = None
        t._node = node
        t._output_index = index
        return t

    # -- metadata -----------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def size(self, dim: int | None = None):
        """The shape, or the length of dimension ``dim`` (negative counts from the end), as torch's ``size``.

        Unlike NumPy's ``size`` attribute this is not the element count; that is :meth:`numel`.
        """
        if dim is None:
            return self.shape
        if not isinstance(dim, (numbers.Integral, np.integer)) or isinstance(dim, bool):
            raise TypeError(f"size: dim must be an int or None, got {type(dim).__name__}")
        if not -self.ndim <= dim < self.ndim:
            raise IndexError(
                f"size: dim {dim} is out of range for a {self.ndim}-d tensor (expected {-self.ndim}..{self.ndim - 1})"
            )
        return self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.ndim

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self) -> str | None:
        """Name of the function that produced this tensor, ``None`` for leaves."""
        return None if self._node is None else self._node._function.__name__

    # -- conversion ---------------------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied off the device for GPU backends)."""
        return self.backend.to_numpy(self.data)

    def item(self) -> float | int | bool:
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def to(self, backend: str | Backend | None = None, *, dtype=None) -> Tensor:
        """Cast to ``dtype`` and/or copy to another backend.

        A dtype change on the same backend is differentiable (gradients are cast back), as in torch. A move
        to another backend gives a new leaf with the same ``requires_grad``: graphs never span two backends.
        """
        target = self.backend if backend is None else get_backend(backend)
        dtype = None if dtype is None else np.dtype(dtype)
        if target is self.backend:
            if dtype is None or dtype == self.dtype:
                return self
            from .functional import cast

            return cast(self, dtype)
        data = target.asarray(self.backend.to_numpy(self.data))
        if dtype is not None:
            data = data.astype(dtype)
        return Tensor(data, target, requires_grad=self.requires_grad and _is_floating(data.dtype))

    def float(self) -> Tensor:
        return self.to(dtype=np.float32)

    def double(self) -> Tensor:
        return self.to(dtype=np.float64)

    def long(self) -> Tensor:
        return self.to(dtype=np.int64)

    # -- autograd -----------------------------------------------------------------------------------------
    def detach(self) -> Tensor:
        """A new leaf sharing this tensor's data, cut from the graph."""
        return Tensor(self.data, self.backend, requires_grad=False)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not self.is_leaf:
            raise RuntimeError("requires_grad_() can only be changed on leaf tensors; use detach() first")
        if requires_grad and not _is_floating(self.dtype):
            raise TypeError(f"requires_grad=True needs a floating-point tensor, got dtype {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def backward(self, gradient: Tensor | Any | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires gradients."""
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad")
        xp = self.backend.xp
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a one-element tensor, got shape {self.shape}"
                )
            grad = xp.ones(self.data.shape, dtype=self.dtype)
        else:
            grad = gradient.data if isinstance(gradient, Tensor) else self.backend.asarray(gradient)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"gradient has shape {tuple(grad.shape)}, expected {self.shape}")
            # No copy when the dtype already matches: backward functions never write into their incoming
            # gradients, and a leaf's .grad is always its own copy (see _accumulate).
            grad = grad.astype(self.dtype, copy=False)
        with no_grad():
            _backward(self, grad, retain_graph)

    def _accumulate(self, grad) -> None:
        if self.grad is None:
            # Own the buffer: later accumulation must never write into an array an op still uses.
            self.grad = Tensor(grad.copy(), self.backend)
        else:
            self.grad = Tensor(self.grad.data + grad, self.backend)

    def zero_grad(self) -> None:
        self.grad = None

    # -- display ------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        extras = [] if self.backend.name == "numpy" else [f"backend={self.backend.name!r}"]
        if self.dtype != np.float32:
            extras.append(f"dtype={self.dtype}")
        if self._node is not None:
            extras.append(f"grad_fn={self.grad_fn}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return f"tensor({body}{''.join(', ' + e for e in extras)})"

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise ValueError(f"truth value of a tensor with {self.numel()} elements is ambiguous")
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    # Operators (+, -, *, @, indexing, .sum(), .reshape(), ...) are attached by segcore.functional.methods.
    __hash__ = object.__hash__


_DEFAULT_FLOAT = np.float32


def tensor(data, *, dtype=None, backend: str | Backend | None = None, requires_grad: bool = False) -> Tensor:
    """Create a leaf tensor.

    Python floats and nested lists of floats become float32 (like ``torch.tensor``); Python ints become
    int64; NumPy arrays keep their dtype unless ``dtype`` is given. A Tensor argument is copied.
    """
    target = get_backend(backend)
    if isinstance(data, Tensor):
        data = data.numpy()
    if dtype is None and not hasattr(data, "dtype"):
        kind = np.asarray(data).dtype.kind
        dtype = _DEFAULT_FLOAT if kind == "f" else np.int64 if kind in "iu" else None
    array = target.asarray(data, dtype=dtype)
    if array is data:
        array = array.copy()
    return Tensor(array, target, requires_grad=requires_grad)
