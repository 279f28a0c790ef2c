"""ResNet-18/34/50/101/152 backbones with torchvision's architecture (v1.5) and attribute names.

The stride of a Bottleneck sits on its 3x3 conv (torchvision "v1.5"), so a torchvision ``state_dict`` (without
``fc``, or with it when ``classifier=True``) loads key for key. For dense prediction the last stages can trade
their stride for dilation (``output_stride`` 16 or 8) exactly as torchvision's ``replace_stride_with_dilation``:
a dilated stage multiplies the running dilation by the stride it gives up, and its first block keeps the
previous dilation (in a BasicBlock only its strided ``conv1`` does; ``conv2`` already takes the new rate), so the
dilated network computes the strided network's values on the strided grid. DeepLab v3's multi-grid sets
layer4's unit rates to ``rate * multi_grid[i]``.

Features are named after the stages of the ResNet paper (ChainerCV's ``pick``): ``"stem"`` (conv1-bn1-relu,
stride 2), ``"res2"`` (layer1, stride 4), ``"res3"`` (layer2), ``"res4"`` (layer3), ``"res5"`` (layer4).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from ... import functional as F
from ...autograd import Tensor
from ...nn import (
    AdaptiveAvgPool2d,
    BatchNorm2d,
    Conv2d,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    Sequential,
    init,
)
from ..base import Backbone, as_image_batch, check_width  # check_width re-exported
from ..base import scaled_channels as scaled  # re-exported: model modules import it from here

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "RESNET_DEPTHS",
    "OUTPUT_STRIDES",
    "build_resnet",
    "check_output_stride",
    "check_width",
    "scaled",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "BACKBONES",
]

#: Output strides a ResNet can be built for (32 is the classification network; 16 and 8 dilate).
OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)


def check_output_stride(output_stride: object, where: str) -> int:
    """``output_stride`` as one of :data:`OUTPUT_STRIDES`, or a ValueError naming ``where``."""
    if not isinstance(output_stride, (int, np.integer)) or isinstance(output_stride, bool) or (
        output_stride not in OUTPUT_STRIDES
    ):
        raise ValueError(f"{where}: output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    return int(output_stride)



def _conv3x3(
    in_planes: int, out_planes: int, stride: int, dilation: int, rng: np.random.Generator, groups: int = 1
) -> Conv2d:
    # padding = dilation keeps the spatial size for stride 1, as torchvision's conv3x3.
    return Conv2d(
        in_planes, out_planes, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups,
        bias=False, rng=rng,
    )  # fmt: skip


def _conv1x1(in_planes: int, out_planes: int, stride: int, rng: np.random.Generator) -> Conv2d:
    return Conv2d(in_planes, out_planes, 1, stride=stride, bias=False, rng=rng)


class BasicBlock(Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34); ``expansion = 1``.

    torchvision refuses ``dilation > 1`` here; segcore dilates so that ResNet-18/34 can serve as dilated
    segmentation backbones: ``conv1`` (which carries the stride) uses ``dilation`` and ``conv2`` uses
    ``dilation2`` (default ``dilation``). In the first block of a dilated stage ``conv1`` keeps the previous
    dilation and ``conv2`` already runs at the stage's, which makes the dilated network compute exactly the
    strided one's values on the strided grid.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Module | None = None,
        dilation: int = 1,
        *,
        dilation2: int | None = None,
        rng: np.random.Generator,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation, rng)
        self.bn1 = BatchNorm2d(planes)
        self.relu = ReLU()
        self.conv2 = _conv3x3(planes, planes, 1, dilation if dilation2 is None else dilation2, rng)
        self.bn2 = BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(Module):
    """1x1 reduce, 3x3 (carrying stride and dilation: torchvision v1.5), 1x1 expand; ``expansion = 4``."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Module | None = None,
        dilation: int = 1,
        *,
        rng: np.random.Generator,
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes, 1, rng)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation, rng)
        self.bn2 = BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion, 1, rng)
        self.bn3 = BatchNorm2d(planes * self.expansion)
        self.relu = ReLU()
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


#: depth -> (block, blocks per stage), torchvision's table.
RESNET_DEPTHS: dict[int, tuple[type, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def _check_layers(layers: object) -> tuple[int, int, int, int]:
    if (
        not isinstance(layers, (tuple, list))
        or len(layers) != 4
        or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in layers)
    ):
        raise ValueError(f"ResNet: layers must be four positive ints (blocks per stage), got {layers!r}")
    return tuple(int(n) for n in layers)  # type: ignore[return-value]


def _check_multi_grid(multi_grid: object, blocks: int) -> tuple[int, ...] | None:
    if multi_grid is None:
        return None
    if (
        not isinstance(multi_grid, (tuple, list))
        or not multi_grid
        or not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r >= 1 for r in multi_grid)
    ):
        raise ValueError(f"ResNet: multi_grid must be None or a tuple of positive ints, got {multi_grid!r}")
    if len(multi_grid) != blocks:
        raise ValueError(
            f"ResNet: multi_grid={tuple(multi_grid)!r} gives {len(multi_grid)} unit rates but layer4 has {blocks} "
            f"blocks; pass {blocks} rates or multi_grid=None"
        )
    return tuple(int(r) for r in multi_grid)


class ResNet(Backbone):
    """ResNet backbone (torchvision layout) returning ``OrderedDict(stem, res2, res3, res4, res5)``.

    Parameters
    ----------
    block:
        :class:`BasicBlock` or :class:`Bottleneck`.
    layers:
        Blocks per stage, e.g. ``(3, 4, 23, 3)`` for ResNet-101.
    output_stride:
        32 (no dilation), 16 (layer4 dilated by 2) or 8 (layer3 by 2, layer4 by 4).
    multi_grid:
        ``None`` or one rate per layer4 block; block ``i`` of layer4 then uses dilation
        ``rate * multi_grid[i]`` where ``rate`` is layer4's dilation (DeepLab v3: (1, 2, 4) at output stride 16
        gives (2, 4, 8)). This replaces the first-block rule for layer4, as in the paper.
    width:
        Channel multiplier (stem 64, stages 64/128/256/512 planes, each ``max(1, round(c * width))``).
    in_channels:
        Image channels.
    classifier:
        Add torchvision's ImageNet head (``avgpool``, ``fc``) used by :meth:`classify`.
    num_classes:
        Outputs of ``fc`` when ``classifier`` is true (ImageNet: 1000).
    zero_init_residual:
        Start each block's last BN at zero (torchvision's option; off by default as there).
    rng:
        Generator for every layer's initial weights (convs: He normal, fan_out, as torchvision).
    """

    def __init__(
        self,
        block: type,
        layers: Sequence[int],
        *,
        output_stride: int = 32,
        multi_grid: Sequence[int] | None = None,
        width: float = 1.0,
        in_channels: int = 3,
        classifier: bool = False,
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        if block not in (BasicBlock, Bottleneck):
            raise TypeError(f"ResNet: block must be BasicBlock or Bottleneck, got {block!r}")
        layers = _check_layers(layers)
        output_stride = check_output_stride(output_stride, "ResNet")
        multi_grid = _check_multi_grid(multi_grid, layers[3])
        width = check_width(width, "ResNet")
        if not isinstance(in_channels, (int, np.integer)) or isinstance(in_channels, bool) or in_channels < 1:
            raise ValueError(f"ResNet: in_channels must be a positive int, got {in_channels!r}")
        for flag, value in (("classifier", classifier), ("zero_init_residual", zero_init_residual)):
            if not isinstance(value, bool):
                raise TypeError(f"ResNet: {flag} must be a bool, got {value!r}")
        if classifier and (
            not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1
        ):
            raise ValueError(f"ResNet: num_classes (outputs of fc) must be a positive int, got {num_classes!r}")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"ResNet: rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
        rng = np.random.default_rng() if rng is None else rng

        self.output_stride = output_stride
        self.multi_grid = multi_grid
        self.width = width
        # Stages whose stride 2 becomes dilation, torchvision's replace_stride_with_dilation for layer2..layer4.
        replace = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}[self.output_stride]

        self.inplanes = scaled(64, width)
        self.dilation = 1
        self.conv1 = Conv2d(in_channels, self.inplanes, 7, stride=2, padding=3, bias=False, rng=rng)
        self.bn1 = BatchNorm2d(self.inplanes)
        self.relu = ReLU()
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, scaled(64, width), layers[0], 1, False, None, rng)
        self.layer2 = self._make_layer(block, scaled(128, width), layers[1], 2, replace[0], None, rng)
        self.layer3 = self._make_layer(block, scaled(256, width), layers[2], 2, replace[1], None, rng)
        self.layer4 = self._make_layer(block, scaled(512, width), layers[3], 2, replace[2], multi_grid, rng)
        if classifier:
            self.avgpool = AdaptiveAvgPool2d((1, 1))
            self.fc = Linear(self.inplanes, num_classes, rng=rng)

        for module in self.modules():
            if isinstance(module, Conv2d):
                init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", rng=rng)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    init.zeros_(module.bn2.weight)

        stage_out = [scaled(p, width) * block.expansion for p in (64, 128, 256, 512)]
        strides = [4, 8, 16, 32]
        for i in range(1, 4):
            if replace[i - 1]:
                strides[i] = strides[i - 1]
        self.feature_channels = OrderedDict(
            [("stem", scaled(64, width)), ("res2", stage_out[0]), ("res3", stage_out[1]), ("res4", stage_out[2]),
             ("res5", stage_out[3])]
        )  # fmt: skip
        self.feature_strides = OrderedDict(
            [("stem", 2), ("res2", strides[0]), ("res3", strides[1]), ("res4", strides[2]), ("res5", strides[3])]
        )

    def _make_layer(
        self,
        block: type,
        planes: int,
        blocks: int,
        stride: int,
        dilate: bool,
        multi_grid: tuple[int, ...] | None,
        rng: np.random.Generator,
    ) -> Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if multi_grid is None:
            rates = [previous_dilation] + [self.dilation] * (blocks - 1)
        else:
            rates = [self.dilation * r for r in multi_grid]
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride, rng), BatchNorm2d(planes * block.expansion)
            )
        # BasicBlock's conv2 follows the (removed) stride, so it runs at the stage's dilation already.
        extra = {"dilation2": self.dilation} if block is BasicBlock and multi_grid is None else {}
        units = [block(self.inplanes, planes, stride, downsample, rates[0], rng=rng, **extra)]
        self.inplanes = planes * block.expansion
        for i in range(1, blocks):
            units.append(block(self.inplanes, planes, dilation=rates[i], rng=rng))
        return Sequential(*units)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """Named features ``stem, res2, res3, res4, res5`` of an ``(N, C, H, W)`` batch."""
        x = as_image_batch(x, self, "x")
        features: OrderedDict[str, Tensor] = OrderedDict()
        x = self.relu(self.bn1(self.conv1(x)))
        features["stem"] = x
        x = self.layer1(self.maxpool(x))
        features["res2"] = x
        x = self.layer2(x)
        features["res3"] = x
        x = self.layer3(x)
        features["res4"] = x
        features["res5"] = self.layer4(x)
        return features

    def classify(self, x: Tensor) -> Tensor:
        """ImageNet logits ``(N, num_classes)``: global average pool of res5, then ``fc``."""
        if "fc" not in self._modules:
            raise RuntimeError("ResNet.classify needs the ImageNet head: build the backbone with classifier=True")
        pooled = self.avgpool(self(x)["res5"])
        return self.fc(F.flatten(pooled, 1))


def build_resnet(
    name: str,
    *,
    output_stride: int = 32,
    multi_grid: Sequence[int] | None = None,
    width: float = 1.0,
    in_channels: int = 3,
    classifier: bool = False,
    num_classes: int = 1000,
    zero_init_residual: bool = False,
    rng: np.random.Generator | None = None,
) -> ResNet:
    """The ResNet named ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` or ``"resnet152"``.

    Models take their backbone by this name; every keyword goes to :class:`ResNet`.
    """
    names = {f"resnet{depth}": depth for depth in RESNET_DEPTHS}
    if not isinstance(name, str) or name not in names:
        raise ValueError(f"backbone must be one of {', '.join(map(repr, names))}, got {name!r}")
    block, layers = RESNET_DEPTHS[names[name]]
    return ResNet(
        block, layers, output_stride=output_stride, multi_grid=multi_grid, width=width, in_channels=in_channels,
        classifier=classifier, num_classes=num_classes, zero_init_residual=zero_init_residual, rng=rng,
    )  # fmt: skip


def resnet18(
    *,
    output_stride: int = 32,
    multi_grid: Sequence[int] | None = None,
    width: float = 1.0,
    in_channels: int = 3,
    classifier: bool = False,
    num_classes: int = 1000,
    zero_init_residual: bool = False,
    rng: np.random.Generator | None = None,
) -> ResNet:
    """ResNet-18 (BasicBlock, 2-2-2-2); 11,689,512 parameters with the ImageNet classifier."""
    return build_resnet("resnet18", **_kwargs(locals()))


def resnet34(
    *,
    output_stride: int = 32,
    multi_grid: Sequence[int] | None = None,
    width: float = 1.0,
    in_channels: int = 3,
    classifier: bool = False,
    num_classes: int = 1000,
    zero_init_residual: bool = False,
    rng: np.random.Generator | None = None,
) -> ResNet:
    """ResNet-34 (BasicBlock, 3-4-6-3); 21,797,672 parameters with the ImageNet classifier."""
    return build_resnet("resnet34", **_kwargs(locals()))


def resnet50(
    *,
    output_stride: int = 32,
    multi_grid: Sequence[int] | None = None,
    width: float = 1.0,
    in_channels: int = 3,
    classifier: bool = False,
    num_classes: int = 1000,
    zero_init_residual: bool = False,
    rng: np.random.Generator | None = None,
) -> ResNet:
    """ResNet-50 (Bottleneck, 3-4-6-3); 25,557,032 parameters with the ImageNet classifier."""
    return build_resnet("resnet50", **_kwargs(locals()))


def resnet101(
    *,
    output_stride: int = 32,
    multi_grid: Sequence[int] | None = None,
    width: float = 1.0,
    in_channels: int = 3,
    classifier: bool = False,
    num_classes: int = 1000,
    zero_init_residual: bool = False,
    rng: np.random.Generator | None = None,
) -> ResNet:
    """ResNet-101 (Bottleneck, 3-4-23-3); 44,549,160 parameters with the ImageNet classifier."""
    return build_resnet("resnet101", **_kwargs(locals()))


def resnet152(
    *,
    output_stride: int = 32,
    multi_grid: Sequence[int] | None = None,
    width: float = 1.0,
    in_channels: int = 3,
    classifier: bool = False,
    num_classes: int = 1000,
    zero_init_residual: bool = False,
    rng: np.random.Generator | None = None,
) -> ResNet:
    """ResNet-152 (Bottleneck, 3-8-36-3); 60,192,808 parameters with the ImageNet classifier."""
    return build_resnet("resnet152", **_kwargs(locals()))


def _kwargs(local: dict) -> dict:
    return {k: v for k, v in local.items() if not k.startswith("_")}


BACKBONES = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
}
