"""``Parameter``: a leaf tensor that a :class:`~segcore.nn.Module` registers as trainable."""

from __future__ import annotations

from ..autograd import Tensor


class Parameter(Tensor):
    """A leaf :class:`Tensor` that requires grad by default and is listed by ``Module.parameters()``.

    Wraps (and shares the data of) an existing tensor: ``Parameter(segcore.tensor(...))``.
    """

    __slots__ = ()

    def __init__(self, data: Tensor, requires_grad: bool = True) -> None:
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter wraps a segcore Tensor, got {type(data).__name__}")
        super().__init__(data.data, data.backend, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
