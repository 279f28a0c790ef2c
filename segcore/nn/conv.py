"""``Conv2d`` and ``ConvTranspose2d`` with torch's constructor signatures, attribute names and initialisation."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..backend import Backend
from ._utils import Factory, check_positive_int, ntuple
from .linear import _reset_weight_and_bias
from .module import Module

__all__ = ["Conv2d", "ConvTranspose2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    """Shared state of the 2-D convolutions: validated hyper-parameters, weight and bias."""

    def __init__(
        self,
        layer: str,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int],
        padding: int | tuple[int, int] | str,
        dilation: int | tuple[int, int],
        transposed: bool,
        output_padding: int | tuple[int, int],
        groups: int,
        bias: bool,
        padding_mode: str,
        factory: Factory,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels", layer)
        self.out_channels = check_positive_int(out_channels, "out_channels", layer)
        self.groups = check_positive_int(groups, "groups", layer)
        if self.in_channels % self.groups:
            raise ValueError(f"{layer}: in_channels={in_channels} must be divisible by groups={groups}")
        if self.out_channels % self.groups:
            raise ValueError(f"{layer}: out_channels={out_channels} must be divisible by groups={groups}")
        self.kernel_size = ntuple(kernel_size, 2, f"{layer}: kernel_size", minimum=1)
        self.stride = ntuple(stride, 2, f"{layer}: stride", minimum=1)
        self.dilation = ntuple(dilation, 2, f"{layer}: dilation", minimum=1)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{layer}: padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.padding: tuple[int, int] | str
        if isinstance(padding, str):
            if transposed or padding not in ("same", "valid"):
                allowed = "an int or a pair of ints" if transposed else "'same', 'valid', an int or a pair of ints"
                raise ValueError(f"{layer}: padding must be {allowed}, got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"{layer}: padding='same' is not supported for strided convolutions (stride={stride})")
            self.padding = padding
            # (left, right) per spatial dim; 'same' puts the odd pixel on the right, as torch does.
            totals = [d * (k - 1) if padding == "same" else 0 for d, k in zip(self.dilation, self.kernel_size)]
            pads = [(t // 2, t - t // 2) for t in totals]
        else:
            self.padding = ntuple(padding, 2, f"{layer}: padding", minimum=0)
            pads = [(p, p) for p in self.padding]
        # F.pad order: last dimension first (torch's _reversed_padding_repeated_twice).
        self._reversed_padding_repeated_twice = (*pads[1], *pads[0])
        self.transposed = transposed
        self.output_padding = ntuple(output_padding, 2, f"{layer}: output_padding", minimum=0)
        if transposed:
            shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        else:
            shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.weight = factory.parameter(shape)
        if bias:
            self.bias = factory.parameter((self.out_channels,))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(factory.rng)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Re-draw weight and bias with torch's default (kaiming_uniform(a=sqrt(5)), U(+-1/sqrt(fan_in)))."""
        _reset_weight_and_bias(self.weight, self.bias, rng)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv2d(_ConvNd):
    """2-D convolution (cross-correlation) over ``(N, C_in, H, W)``; ``weight`` is ``(C_out, C_in/groups, kh, kw)``.

    ``padding`` is an int, a pair, ``'valid'`` (no padding) or ``'same'`` (stride 1 only; output size equals
    input size, the odd pixel of an even kernel going to the right/bottom as in torch). ``padding_mode`` is
    ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``. Initialisation follows torch, drawn from
    ``rng`` (a fresh unseeded generator when ``None``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        rng: np.random.Generator | None = None,
        dtype: Any = None,
        backend: str | Backend | None = None,
    ) -> None:
        factory = Factory(rng, dtype, backend, "Conv2d")
        super().__init__(
            "Conv2d", in_channels, out_channels, kernel_size, stride, padding, dilation,
            False, 0, groups, bias, padding_mode, factory,
        )  # fmt: skip

    def forward(self, input: Tensor) -> Tensor:
        pads = self._reversed_padding_repeated_twice
        if self.padding_mode != "zeros":
            input = F.pad(input, pads, mode=self.padding_mode)
            padding: tuple[int, int] = (0, 0)
        elif pads[0] == pads[1] and pads[2] == pads[3]:
            padding = (pads[2], pads[0])
        else:
            # Asymmetric 'same' padding cannot be expressed by conv2d's symmetric padding.
            input = F.pad(input, pads)
            padding = (0, 0)
        return F.conv2d(input, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class ConvTranspose2d(_ConvNd):
    """Transposed 2-D convolution ("deconvolution"); ``weight`` is ``(C_in, C_out/groups, kh, kw)`` as in torch.

    The output size is ``(H - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1``;
    ``forward(input, output_size)`` picks ``output_padding`` to hit a requested size instead. Initialisation
    follows torch (see :func:`segcore.nn.init.bilinear_upsampling_` for FCN's bilinear initialiser).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, int] = 1,
        padding_mode: str = "zeros",
        *,
        rng: np.random.Generator | None = None,
        dtype: Any = None,
        backend: str | Backend | None = None,
    ) -> None:
        if padding_mode != "zeros":
            raise ValueError(f"ConvTranspose2d: only padding_mode='zeros' is supported, got {padding_mode!r}")
        factory = Factory(rng, dtype, backend, "ConvTranspose2d")
        super().__init__(
            "ConvTranspose2d", in_channels, out_channels, kernel_size, stride, padding, dilation,
            True, output_padding, groups, bias, padding_mode, factory,
        )  # fmt: skip
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(s, d):
                raise ValueError(
                    f"ConvTranspose2d: output_padding={self.output_padding} must be smaller than stride "
                    f"{self.stride} or dilation {self.dilation} in each dimension"
                )

    def _output_padding(self, input: Tensor, output_size: Sequence[int] | None) -> tuple[int, int]:
        if output_size is None:
            return self.output_padding  # type: ignore[return-value]
        size = tuple(output_size)
        if len(size) == 4:
            size = size[2:]
        if len(size) != 2 or not all(isinstance(s, (int, np.integer)) for s in size):
            raise ValueError(f"ConvTranspose2d: output_size must be (H, W) or (N, C, H, W), got {output_size!r}")
        result = []
        for axis in range(2):
            smallest = (
                (input.shape[axis + 2] - 1) * self.stride[axis]
                - 2 * self.padding[axis]  # type: ignore[index]
                + self.dilation[axis] * (self.kernel_size[axis] - 1)
                + 1
            )
            largest = smallest + self.stride[axis] - 1
            if not smallest <= size[axis] <= largest:
                raise ValueError(
                    f"ConvTranspose2d: requested output_size {tuple(size)} is not reachable from input shape "
                    f"{input.shape}: dimension {axis} must be in [{smallest}, {largest}], got {size[axis]}"
                )
            result.append(int(size[axis]) - smallest)
        return result[0], result[1]

    def forward(self, input: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        if not isinstance(input, Tensor) or input.ndim != 4:
            shape = input.shape if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"ConvTranspose2d: input must be a 4-D tensor (N, C, H, W), got {shape}")
        output_padding = self._output_padding(input, output_size)
        return F.conv_transpose2d(
            input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups, self.dilation
        )
