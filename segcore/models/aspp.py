"""Atrous spatial pyramid pooling, shared by DeepLab v2, v3 and v3+.

* :class:`ASPP` — DeepLab v3's module with torchvision's layout and state-dict keys (``convs.0`` 1x1 branch,
  ``convs.1..R`` 3x3 atrous branches, ``convs.R+1`` image-level pooling branch, ``project``). With
  ``separable=True`` the atrous branches are depthwise-separable (DeepLab v3+).
* :class:`ASPPv2` — DeepLab v2's module: parallel 3x3 atrous classifiers whose score maps are summed.
* :class:`SeparableConvBNReLU` — depthwise 3x3 (dilated) + BN + ReLU, pointwise 1x1 + BN + ReLU, the
  separable conv of DeepLab v3+'s ASPP and decoder.
* :func:`deeplab_atrous_rates` — the v3 paper's rates for an output stride.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..nn import AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Module, ModuleList, ReLU, Sequential, init

__all__ = [
    "ASPP",
    "ASPPConv",
    "ASPPPooling",
    "ASPPv2",
    "SeparableConvBNReLU",
    "check_atrous_rates",
    "deeplab_atrous_rates",
]


def _positive_int(value: object, name: str, where: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    return int(value)


def check_atrous_rates(rates: object, where: str) -> tuple[int, ...]:
    if (
        not isinstance(rates, (tuple, list))
        or not rates
        or not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r >= 1 for r in rates)
    ):
        raise ValueError(f"{where}: atrous_rates must be a non-empty tuple of positive ints, got {rates!r}")
    return tuple(int(r) for r in rates)


def _rng(rng: object, where: str) -> np.random.Generator:
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"{where}: rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return np.random.default_rng() if rng is None else rng


def deeplab_atrous_rates(output_stride: int) -> tuple[int, int, int]:
    """DeepLab v3's ASPP rates: (6, 12, 18) at output stride 16, doubled at 8 and halved at 32."""
    table = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}
    if output_stride not in table or isinstance(output_stride, bool):
        raise ValueError(f"output_stride must be one of {tuple(table)}, got {output_stride!r}")
    return table[output_stride]


class SeparableConvBNReLU(Module):
    """Depthwise ``k x k`` conv (dilated) + BN + ReLU, then pointwise 1x1 conv + BN + ReLU.

    The layout of DeepLab v3+'s separable convs (a BN and ReLU after each of the two convs); parameters
    ``depthwise``, ``depthwise_bn``, ``pointwise``, ``pointwise_bn``. Spatial size is kept (stride 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        dilation: int = 1,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        rng = _rng(rng, "SeparableConvBNReLU")
        pad = dilation * (kernel_size - 1) // 2
        self.depthwise = Conv2d(
            in_channels, in_channels, kernel_size, padding=pad, dilation=dilation, groups=in_channels, bias=False,
            rng=rng,
        )  # fmt: skip
        self.depthwise_bn = BatchNorm2d(in_channels)
        self.pointwise = Conv2d(in_channels, out_channels, 1, bias=False, rng=rng)
        self.pointwise_bn = BatchNorm2d(out_channels)
        self.relu = ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.depthwise_bn(self.depthwise(x)))
        return self.relu(self.pointwise_bn(self.pointwise(x)))


class ASPPConv(Sequential):
    """One atrous branch: 3x3 conv with ``dilation`` (no bias) + BN + ReLU (torchvision's ``ASPPConv``)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int, *, rng: np.random.Generator) -> None:
        super().__init__(
            Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False, rng=rng),
            BatchNorm2d(out_channels),
            ReLU(),
        )


class ASPPPooling(Sequential):
    """Image-level branch: global average pool, 1x1 conv, BN, ReLU, bilinear upsampling to the input size.

    Its BN sees one value per image and channel, so in training mode it needs a batch of at least 2 (as in
    torch, :func:`segcore.functional.batch_norm` refuses a single value per channel).
    """

    def __init__(self, in_channels: int, out_channels: int, *, rng: np.random.Generator) -> None:
        super().__init__(
            AdaptiveAvgPool2d(1),
            Conv2d(in_channels, out_channels, 1, bias=False, rng=rng),
            BatchNorm2d(out_channels),
            ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(Module):
    """DeepLab v3 atrous spatial pyramid pooling (torchvision's ``ASPP`` layout and keys).

    Branches (each ``out_channels``, BN, ReLU) are concatenated and projected by a 1x1 conv + BN + ReLU +
    dropout: ``convs.0`` 1x1 conv; ``convs.1..R`` 3x3 atrous convs at ``atrous_rates`` (depthwise-separable
    :class:`SeparableConvBNReLU` when ``separable``); ``convs.R+1`` image-level pooling (when
    ``image_pooling``); ``project``.

    Parameters
    ----------
    in_channels:
        Channels of the backbone feature map.
    atrous_rates:
        Dilation of each 3x3 branch; :func:`deeplab_atrous_rates` gives the paper's for an output stride.
    out_channels:
        Channels of every branch and of the output (paper: 256).
    separable:
        Depthwise-separable 3x3 branches (DeepLab v3+); the 1x1 and pooling branches are unchanged.
    image_pooling:
        Include the image-level pooling branch (needs batch >= 2 in training, see :class:`ASPPPooling`).
    dropout:
        Dropout probability after the projection (paper/torchvision: 0.5; DeepLab v3+ uses 0.1).
    rng:
        Generator for initial weights and the dropout masks.
    """

    def __init__(
        self,
        in_channels: int,
        atrous_rates: Sequence[int] = (6, 12, 18),
        out_channels: int = 256,
        *,
        separable: bool = False,
        image_pooling: bool = True,
        dropout: float = 0.5,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        in_channels = _positive_int(in_channels, "in_channels", "ASPP")
        out_channels = _positive_int(out_channels, "out_channels", "ASPP")
        rates = check_atrous_rates(atrous_rates, "ASPP")
        for flag, value in (("separable", separable), ("image_pooling", image_pooling)):
            if not isinstance(value, bool):
                raise TypeError(f"ASPP: {flag} must be a bool, got {value!r}")
        if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"ASPP: dropout must be a probability in [0, 1), got {dropout!r}")
        rng = _rng(rng, "ASPP")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.atrous_rates = rates
        self.separable = separable
        branches: list[Module] = [
            Sequential(Conv2d(in_channels, out_channels, 1, bias=False, rng=rng), BatchNorm2d(out_channels), ReLU())
        ]
        for rate in rates:
            if separable:
                branches.append(SeparableConvBNReLU(in_channels, out_channels, 3, rate, rng=rng))
            else:
                branches.append(ASPPConv(in_channels, out_channels, rate, rng=rng))
        if image_pooling:
            branches.append(ASPPPooling(in_channels, out_channels, rng=rng))
        self.convs = ModuleList(branches)
        self.project = Sequential(
            Conv2d(len(branches) * out_channels, out_channels, 1, bias=False, rng=rng),
            BatchNorm2d(out_channels),
            ReLU(),
            Dropout(dropout, rng=rng),
        )

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != self.in_channels:
            shape = x.shape if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"ASPP: x must be (N, {self.in_channels}, H, W), got {shape}")
        return self.project(F.cat([branch(x) for branch in self.convs], dim=1))


class ASPPv2(Module):
    """DeepLab v2 ASPP: parallel 3x3 atrous convs straight to class scores, summed (``convs.0..R-1``).

    Each branch is a classifier with bias (DeepLab v2's fc8 at rates 6/12/18/24), initialised N(0, 0.01^2)
    with zero bias as in the released Caffe model.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        atrous_rates: Sequence[int] = (6, 12, 18, 24),
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        in_channels = _positive_int(in_channels, "in_channels", "ASPPv2")
        num_classes = _positive_int(num_classes, "num_classes", "ASPPv2")
        rates = check_atrous_rates(atrous_rates, "ASPPv2")
        rng = _rng(rng, "ASPPv2")
        self.atrous_rates = rates
        self.convs = ModuleList(
            [Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True, rng=rng) for r in rates]
        )
        for conv in self.convs:
            init.normal_(conv.weight, 0.0, 0.01, rng=rng)
            init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = None
        for conv in self.convs:
            score = conv(x)
            out = score if out is None else out + score
        return out
