"""Tensor operators and methods (``a + b``, ``a @ b``, ``t.sum()``, ``t.reshape()``, ``t[idx]``), bound to ops."""

from __future__ import annotations

from ..autograd import Tensor
from ..errors import BackendMismatchError
from . import arithmetic as A
from . import reduction as R
from . import shape as S


def _reflected(op):
    return lambda self, other: op(other, self)


def _reshape(self: Tensor, *shape) -> Tensor:
    return S.reshape(self, S._varargs(shape))


def _view(self: Tensor, *shape) -> Tensor:
    return S.view(self, S._varargs(shape))


def _permute(self: Tensor, *dims) -> Tensor:
    return S.permute(self, S._varargs(dims))


def _T(self: Tensor) -> Tensor:
    """Transpose of a 2-D tensor (0-D and 1-D tensors are returned as they are)."""
    if self.ndim > 2:
        raise ValueError(
            f".T reverses the dimensions of tensors with at most 2 dimensions, got shape {self.shape}; "
            "use permute() or transpose(-2, -1)"
        )
    return S.transpose(self, 0, -1) if self.ndim == 2 else self


def install() -> None:
    """Attach the operator methods to :class:`Tensor` (called once when ``segcore.functional`` is imported)."""
    T = Tensor
    T.__add__ = lambda self, other: A.add(self, other)
    T.__radd__ = _reflected(A.add)
    T.__sub__ = lambda self, other: A.sub(self, other)
    T.__rsub__ = _reflected(A.sub)
    T.__mul__ = lambda self, other: A.mul(self, other)
    T.__rmul__ = _reflected(A.mul)
    T.__truediv__ = lambda self, other: A.div(self, other)
    T.__rtruediv__ = _reflected(A.div)
    T.__pow__ = lambda self, other: A.pow(self, other)
    T.__rpow__ = _reflected(A.pow)
    T.__matmul__ = lambda self, other: A.matmul(self, other)
    T.__rmatmul__ = _reflected(A.matmul)
    T.__neg__ = A.neg
    T.__abs__ = A.abs
    T.exp = A.exp
    T.log = A.log
    T.sqrt = A.sqrt
    T.abs = A.abs
    T.clamp = A.clamp
    T.sum = R.sum
    T.mean = R.mean
    T.max = R.max
    T.min = R.min
    T.argmax = R.argmax
    T.argmin = R.argmin
    T.reshape = _reshape
    T.view = _view
    T.permute = _permute
    T.transpose = S.transpose
    T.flatten = S.flatten
    T.squeeze = S.squeeze
    T.unsqueeze = S.unsqueeze
    T.split = S.split
    T.expand = S.expand
    T.broadcast_to = S.broadcast_to
    T.T = property(_T)
    T.__getitem__ = S.getitem
    # Comparisons are not differentiable: they return boolean tensors off the graph.
    for name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
        setattr(T, name, _comparison(name))
    T.__hash__ = object.__hash__


def _comparison(name: str):
    def compare(self: Tensor, other) -> Tensor:
        if isinstance(other, Tensor) and other.backend is not self.backend:
            raise BackendMismatchError(
                f"{name}: inputs live on two backends, {self.backend.name!r} and {other.backend.name!r}"
            )
        # Scalars follow the arithmetic ops' weak-scalar rule (and `mask == 2` must not compare with True).
        other_data = A._operand(other, self, "other").data
        return Tensor(getattr(self.data, name)(other_data), self.backend)

    compare.__name__ = name
    return compare
