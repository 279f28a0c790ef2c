"""Aligned Xception-65, the DeepLabv3+ backbone (Chen et al. 2018, "Encoder-Decoder with Atrous Separable
Convolution for Semantic Image Segmentation", section 3.2 and Fig. 4).

Compared with Chollet's Xception, the paper's modified ("aligned") version has a deeper middle flow (16
repeats), replaces every max pooling by a strided depthwise-separable convolution (so atrous convolution can
take over at any output stride), and adds batch normalisation and ReLU after each 3x3 depthwise convolution
as MobileNet does. Every :class:`SeparableConv2d` is therefore depthwise 3x3 + BN + ReLU + pointwise 1x1 + BN
(+ ReLU). Residual blocks are pre-activated as in Chollet's Xception and the authors' TensorFlow code: the
block input goes through ReLU before the first separable conv, the last separable conv ends at its BN, and
the shortcut (1x1 conv + BN, or identity) adds the un-rectified input, so the identity path stays clean
(He et al. 2016, "Identity Mappings"). The last exit-flow block has no shortcut and ends every separable
conv with ReLU.

Strides are replaced by dilation following the reference implementation's rule (also torchvision ResNet's):
a block that would reach beyond ``output_stride`` runs at stride 1 with the current dilation, and every later
layer uses the dilation multiplied by the dropped stride.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ... import functional as F
from ... import nn
from ...autograd import Tensor
from ..base import Backbone
from .mobilenetv2 import (
    _make_divisible,
    check_in_channels,
    check_input,
    check_output_stride,
    check_rng,
    check_width,
)

__all__ = ["SeparableConv2d", "XceptionBlock", "Xception65", "xception65", "BACKBONES"]

# Channels of the three separable convs of each block, its stride, and its shortcut: Fig. 4 of the paper.
_ENTRY_FLOW = (((128, 128, 128), 2, "conv"), ((256, 256, 256), 2, "conv"), ((728, 728, 728), 2, "conv"))
_MIDDLE_FLOW = ((728, 728, 728), 1, "sum")
_EXIT_FLOW = (((728, 1024, 1024), 2, "conv"), ((1536, 1536, 2048), 1, "none"))


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 (atrous) conv + BN + ReLU, then pointwise 1x1 conv + BN (+ ReLU when ``activation``).

    Padding equals the dilation, so the size is kept at stride 1 and becomes ``ceil(H / stride)`` otherwise.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 1,
        activation: bool = True,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, stride, dilation, dilation, groups=in_channels, bias=False, rng=rng
        )
        self.depthwise_bn = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False, rng=rng)
        self.pointwise_bn = nn.BatchNorm2d(out_channels)
        self.activation = bool(activation)
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.depthwise_bn(self.depthwise(x)))
        x = self.pointwise_bn(self.pointwise(x))
        return F.relu(x) if self.activation else x

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


class XceptionBlock(nn.Module):
    """Three separable convs (the last one strided) with a 1x1-conv (``"conv"``), identity (``"sum"``) or no
    (``"none"``) shortcut.

    With a shortcut the block computes ``convs(relu(x)) + shortcut(x)`` and its last conv has no ReLU (the
    next block applies it); without, ``convs(x)`` with a ReLU after every conv.
    """

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, int, int],
        stride: int = 1,
        dilation: int = 1,
        skip: str = "conv",
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        if skip not in ("conv", "sum", "none"):
            raise ValueError(f"XceptionBlock: skip must be 'conv', 'sum' or 'none', got {skip!r}")
        if skip == "sum" and (stride != 1 or in_channels != channels[-1]):
            raise ValueError(
                f"XceptionBlock: an identity shortcut needs stride 1 and in_channels == channels[-1], got "
                f"stride={stride}, in_channels={in_channels}, channels={channels}"
            )
        self.skip = skip
        ins = (in_channels, channels[0], channels[1])
        self.convs = nn.Sequential(
            *(
                SeparableConv2d(
                    ins[i], channels[i], stride if i == 2 else 1, dilation, activation=i < 2 or skip == "none", rng=rng
                )
                for i in range(3)
            )
        )
        if skip == "conv":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels[-1], 1, stride, bias=False, rng=rng), nn.BatchNorm2d(channels[-1])
            )
        self.out_channels = channels[-1]

    def forward_with_intermediate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The block's output and the output of its second separable conv (DeepLabv3+'s low-level feature)."""
        if self.skip == "none":
            middle = self.convs[1](self.convs[0](x))
            return self.convs[2](middle), middle
        middle = self.convs[1](self.convs[0](F.relu(x)))
        out = self.convs[2](middle)
        return out + (self.shortcut(x) if self.skip == "conv" else x), middle

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_intermediate(x)[0]


class Xception65(Backbone):
    """Aligned Xception-65 returning named features.

    ``forward(x)`` returns an ``OrderedDict``: ``stem`` (64 ch, stride 2), ``low_level`` (256 ch, stride 4: the
    second separable conv of entry block 2, where the reference DeepLabv3+ decoder taps), ``entry_flow``
    (728, 16), ``middle_flow`` (728, 16) and ``exit_flow`` (2048, ``output_stride``); channels scale with
    ``width`` and strides are capped by ``output_stride``. Any input size works (``ceil(H / 2)`` per stride).

    Parameters
    ----------
    width:
        Channel multiplier (rounded to multiples of 8, as MobileNet does); 1.0 is the paper's network.
    output_stride:
        32 (the classification network), 16 (exit flow dilated) or 8 (middle and exit flows dilated).
    middle_blocks:
        Repeats of the middle-flow block: 16 in Xception-65; fewer give a shallower network for CPU tests.
    in_channels:
        Channels of the input images.
    rng:
        Generator for the initial weights.
    """

    def __init__(
        self,
        width: float = 1.0,
        output_stride: int = 32,
        middle_blocks: int = 16,
        in_channels: int = 3,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        width = check_width(width, "Xception65")
        output_stride = check_output_stride(output_stride, "Xception65")
        if not isinstance(middle_blocks, (int, np.integer)) or isinstance(middle_blocks, bool) or middle_blocks < 0:
            raise ValueError(f"Xception65: middle_blocks must be an int >= 0 (16 in the paper), got {middle_blocks!r}")
        in_channels = check_in_channels(in_channels, "Xception65")
        rng = check_rng(rng, "Xception65")
        self.output_stride = output_stride

        def ch(c: int) -> int:
            return _make_divisible(c * width)

        def triple(cs: tuple[int, int, int]) -> tuple[int, int, int]:
            return ch(cs[0]), ch(cs[1]), ch(cs[2])

        stem = (ch(32), ch(64))
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem[0], 3, 2, 1, bias=False, rng=rng),
            nn.BatchNorm2d(stem[0]),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem[0], stem[1], 3, 1, 1, bias=False, rng=rng),
            nn.BatchNorm2d(stem[1]),
            nn.ReLU(inplace=True),
        )
        state = {"stride": 2, "dilation": 1}

        def block(in_ch: int, channels: tuple[int, int, int], stride: int, skip: str) -> XceptionBlock:
            dilation = state["dilation"]
            if stride > 1 and state["stride"] >= output_stride:
                state["dilation"] *= stride
                stride = 1
            else:
                state["stride"] *= stride
            return XceptionBlock(in_ch, triple(channels), stride, dilation, skip, rng=rng)

        entry, in_ch = [], stem[1]
        strides: list[int] = []
        for channels, stride, skip in _ENTRY_FLOW:
            entry.append(block(in_ch, channels, stride, skip))
            strides.append(state["stride"])
            in_ch = entry[-1].out_channels
        self.entry_flow = nn.Sequential(*entry)
        channels, stride, skip = _MIDDLE_FLOW
        self.middle_flow = nn.Sequential(*(block(in_ch, channels, stride, skip) for _ in range(int(middle_blocks))))
        exit_blocks = []
        for channels, stride, skip in _EXIT_FLOW:
            exit_blocks.append(block(in_ch, channels, stride, skip))
            in_ch = exit_blocks[-1].out_channels
        self.exit_flow = nn.Sequential(*exit_blocks)

        self._init_weights(rng)
        # Block 2 strides in its last conv only, so its second conv runs at block 1's output stride.
        for name, channels_, stride_ in (
            ("stem", stem[1], 2),
            ("low_level", self.entry_flow[1].convs[1].out_channels, strides[0]),
            ("entry_flow", self.entry_flow[2].out_channels, strides[2]),
            ("middle_flow", self.entry_flow[2].out_channels, strides[2]),
            ("exit_flow", in_ch, state["stride"]),
        ):
            self.feature_channels[name] = channels_
            self.feature_strides[name] = stride_

    def _init_weights(self, rng: np.random.Generator) -> None:
        # He normal (fan-out) for every conv, as torchvision initialises its ImageNet backbones.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", rng=rng)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = check_input(x, self, self.stem[0].in_channels, "Xception65")
        out: OrderedDict[str, Tensor] = OrderedDict()
        x = out["stem"] = self.stem(x)
        x = self.entry_flow[0](x)
        x, out["low_level"] = self.entry_flow[1].forward_with_intermediate(x)
        x = out["entry_flow"] = self.entry_flow[2](x)
        x = out["middle_flow"] = self.middle_flow(x)
        out["exit_flow"] = self.exit_flow(x)
        return out


def xception65(
    *,
    width: float = 1.0,
    output_stride: int = 32,
    middle_blocks: int = 16,
    in_channels: int = 3,
    rng: np.random.Generator | None = None,
) -> Xception65:
    """Aligned Xception-65 (DeepLabv3+ paper; 16 middle blocks, output stride 32 as drawn in its Fig. 4)."""
    return Xception65(width, output_stride, middle_blocks, in_channels, rng=rng)


BACKBONES = {"xception65": xception65}
