"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

Inverted residual blocks (1x1 expansion + ReLU6, depthwise 3x3 + ReLU6, linear 1x1 projection) with a
residual connection when input and output shapes agree. Module names follow torchvision's ``mobilenet_v2``
(``features.0`` stem .. ``features.18`` last 1x1 conv, ``InvertedResidual.conv``, ``classifier.1``), so its
weights map key for key. For segmentation the last stages trade stride for dilation (``output_stride`` 16 or
8) as DeepLab's MobileNet variant does: the layer that would have strided keeps the previous dilation and
every later layer uses the multiplied one (torchvision's ResNet rule).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ... import functional as F
from ... import nn
from ...autograd import Tensor
from ..base import Backbone, as_image_batch, check_width  # check_width re-exported

__all__ = [
    "BACKBONES",
    "Conv2dNormActivation",
    "InvertedResidual",
    "MobileNetV2",
    "check_in_channels",
    "check_input",
    "check_output_stride",
    "check_rng",
    "check_width",
    "mobilenet_v2",
]

# (expansion t, output channels c, repeats n, stride s): the paper's Table 2.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# The last tensor of each resolution (``features`` index) under FPN's ``c<k>`` names, k = log2(stride)
# without dilation: c2 is DeepLabv3+'s low-level feature, c5 the high-level one.
_FEATURE_LAYERS = OrderedDict([("c1", 1), ("c2", 3), ("c3", 6), ("c4", 13), ("c5", 18)])


def _make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without going more than 10% below it.

    torchvision's (and the TensorFlow reference's) rounding, so channel counts match theirs for every width.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def check_output_stride(output_stride: object, owner: str, allowed: tuple[int, ...] = (8, 16, 32)) -> int:
    """``output_stride`` as an int from ``allowed``, or a ValueError naming ``owner``."""
    is_int = isinstance(output_stride, (int, np.integer)) and not isinstance(output_stride, bool)
    if not is_int or output_stride not in allowed:
        raise ValueError(f"{owner}: output_stride must be one of {allowed}, got {output_stride!r}")
    return int(output_stride)


def check_in_channels(in_channels: object, owner: str) -> int:
    """``in_channels`` as a positive int, or a ValueError naming ``owner``."""
    if not isinstance(in_channels, (int, np.integer)) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"{owner}: in_channels must be a positive int, got {in_channels!r}")
    return int(in_channels)


def check_rng(rng: object, owner: str) -> np.random.Generator:
    """``rng`` itself, or a fresh unseeded generator for ``None``; a TypeError naming ``owner`` otherwise."""
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"{owner}: rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return np.random.default_rng() if rng is None else rng


def check_input(x: object, like: nn.Module, in_channels: int, owner: str) -> Tensor:
    """``x`` as an ``(N, in_channels, H, W)`` Tensor on ``like``'s backend (NumPy float arrays accepted)."""
    x = as_image_batch(x, like, "x")
    if x.shape[1] != in_channels:
        raise ValueError(f"{owner}: x must have shape (N, {in_channels}, H, W), got {x.shape}")
    return x


class Conv2dNormActivation(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU6, children ``0``, ``1``, ``2`` like torchvision's block.

    Padding ``dilation * (k - 1) // 2`` keeps the size at stride 1 and gives ``ceil(H / stride)`` otherwise.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False, rng=rng),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """Expand (1x1, ReLU6) -> depthwise 3x3 (ReLU6) -> linear 1x1 projection, plus the input when shapes allow.

    ``conv`` is torchvision's ``Sequential``: ``[expand,] depthwise, projection conv, projection BN``.
    """

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        dilation: int = 1,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual: stride must be 1 or 2, got {stride!r}")
        self.stride = stride
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden_dim, kernel_size=1, rng=rng))
        layers += [
            Conv2dNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim, dilation=dilation, rng=rng),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False, rng=rng),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        # torchvision's marker of a block that starts a new resolution stage.
        self._is_cn = stride > 1

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(Backbone):
    """MobileNetV2 feature extractor with optional ImageNet-style classifier.

    ``forward(x)`` returns an ``OrderedDict`` of features ``c1`` (``features.1``, stride 2), ``c2``
    (``features.3``, stride 4: DeepLabv3+'s low-level feature), ``c3`` (``features.6``, 8), ``c4``
    (``features.13``, 16) and ``c5`` (``features.18``, the last 1x1 conv, stride ``output_stride``); strides
    are capped by ``output_stride``. Any input size works (strided convs give ``ceil(H / 2)``).

    Parameters
    ----------
    width_mult:
        Channel multiplier (torchvision's rounding to multiples of 8); the last conv keeps
        ``1280 * max(1, width_mult)`` channels as in the paper.
    output_stride:
        32 (the classification network), 16 or 8 (later strides replaced by dilation).
    num_classes:
        When an int, adds torchvision's ``classifier`` (Dropout 0.2 + Linear) used by :meth:`classify`.
    in_channels:
        Channels of the input images.
    rng:
        Generator for the initial weights and the classifier's dropout masks.
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        output_stride: int = 32,
        num_classes: int | None = None,
        in_channels: int = 3,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        width_mult = check_width(width_mult, "MobileNetV2", "width_mult")
        output_stride = check_output_stride(output_stride, "MobileNetV2")
        if num_classes is not None and (
            not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1
        ):
            raise ValueError(f"MobileNetV2: num_classes must be a positive int or None, got {num_classes!r}")
        in_channels = check_in_channels(in_channels, "MobileNetV2")
        rng = check_rng(rng, "MobileNetV2")
        self.output_stride = output_stride
        input_channel = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))

        layers: list[nn.Module] = [Conv2dNormActivation(in_channels, input_channel, stride=2, rng=rng)]
        strides = [2]
        current_stride, dilation = 2, 1
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            output_channel = _make_divisible(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                if stride > 1 and current_stride >= output_stride:
                    # The de-strided layer keeps the old dilation; the layers after it see the multiplied one.
                    layers.append(InvertedResidual(input_channel, output_channel, 1, t, dilation, rng=rng))
                    dilation *= stride
                else:
                    layers.append(InvertedResidual(input_channel, output_channel, stride, t, dilation, rng=rng))
                    current_stride *= stride
                strides.append(current_stride)
                input_channel = output_channel
        layers.append(Conv2dNormActivation(input_channel, self.last_channel, kernel_size=1, rng=rng))
        strides.append(current_stride)
        self.features = nn.Sequential(*layers)

        self.num_classes = None if num_classes is None else int(num_classes)
        if self.num_classes is not None:
            self.classifier = nn.Sequential(
                nn.Dropout(p=0.2, rng=rng), nn.Linear(self.last_channel, self.num_classes, rng=rng)
            )
        self._init_weights(rng)

        self._taps = {index: name for name, index in _FEATURE_LAYERS.items()}
        for name, index in _FEATURE_LAYERS.items():
            block = self.features[index]
            self.feature_channels[name] = block.out_channels
            self.feature_strides[name] = strides[index]

    def _init_weights(self, rng: np.random.Generator) -> None:
        # torchvision's initialisation: He normal (fan-out) convs, N(0, 0.01) classifier, zero biases.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", rng=rng)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01, rng=rng)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = check_input(x, self, self.features[0][0].in_channels, "MobileNetV2")
        out: OrderedDict[str, Tensor] = OrderedDict()
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                out[self._taps[index]] = x
        return out

    def classify(self, x: Tensor) -> Tensor:
        """ImageNet-style logits ``(N, num_classes)``: global average pool of ``c5`` + classifier."""
        if self.num_classes is None:
            raise ValueError("MobileNetV2.classify: the backbone was built without a classifier (num_classes=None)")
        pooled = F.flatten(F.adaptive_avg_pool2d(self(x)["c5"], 1), 1)
        return self.classifier(pooled)


def mobilenet_v2(
    *,
    width_mult: float = 1.0,
    output_stride: int = 32,
    num_classes: int | None = None,
    in_channels: int = 3,
    rng: np.random.Generator | None = None,
) -> MobileNetV2:
    """MobileNetV2 backbone (paper configuration: width 1.0, output stride 32); features ``c1``..``c5``."""
    return MobileNetV2(width_mult, output_stride, num_classes, in_channels, rng=rng)


BACKBONES = {"mobilenet_v2": mobilenet_v2}
