"""Tensor operators and methods (``a + b``, ``a @ b``, ``t.sum()``, ``t.reshape()``, ``t[idx]``), bound to ops."""

from __future__ import annotations

from ..autograd import Tensor
from ..errors import BackendMismatchError
from . import arithmetic as A
from . import reduction as R
from ._utils import as_tensor_like


def _reflected(op):
    return lambda self, other: op(other, self)


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
        other_data = as_tensor_like(other, self, "other").data
        return Tensor(getattr(self.data, name)(other_data), self.backend)

    compare.__name__ = name
    return compare
