"""Pooling layers with torch's constructor arguments, attributes and ``repr``."""

from __future__ import annotations

from typing import Sequence

from .. import functional as F
from ..autograd import Tensor
from ._utils import ntuple
from .module import Module

__all__ = ["MaxPool2d", "MaxUnpool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"]

IntPair = int | tuple[int, int]


def _check_window(
    layer: str, kernel_size: IntPair, stride: IntPair | None, padding: IntPair, dilation: IntPair = 1
) -> None:
    # Fail at construction (where the mistake is) rather than at the first forward.
    kernel = ntuple(kernel_size, 2, f"{layer}: kernel_size", minimum=1)
    if stride is not None:
        ntuple(stride, 2, f"{layer}: stride", minimum=1)
    pad = ntuple(padding, 2, f"{layer}: padding", minimum=0)
    ntuple(dilation, 2, f"{layer}: dilation", minimum=1)
    if any(2 * p > k for p, k in zip(pad, kernel)):
        raise ValueError(f"{layer}: padding {padding!r} must be at most half of kernel_size {kernel_size!r}")


def _check_bool(layer: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{layer}: {name} must be a bool, got {value!r}")
    return value


class MaxPool2d(Module):
    """Max pooling over ``(N, C, H, W)``; ``stride`` defaults to ``kernel_size``.

    With ``return_indices=True`` the forward returns ``(output, indices)`` (flat ``H * W`` indices into each
    input plane, for :class:`MaxUnpool2d`).
    """

    def __init__(
        self,
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        _check_window("MaxPool2d", kernel_size, stride, padding, dilation)
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = _check_bool("MaxPool2d", "return_indices", return_indices)
        self.ceil_mode = _check_bool("MaxPool2d", "ceil_mode", ceil_mode)

    def forward(self, input: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return F.max_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class MaxUnpool2d(Module):
    """Partial inverse of :class:`MaxPool2d`: scatter values back to the positions in ``indices``, zeros
    elsewhere. ``forward(input, indices, output_size=None)``; ``output_size`` resolves odd input sizes."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> None:
        super().__init__()
        self.kernel_size = ntuple(kernel_size, 2, "MaxUnpool2d: kernel_size", minimum=1)
        self.stride = ntuple(stride if stride is not None else kernel_size, 2, "MaxUnpool2d: stride", minimum=1)
        self.padding = ntuple(padding, 2, "MaxUnpool2d: padding", minimum=0)

    def forward(self, input: Tensor, indices: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        return F.max_unpool2d(input, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    """Average pooling over ``(N, C, H, W)``; ``stride`` defaults to ``kernel_size``.

    ``count_include_pad`` counts zero padding in the divisor (torch's default); ``divisor_override`` replaces
    the divisor.
    """

    def __init__(
        self,
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: IntPair = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        _check_window("AvgPool2d", kernel_size, stride, padding)
        if divisor_override is not None and (
            not isinstance(divisor_override, int) or isinstance(divisor_override, bool) or divisor_override < 1
        ):
            raise ValueError(f"AvgPool2d: divisor_override must be a positive int or None, got {divisor_override!r}")
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = _check_bool("AvgPool2d", "ceil_mode", ceil_mode)
        self.count_include_pad = _check_bool("AvgPool2d", "count_include_pad", count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def _check_output_size(layer: str, output_size: object) -> None:
    # torch allows None inside a pair for "keep this dimension's size".
    if isinstance(output_size, (tuple, list)):
        items, ok = tuple(output_size), len(output_size) == 2
    else:
        items, ok = (output_size,), output_size is not None
    ok = ok and all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1) for v in items)
    if not ok:
        raise ValueError(f"{layer}: output_size must be a positive int or a pair of ints/None, got {output_size!r}")


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size`` (``1`` gives global average pooling)."""

    def __init__(self, output_size: int | tuple[int | None, int | None]) -> None:
        super().__init__()
        _check_output_size("AdaptiveAvgPool2d", output_size)
        self.output_size = output_size

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Max pooling to a fixed ``output_size``; ``return_indices=True`` also returns the argmax indices."""

    def __init__(self, output_size: int | tuple[int | None, int | None], return_indices: bool = False) -> None:
        super().__init__()
        _check_output_size("AdaptiveMaxPool2d", output_size)
        self.output_size = output_size
        self.return_indices = _check_bool("AdaptiveMaxPool2d", "return_indices", return_indices)

    def forward(self, input: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
