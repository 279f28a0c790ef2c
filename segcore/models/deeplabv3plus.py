"""DeepLab v3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation").

Encoder: a backbone at output stride 16 (or 8) and DeepLab v3's ASPP (1x1 branch, three 3x3 atrous branches
at rates 6/12/18, doubled at output stride 8, and image-level pooling; 256 channels each; concatenation and
a 1x1 projection). Decoder (the paper's section 3.1 and Fig. 2): the backbone's stride-4 low-level feature is
reduced to 48 channels by 1x1 conv + BN + ReLU, concatenated after the bilinearly upsampled ASPP output, refined
by two 3x3 convs of 256 channels and classified by a 1x1 conv; logits are upsampled bilinearly to the input.
With ``separable`` the ASPP's atrous branches and the decoder's 3x3 convs are depthwise-separable (depthwise
+ BN + ReLU, pointwise + BN + ReLU), the paper's best Xception configuration.

Attribute names follow the ChainerCV composition (``backbone``, ``aspp``, ``decoder``, ``classifier``);
``aspp`` has torchvision's ASPP keys (``aspp.convs.N``, ``aspp.project``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..nn import BatchNorm2d, Conv2d, Module, ReLU, Sequential
from .aspp import ASPP, SeparableConvBNReLU, check_atrous_rates, deeplab_atrous_rates
from .backbones.mobilenetv2 import MobileNetV2, check_rng
from .backbones.resnet import build_resnet, check_width, scaled
from .backbones.xception import Xception65
from .base import Backbone, SemanticSegmentationModel, as_image_batch

__all__ = ["DeepLabV3Plus", "DeepLabV3PlusDecoder", "BACKBONE_FEATURES", "deeplabv3plus", "SEMANTIC_MODELS"]

#: Backbone name -> (low-level feature at stride 4, high-level feature) that the decoder and ASPP read.
BACKBONE_FEATURES: dict[str, tuple[str, str]] = {
    "xception65": ("low_level", "exit_flow"),
    "resnet50": ("res2", "res5"),
    "resnet101": ("res2", "res5"),
    "mobilenet_v2": ("c2", "c5"),
}

#: Separable ASPP/decoder convs per backbone when ``separable=None``: the paper's Xception-65 models use them
#: (Table 5, "SC"), its ResNet-101 decoder study does not (Table 3); MobileNetV2, absent from the paper, gets
#: them like the other depthwise-separable backbone (and as in the authors' reference code's defaults).
_SEPARABLE_BY_DEFAULT = {"xception65": True, "resnet50": False, "resnet101": False, "mobilenet_v2": True}


def _conv3x3_bn_relu(in_channels: int, out_channels: int, separable: bool, rng: np.random.Generator) -> Module:
    if separable:
        return SeparableConvBNReLU(in_channels, out_channels, 3, rng=rng)
    return Sequential(
        Conv2d(in_channels, out_channels, 3, padding=1, bias=False, rng=rng), BatchNorm2d(out_channels), ReLU()
    )


class DeepLabV3PlusDecoder(Module):
    """The v3+ decoder up to (not including) the classifier.

    ``low_level``: 1x1 conv to ``low_level_channels`` + BN + ReLU on the low-level feature; ``convs``: two 3x3
    conv + BN + ReLU (depthwise-separable when ``separable``) on ``cat([upsampled encoder output,
    reduced low-level feature])``. Output: ``channels`` maps at the low-level feature's resolution.
    """

    def __init__(
        self,
        in_channels: int,
        low_level_in_channels: int,
        low_level_channels: int = 48,
        channels: int = 256,
        *,
        separable: bool = True,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        rng = check_rng(rng, "DeepLabV3PlusDecoder")
        self.in_channels = in_channels
        self.low_level_in_channels = low_level_in_channels
        self.low_level = Sequential(
            Conv2d(low_level_in_channels, low_level_channels, 1, bias=False, rng=rng),
            BatchNorm2d(low_level_channels),
            ReLU(),
        )
        self.convs = Sequential(
            _conv3x3_bn_relu(in_channels + low_level_channels, channels, separable, rng),
            _conv3x3_bn_relu(channels, channels, separable, rng),
        )
        self.out_channels = channels

    def forward(self, x: Tensor, low_level: Tensor) -> Tensor:
        low = self.low_level(low_level)
        # Upsampling to the low-level map's exact size (not a fixed 4x) keeps odd input sizes aligned.
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(F.cat([x, low], dim=1))


class DeepLabV3Plus(SemanticSegmentationModel):
    """Backbone + ASPP + decoder + 1x1 classifier; ``forward`` returns logits at the input resolution.

    Parameters
    ----------
    backbone:
        A :class:`~segcore.models.Backbone` producing ``low_level_feature`` and ``high_level_feature``.
    num_classes:
        Number of classes ``K``.
    low_level_feature, high_level_feature:
        Names of the decoder's low-level input (stride 4 in the paper) and of the ASPP's input.
    atrous_rates:
        ASPP rates (paper: (6, 12, 18) at output stride 16, (12, 24, 36) at 8).
    aspp_channels, low_level_channels, decoder_channels:
        256, 48 and 256 in the paper.
    separable:
        Depthwise-separable 3x3 convs in the ASPP and the decoder.
    dropout:
        Dropout after the ASPP projection (0.1 in the reference implementation).
    rng:
        Generator for the head's initial weights and dropout masks.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        low_level_feature: str,
        high_level_feature: str,
        atrous_rates: Sequence[int] = (6, 12, 18),
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        separable: bool = True,
        dropout: float = 0.1,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(num_classes)
        if not isinstance(backbone, Backbone):
            raise TypeError(f"DeepLabV3Plus: backbone must be a segcore.models.Backbone, got {type(backbone).__name__}")
        for argument, name in (("low_level_feature", low_level_feature), ("high_level_feature", high_level_feature)):
            if name not in backbone.feature_channels:
                known = ", ".join(backbone.feature_channels)
                raise ValueError(f"DeepLabV3Plus: {argument}={name!r} is not produced by the backbone (it has {known})")
        for argument, value in (
            ("aspp_channels", aspp_channels),
            ("low_level_channels", low_level_channels),
            ("decoder_channels", decoder_channels),
        ):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DeepLabV3Plus: {argument} must be a positive int, got {value!r}")
        if not isinstance(separable, bool):
            raise TypeError(f"DeepLabV3Plus: separable must be a bool, got {separable!r}")
        rng = check_rng(rng, "DeepLabV3Plus")
        self.backbone = backbone
        self.low_level_feature = low_level_feature
        self.high_level_feature = high_level_feature
        self.aspp = ASPP(
            backbone.feature_channels[high_level_feature],
            check_atrous_rates(atrous_rates, "DeepLabV3Plus"),
            int(aspp_channels),
            separable=separable,
            dropout=dropout,
            rng=rng,
        )
        self.decoder = DeepLabV3PlusDecoder(
            int(aspp_channels),
            backbone.feature_channels[low_level_feature],
            int(low_level_channels),
            int(decoder_channels),
            separable=separable,
            rng=rng,
        )
        self.classifier = Conv2d(int(decoder_channels), self.num_classes, 1, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, K, H, W)`` at the input resolution (any ``H, W``: strides round up)."""
        x = as_image_batch(x, self, "x")
        features = self.backbone(x)
        out = self.decoder(self.aspp(features[self.high_level_feature]), features[self.low_level_feature])
        return F.interpolate(self.classifier(out), size=x.shape[-2:], mode="bilinear", align_corners=False)


def deeplabv3plus(
    *,
    num_classes: int,
    backbone: str = "xception65",
    output_stride: int = 16,
    separable: bool | None = None,
    atrous_rates: Sequence[int] | None = None,
    multi_grid: Sequence[int] | None = None,
    width: float = 1.0,
    rng: np.random.Generator | None = None,
) -> DeepLabV3Plus:
    """DeepLab v3+: backbone + ASPP + decoder on the stride-4 feature (paper: Xception-65, output stride 16).

    ``backbone`` is ``"xception65"``, ``"resnet50"``, ``"resnet101"`` or ``"mobilenet_v2"``; ``output_stride``
    16 or 8 (ASPP rates (6, 12, 18) or (12, 24, 36) unless ``atrous_rates`` is given). ``separable=None`` takes
    the paper's choice for the backbone: depthwise-separable ASPP and decoder convs for Xception-65 and
    MobileNetV2, regular ones for ResNets. ``multi_grid`` (ResNets only) sets layer4's unit rates as in
    DeepLab v3. ``width`` scales backbone and head channels. The image-pooling branch needs a batch of at
    least 2 in training.
    """
    model = "deeplabv3plus"
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"{model}: num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(backbone, str) or backbone not in BACKBONE_FEATURES:
        known = ", ".join(map(repr, BACKBONE_FEATURES))
        raise ValueError(f"{model}: backbone must be one of {known}, got {backbone!r}")
    if isinstance(output_stride, bool) or output_stride not in (8, 16):
        raise ValueError(f"{model}: output_stride must be 16 or 8, got {output_stride!r}")
    if separable is not None and not isinstance(separable, bool):
        raise TypeError(f"{model}: separable must be a bool or None (the paper's choice), got {separable!r}")
    if multi_grid is not None and not backbone.startswith("resnet"):
        raise ValueError(f"{model}: multi_grid applies to ResNet backbones only, got it with backbone={backbone!r}")
    width = check_width(width, model)
    rng = check_rng(rng, model)
    rates = check_atrous_rates(deeplab_atrous_rates(output_stride) if atrous_rates is None else atrous_rates, model)
    separable = _SEPARABLE_BY_DEFAULT[backbone] if separable is None else separable

    net: Backbone
    if backbone == "xception65":
        net = Xception65(width, output_stride, rng=rng)
    elif backbone == "mobilenet_v2":
        net = MobileNetV2(width, output_stride, rng=rng)
    else:
        net = build_resnet(backbone, output_stride=output_stride, multi_grid=multi_grid, width=width, rng=rng)
    low, high = BACKBONE_FEATURES[backbone]
    return DeepLabV3Plus(
        net,
        num_classes,
        low_level_feature=low,
        high_level_feature=high,
        atrous_rates=rates,
        aspp_channels=scaled(256, width),
        low_level_channels=scaled(48, width),
        decoder_channels=scaled(256, width),
        separable=separable,
        rng=rng,
    )


SEMANTIC_MODELS = {"deeplabv3plus": deeplabv3plus}
