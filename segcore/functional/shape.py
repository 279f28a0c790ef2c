"""Shape and indexing ops with torch semantics: reshape/view, permute, cat/stack/split, getitem, pad, one_hot.

Forward passes return views where the array library does; nothing in segcore writes into an op's input, so
sharing memory is safe. Backward passes move the gradient back to the input layout.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

from ..autograd import Function, Tensor
from ..errors import BackendMismatchError
from .arithmetic import promote_floating

__all__ = [
    "reshape",
    "view",
    "permute",
    "transpose",
    "flatten",
    "squeeze",
    "unsqueeze",
    "cat",
    "concat",
    "stack",
    "split",
    "expand",
    "broadcast_to",
    "getitem",
    "pad",
    "one_hot",
]


# -- argument checks ------------------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_tensor(x, op: str, name: str = "input") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")


def _axis(dim, ndim: int, op: str, name: str = "dim", extra: int = 0) -> int:
    """One torch ``dim`` as a non-negative axis; ``extra=1`` allows the position one past the end (unsqueeze)."""
    if not _is_int(dim):
        raise TypeError(f"{op}: {name} must be an int, got {dim!r}")
    # torch lets a 0-d tensor be addressed as dim 0 / -1.
    extent = max(ndim + extra, 1)
    if not -extent <= dim < extent:
        raise ValueError(f"{op}: {name}={dim} is out of range for a tensor with {ndim} dimensions "
                         f"(expected {-extent}..{extent - 1})")
    return int(dim) % extent


def _int_tuple(values, op: str, name: str) -> tuple[int, ...]:
    if _is_int(values):
        return (int(values),)
    if not isinstance(values, (tuple, list)) or not all(_is_int(v) for v in values):
        raise TypeError(f"{op}: {name} must be a sequence of ints, got {values!r}")
    return tuple(int(v) for v in values)


def _varargs(args: tuple) -> object:
    """``t.reshape(2, 3)`` and ``t.reshape((2, 3))`` both mean shape ``(2, 3)``, as in torch."""
    return args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args


def _infer_shape(shape, size: int, op: str, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = _int_tuple(shape, op, "shape")
    unknown = [i for i, n in enumerate(shape) if n == -1]
    if len(unknown) > 1 or any(n < -1 for n in shape):
        raise ValueError(f"{op}: shape {shape} may contain at most one -1 and no other negative size")
    known = int(np.prod([n for n in shape if n != -1], dtype=np.int64))
    if unknown:
        if known == 0 or size % known:
            raise ValueError(f"{op}: shape {shape} is invalid for an input of shape {input_shape} ({size} elements)")
        shape = shape[: unknown[0]] + (size // known,) + shape[unknown[0] + 1 :]
    elif known != size:
        raise ValueError(f"{op}: shape {shape} is invalid for an input of shape {input_shape} ({size} elements)")
    return shape


def _along(axis: int, index) -> tuple:
    """An index that applies ``index`` to ``axis`` and takes everything before it."""
    return (slice(None),) * axis + (index,)


# -- functions ------------------------------------------------------------------------------------------------
class Reshape(Function):
    @staticmethod
    def forward(ctx, x, *, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)


class Permute(Function):
    @staticmethod
    def forward(ctx, x, *, dims):
        ctx.inverse = tuple(int(i) for i in np.argsort(dims))
        return ctx.xp.transpose(x, dims)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.transpose(g, ctx.inverse)


class Expand(Function):
    @staticmethod
    def forward(ctx, x, *, shape):
        return ctx.xp.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        # The engine sums the gradient over the broadcast axes (unbroadcast), exactly expand's adjoint.
        return g


class Cat(Function):
    @staticmethod
    def forward(ctx, *arrays, dim):
        ctx.dim = dim
        ctx.bounds = np.cumsum([0] + [a.shape[dim] for a in arrays]).tolist()
        return ctx.xp.concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        b = ctx.bounds
        return tuple(
            g[_along(ctx.dim, slice(b[i], b[i + 1]))] if need else None
            for i, need in enumerate(ctx.needs_input_grad)
        )


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, dim):
        ctx.dim = dim
        return ctx.xp.stack(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        return tuple(
            g[_along(ctx.dim, i)] if need else None for i, need in enumerate(ctx.needs_input_grad)
        )


class Split(Function):
    @staticmethod
    def forward(ctx, x, *, sizes, dim):
        ctx.dim = dim
        bounds = np.cumsum([0] + list(sizes)).tolist()
        return tuple(x[_along(dim, slice(bounds[i], bounds[i + 1]))] for i in range(len(sizes)))

    @staticmethod
    def backward(ctx, *grads):
        # Unused pieces arrive as zeros from the engine, so the concatenation has the input's full shape.
        return ctx.xp.concatenate(grads, axis=ctx.dim)


class GetItem(Function):
    @staticmethod
    def forward(ctx, x, *, index, advanced):
        ctx.shape, ctx.advanced = x.shape, advanced
        # The index may hold index arrays: keep them as saved state so they are released after backward.
        ctx.save_for_backward(index)
        # NumPy returns a scalar, not a 0-d array, when every axis gets an integer.
        return ctx.xp.asarray(x[index])

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        (index,) = ctx.saved
        grad = xp.zeros(ctx.shape, dtype=g.dtype)
        if ctx.advanced:
            # Integer index arrays may repeat an element; an unbuffered scatter-add sums every occurrence where
            # `grad[index] += g` would keep only one. CuPy implements the same `add.at`.
            xp.add.at(grad, index, g)
        else:
            grad[index] = g
        return grad


class Pad(Function):
    @staticmethod
    def forward(ctx, x, *, crop, widths, mode, value):
        xp = ctx.xp
        ctx.shape, ctx.crop, ctx.widths, ctx.mode = x.shape, crop, widths, mode
        cropped = x[crop]
        if mode == "constant":
            return xp.pad(cropped, widths, mode="constant", constant_values=value)
        return xp.pad(cropped, widths, mode=_NUMPY_PAD_MODES[mode])

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        for axis, (left, right) in enumerate(ctx.widths):
            if left or right:
                g = _fold_padding(xp, g, axis, left, right, ctx.mode)
        if g.shape == ctx.shape:
            return g
        # Cropped-away elements did not reach the output: their gradient is zero.
        grad = xp.zeros(ctx.shape, dtype=g.dtype)
        grad[ctx.crop] = g
        return grad


_NUMPY_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _fold_padding(xp, g, axis: int, left: int, right: int, mode: str):
    """Adjoint of padding one axis: add each padded element's gradient to the element it was copied from."""
    n = g.shape[axis] - left - right

    def part(start, stop):
        return g[_along(axis, slice(start, stop))]

    def at(start, stop):
        return _along(axis, slice(start, stop))

    grad = part(left, left + n)
    if mode == "constant":
        return grad
    grad = grad.copy()
    # Within one padded side every source index is distinct (pads are < n for reflect, <= n for circular),
    # so the sliced `+=` below never drops a repeated index.
    if mode == "reflect":
        if left:
            grad[at(1, left + 1)] += xp.flip(part(0, left), axis=axis)
        if right:
            grad[at(n - 1 - right, n - 1)] += xp.flip(part(left + n, left + n + right), axis=axis)
    elif mode == "replicate":
        if left:
            grad[at(0, 1)] += xp.sum(part(0, left), axis=axis, keepdims=True)
        if right:
            grad[at(n - 1, n)] += xp.sum(part(left + n, left + n + right), axis=axis, keepdims=True)
    else:  # circular
        if left:
            grad[at(n - left, n)] += part(0, left)
        if right:
            grad[at(0, right)] += part(left + n, left + n + right)
    return grad


# -- public ops -----------------------------------------------------------------------------------------------
def reshape(input: Tensor, shape: Sequence[int]) -> Tensor:
    """``input`` with a new ``shape`` holding the same elements in row-major order; one entry may be -1."""
    _check_tensor(input, "reshape")
    shape = _infer_shape(shape, input.numel(), "reshape", input.shape)
    if shape == input.shape:
        return input
    return Reshape.apply(input, shape=shape)


def view(input: Tensor, shape: Sequence[int]) -> Tensor:
    """Same as :func:`reshape` (segcore arrays have no stride restrictions to enforce)."""
    return reshape(input, shape)


def permute(input: Tensor, dims: Sequence[int]) -> Tensor:
    """Reorder the dimensions: output dim ``i`` is input dim ``dims[i]``."""
    _check_tensor(input, "permute")
    dims = _int_tuple(dims, "permute", "dims")
    if len(dims) != input.ndim:
        raise ValueError(f"permute: dims {dims} must name each of the {input.ndim} dimensions of shape {input.shape}")
    axes = tuple(_axis(d, input.ndim, "permute", "dims") for d in dims)
    if len(set(axes)) != len(axes):
        raise ValueError(f"permute: dims {dims} repeat a dimension")
    if axes == tuple(range(input.ndim)):
        return input
    return Permute.apply(input, dims=axes)


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap dimensions ``dim0`` and ``dim1``."""
    _check_tensor(input, "transpose")
    a = _axis(dim0, input.ndim, "transpose", "dim0")
    b = _axis(dim1, input.ndim, "transpose", "dim1")
    if a == b or input.ndim < 2:
        return input
    axes = list(range(input.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return Permute.apply(input, dims=tuple(axes))


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dimensions ``start_dim..end_dim`` (inclusive) into one; a 0-d input becomes 1-D."""
    _check_tensor(input, "flatten")
    start = _axis(start_dim, input.ndim, "flatten", "start_dim")
    end = _axis(end_dim, input.ndim, "flatten", "end_dim")
    if input.ndim == 0:
        return reshape(input, (1,))
    if start > end:
        raise ValueError(f"flatten: start_dim={start_dim} comes after end_dim={end_dim} for shape {input.shape}")
    merged = int(np.prod(input.shape[start : end + 1], dtype=np.int64))
    return reshape(input, input.shape[:start] + (merged,) + input.shape[end + 1 :])


def squeeze(input: Tensor, dim=None) -> Tensor:
    """Remove size-1 dimensions (all of them, or those in ``dim``; other sizes in ``dim`` are kept, as torch)."""
    _check_tensor(input, "squeeze")
    if dim is None:
        axes = range(input.ndim)
    else:
        dims = (dim,) if _is_int(dim) else _int_tuple(dim, "squeeze", "dim")
        axes = {_axis(d, input.ndim, "squeeze") for d in dims}
    drop = {a for a in axes if input.ndim and input.shape[a] == 1}
    return reshape(input, tuple(n for a, n in enumerate(input.shape) if a not in drop))


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dimension at position ``dim`` (``-1`` appends)."""
    _check_tensor(input, "unsqueeze")
    axis = _axis(dim, input.ndim, "unsqueeze", extra=1)
    return reshape(input, input.shape[:axis] + (1,) + input.shape[axis:])


def _tensor_list(tensors, op: str) -> list[Tensor]:
    if isinstance(tensors, Tensor) or not isinstance(tensors, (tuple, list)):
        raise TypeError(f"{op}: tensors must be a list or tuple of Tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{op}: tensors must not be empty")
    for i, t in enumerate(tensors):
        _check_tensor(t, op, f"tensors[{i}]")
    return list(promote_floating(*tensors))


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Concatenate along an existing dimension; all other sizes must match. Dtypes promote as in torch."""
    tensors = _tensor_list(tensors, "cat")
    first = tensors[0]
    axis = _axis(dim, first.ndim, "cat")
    if first.ndim == 0:
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated; use stack")
    for i, t in enumerate(tensors):
        if t.ndim != first.ndim or t.shape[:axis] + t.shape[axis + 1 :] != first.shape[:axis] + first.shape[axis + 1 :]:
            raise ValueError(
                f"cat: tensors[{i}] has shape {t.shape}, which does not match tensors[0] shape {first.shape} "
                f"outside dim {axis}"
            )
    if len(tensors) == 1:
        return first
    return Cat.apply(*tensors, dim=axis)


def concat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Alias of :func:`cat` (torch.concat)."""
    return cat(tensors, dim)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join equally shaped tensors along a new dimension ``dim``."""
    tensors = _tensor_list(tensors, "stack")
    first = tensors[0]
    axis = _axis(dim, first.ndim, "stack", extra=1)
    for i, t in enumerate(tensors):
        if t.shape != first.shape:
            raise ValueError(f"stack: tensors[{i}] has shape {t.shape}, expected {first.shape} like tensors[0]")
    return Stack.apply(*tensors, dim=axis)


def split(tensor: Tensor, split_size_or_sections, dim: int = 0) -> tuple[Tensor, ...]:
    """Split into pieces of ``split_size`` (the last may be smaller) or of the listed ``sections`` sizes."""
    _check_tensor(tensor, "split", "tensor")
    if tensor.ndim == 0:
        raise ValueError("split: a 0-d tensor cannot be split")
    axis = _axis(dim, tensor.ndim, "split")
    length = tensor.shape[axis]
    if _is_int(split_size_or_sections):
        step = int(split_size_or_sections)
        if step <= 0 and not (step == 0 and length == 0):
            raise ValueError(f"split: split_size must be a positive int, got {split_size_or_sections!r}")
        sizes = [min(step, length - start) for start in range(0, length, step)] if length else [0]
    else:
        sizes = list(_int_tuple(split_size_or_sections, "split", "split_size_or_sections"))
        if any(s < 0 for s in sizes) or sum(sizes) != length:
            raise ValueError(
                f"split: sections {sizes} must be non-negative and sum to the size {length} of dim {axis}"
            )
    return Split.apply(tensor, sizes=tuple(sizes), dim=axis)


def _expanded_shape(input: Tensor, size, op: str) -> tuple[int, ...]:
    size = _int_tuple(size, op, "size")
    if len(size) < input.ndim:
        raise ValueError(f"{op}: size {size} has fewer dimensions than the input shape {input.shape}")
    lead = len(size) - input.ndim
    out = []
    for i, n in enumerate(size):
        old = input.shape[i - lead] if i >= lead else None
        if n == -1:
            if old is None:
                raise ValueError(f"{op}: -1 is not allowed for the new leading dimension {i} in size {size}")
            n = old
        elif n < 0 or (old is not None and old != 1 and old != n):
            raise ValueError(
                f"{op}: cannot expand shape {input.shape} to {size}: dimension {i} has size {old}, "
                f"which must be 1 or equal {n}"
            )
        out.append(n)
    return tuple(out)


def expand(input: Tensor, *size) -> Tensor:
    """Broadcast size-1 dimensions (and new leading ones) to ``size``; ``-1`` keeps a dimension.

    Accepts ``expand(x, 2, 3)`` and ``expand(x, (2, 3))`` like ``Tensor.expand``. The result is a read-only
    broadcast view; its gradient is summed back over the expanded dimensions.
    """
    _check_tensor(input, "expand")
    shape = _expanded_shape(input, _varargs(size), "expand")
    if shape == input.shape:
        return input
    return Expand.apply(input, shape=shape)


def broadcast_to(input: Tensor, shape: Sequence[int]) -> Tensor:
    """``torch.broadcast_to``: :func:`expand` with the target shape as one sequence."""
    _check_tensor(input, "broadcast_to")
    target = _expanded_shape(input, shape, "broadcast_to")
    if target == input.shape:
        return input
    return Expand.apply(input, shape=target)


def _index_array(item, x: Tensor):
    """An index given as a Tensor, NumPy array or (nested) list, as a backend array of int or bool dtype."""
    if isinstance(item, Tensor):
        if item.backend is not x.backend:
            raise BackendMismatchError(
                f"getitem: the index lives on backend {item.backend.name!r} and the tensor on {x.backend.name!r}"
            )
        data = item.data
    else:
        host = np.asarray(item)
        if host.size == 0 and host.dtype.kind == "f":
            host = host.astype(np.int64)  # [] means "no elements", not a float index
        data = x.backend.asarray(host)
    kind = np.dtype(data.dtype).kind
    if kind not in "iub":
        raise TypeError(f"getitem: index arrays must hold integers or booleans, got dtype {data.dtype}")
    return data


def _normalize_index(index, x: Tensor) -> tuple[tuple, bool]:
    """Validate a torch/NumPy index; boolean masks become their ``nonzero()`` integer arrays.

    Returns the index for the array library and whether it contains advanced (array) indices. Checks are done
    here because some array libraries wrap or clip out-of-range indices instead of raising.
    """
    xp = x.backend.xp
    items = index if isinstance(index, tuple) else (index,)
    converted = []
    for item in items:
        if item is None or item is Ellipsis or isinstance(item, slice) or _is_int(item):
            converted.append(item)
        elif isinstance(item, (bool, np.bool_)):
            raise TypeError("getitem: a Python bool is not a valid index; use a boolean Tensor mask")
        elif isinstance(item, (Tensor, list, np.ndarray)):
            converted.append(_index_array(item, x))
        else:
            raise TypeError(
                f"getitem: unsupported index {item!r} of type {type(item).__name__}; expected int, slice, None, "
                "Ellipsis, or an integer/boolean Tensor, array or list"
            )
    if sum(1 for item in converted if item is Ellipsis) > 1:
        raise IndexError("getitem: an index can only have a single Ellipsis ('...')")

    def consumed(item) -> int:
        if item is None or item is Ellipsis:
            return 0
        if isinstance(item, slice) or _is_int(item):
            return 1
        return item.ndim if np.dtype(item.dtype) == np.bool_ else 1

    used = sum(consumed(item) for item in converted)
    if used > x.ndim:
        raise IndexError(f"getitem: too many indices for a tensor of shape {x.shape}: {used} dimensions indexed")
    out: list = []
    advanced = False
    axis = 0
    for item in converted:
        if item is None:
            out.append(None)
        elif item is Ellipsis:
            out.append(Ellipsis)
            axis += x.ndim - used
        elif isinstance(item, slice):
            for part in ("start", "stop", "step"):
                value = getattr(item, part)
                if value is not None and not _is_int(value):
                    raise TypeError(f"getitem: slice {part} must be an int or None, got {value!r}")
            if item.step == 0:
                raise ValueError("getitem: slice step cannot be zero")
            out.append(item)
            axis += 1
        elif _is_int(item):
            n = x.shape[axis]
            if not -n <= item < n:
                raise IndexError(f"getitem: index {item} is out of range for dimension {axis} with size {n}")
            out.append(int(item))
            axis += 1
        elif np.dtype(item.dtype) == np.bool_:
            span = x.shape[axis : axis + item.ndim]
            if item.ndim == 0:
                raise TypeError("getitem: a 0-d boolean index is not supported; use a mask with dimensions")
            if tuple(item.shape) != span:
                raise IndexError(
                    f"getitem: boolean mask of shape {tuple(item.shape)} does not match the indexed dimensions "
                    f"{span} of the tensor shape {x.shape} starting at dimension {axis}"
                )
            out.extend(xp.nonzero(item))
            advanced = True
            axis += item.ndim
        else:
            n = x.shape[axis]
            if item.size and not (int(xp.min(item)) >= -n and int(xp.max(item)) < n):
                raise IndexError(
                    f"getitem: index array with values in [{int(xp.min(item))}, {int(xp.max(item))}] is out of "
                    f"range for dimension {axis} with size {n}"
                )
            out.append(item)
            advanced = True
            axis += 1
    return tuple(out), advanced


def getitem(input: Tensor, index) -> Tensor:
    """``input[index]`` with NumPy/torch semantics: ints, slices, None, Ellipsis, integer and boolean arrays.

    The gradient of repeated integer indices is accumulated (each occurrence adds its gradient).
    """
    _check_tensor(input, "getitem")
    normalized, advanced = _normalize_index(index, input)
    return GetItem.apply(input, index=normalized, advanced=advanced)


_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """Pad (or, with negative amounts, crop) the last dimensions, like ``torch.nn.functional.pad``.

    ``pad`` lists ``(left, right)`` amounts starting from the last dimension: ``(left, right, top, bottom,
    ...)``. Modes: ``"constant"`` (fill with ``value``, any number of dimensions), ``"reflect"`` (mirror
    without repeating the edge), ``"replicate"`` (repeat the edge) and ``"circular"`` (wrap around); the last
    three pad 1-3 trailing dimensions of a 2-5 D input, as in torch. Negative amounts crop first.
    """
    _check_tensor(input, "pad")
    if isinstance(pad, Tensor) or not isinstance(pad, (tuple, list)) or not all(_is_int(p) for p in pad):
        raise TypeError(f"pad: pad must be a tuple of ints, got {pad!r}")
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(
            f"pad: pad must hold an even number of ints, at most 2 * ndim = {2 * input.ndim} for shape "
            f"{input.shape}; got {tuple(pad)}"
        )
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: mode must be one of {', '.join(_PAD_MODES)}; got {mode!r}")
    if not isinstance(value, (numbers.Real, np.number)) or isinstance(value, bool):
        raise TypeError(f"pad: value must be a number, got {value!r}")
    padded_dims = len(pad) // 2
    if mode != "constant":
        if value != 0:
            raise ValueError(f"pad: mode {mode!r} does not take a fill value; got value={value!r}")
        if padded_dims not in (1, 2, 3) or input.ndim not in (padded_dims + 1, padded_dims + 2):
            raise ValueError(
                f"pad: mode {mode!r} pads 1, 2 or 3 trailing dimensions of a (batch,) channel, spatial input: "
                f"a pad of length {len(pad)} needs a {padded_dims + 1}-D or {padded_dims + 2}-D input, "
                f"got shape {input.shape}"
            )
    crop = [slice(None)] * input.ndim
    widths = [(0, 0)] * input.ndim
    for i in range(padded_dims):
        axis = input.ndim - 1 - i
        left, right = int(pad[2 * i]), int(pad[2 * i + 1])
        size = input.shape[axis]
        kept = size + min(left, 0) + min(right, 0)
        if kept < 0:
            raise ValueError(
                f"pad: cropping ({left}, {right}) from dimension {axis} of size {size} leaves a negative size"
            )
        crop[axis] = slice(-min(left, 0), size + min(right, 0))
        widths[axis] = (max(left, 0), max(right, 0))
        largest = max(widths[axis])
        if mode == "reflect" and largest >= kept:
            raise ValueError(
                f"pad: reflect padding {widths[axis]} must be smaller than dimension {axis} of size {kept}"
            )
        if mode == "circular" and largest > kept:
            raise ValueError(
                f"pad: circular padding {widths[axis]} must not exceed dimension {axis} of size {kept}"
            )
        if mode == "replicate" and largest and kept == 0:
            raise ValueError(f"pad: replicate padding needs a non-empty dimension {axis}")
    return Pad.apply(input, crop=tuple(crop), widths=tuple(widths), mode=mode, value=value)


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot encoding with a new last dimension of ``num_classes`` (``-1``: max value + 1)."""
    _check_tensor(tensor, "one_hot", "tensor")
    if np.dtype(tensor.dtype).kind not in "iu":
        raise TypeError(f"one_hot: tensor must hold integer class indices, got dtype {tensor.dtype}")
    if not _is_int(num_classes) or num_classes < -1:
        raise ValueError(f"one_hot: num_classes must be -1 or a non-negative int, got {num_classes!r}")
    xp = tensor.backend.xp
    data = tensor.data
    if num_classes == -1:
        if data.size == 0:
            raise ValueError("one_hot: cannot infer num_classes from an empty tensor; pass num_classes")
        num_classes = int(xp.max(data)) + 1
    if data.size:
        low, high = int(xp.min(data)), int(xp.max(data))
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"one_hot: class values must lie in [0, {num_classes}) for num_classes={num_classes}, "
                f"got values in [{low}, {high}]"
            )
    classes = xp.arange(int(num_classes), dtype=data.dtype)
    return Tensor((data[..., None] == classes).astype(np.int64), tensor.backend)
