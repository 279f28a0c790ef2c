"""SegNet and SegNet-Basic (Badrinarayanan, Kendall & Cipolla, TPAMI 2017).

Decoders upsample with the max-pooling indices ("switches") of the matching encoder stage
(:func:`segcore.functional.max_unpool2d`), so no upsampling is learned; each unpooled sparse map is then
densified by trainable convolutions. Unpooling restores the exact size of the encoder map it mirrors, so any
input size works (odd ones included), down to 32 pixels for SegNet and 16 for SegNet-Basic.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..nn import BatchNorm2d, Conv2d, ModuleList, ReLU, Sequential
from .backbones.vgg import VGG, VGG16_STAGES, check_positive_int, check_rng, check_width, scaled_channels
from .base import SemanticSegmentationModel, as_image_batch

__all__ = ["SegNet", "SegNetBasic", "segnet", "segnet_basic", "SEMANTIC_MODELS"]


def _conv_bn(cin: int, cout: int, kernel: int, rng: np.random.Generator, *, bias: bool = True, relu: bool = True):
    layers = [Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias, rng=rng), BatchNorm2d(cout)]
    if relu:
        layers.append(ReLU(inplace=True))
    return layers


class SegNet(SemanticSegmentationModel):
    """SegNet: VGG-16-BN encoder (13 convs, ``backbone.features`` in torchvision's ``vgg16_bn`` layout) and a
    mirrored decoder of unpooling + 3x3 conv/BN/ReLU layers; ``classifier`` is the last decoder conv
    (3x3 to ``num_classes``, no BN), as conv1_1_D in the reference Caffe model.

    ``decoder[0]`` is the decoder of stage 5 (applied first), ``decoder[4]`` that of stage 1. Decoder stage
    ``s`` keeps the encoder's channel count ``C_s`` and its last conv maps to ``C_{s-1}``
    (512-512-512 | 512-512-256 | 256-256-128 | 128-64 | 64 then the classifier).

    Parameters
    ----------
    num_classes:
        Number of classes (11 for CamVid).
    width:
        Multiplier of every channel count.
    rng:
        Generator for the initial weights.
    """

    def __init__(self, num_classes: int, *, width: float = 1.0, rng: np.random.Generator | None = None) -> None:
        super().__init__(num_classes)
        rng = check_rng(rng, "segnet")
        rng = np.random.default_rng() if rng is None else rng
        width = check_width(width, "segnet")
        self.backbone = VGG(batch_norm=True, width=width, fc_channels=None, rng=rng, name="segnet")
        stage_inputs = [3] + [self.backbone.feature_channels[f"conv{s}"] for s in range(1, 5)]
        decoders = []
        for stage in range(5, 0, -1):
            channels = self.backbone.feature_channels[f"conv{stage}"]
            convs = len(VGG16_STAGES[stage - 1])
            # Stage 1 ends in the classifier instead of a conv back to the 3 input channels.
            outs = [channels] * (convs - 1) + ([stage_inputs[stage - 1]] if stage > 1 else [])
            layers, cin = [], channels
            for out in outs:
                layers += _conv_bn(cin, out, 3, rng)
                cin = out
            decoders.append(Sequential(*layers))
        self.decoder = ModuleList(decoders)
        self.classifier = Conv2d(self.backbone.feature_channels["conv1"], self.num_classes, 3, padding=1, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        x = as_image_batch(x, self)
        features, switches = self.backbone.forward_with_switches(x)
        y = features["pool5"]
        for decoder, (indices, size) in zip(self.decoder, reversed(switches)):
            y = decoder(F.max_unpool2d(y, indices, 2, 2, output_size=size))
        return self.classifier(y)


class SegNetBasic(SemanticSegmentationModel):
    """SegNet-Basic: 4 encoder stages (7x7 conv without bias, BN, ReLU, 2x2 max-pool) and 4 decoder stages
    (unpool with the switches, 7x7 conv without bias, BN, no ReLU), then a 1x1 ``classifier``.

    The paper's settings: constant 7x7 kernels and 64 channels, no biases, no ReLU in the decoder. The
    reference Caffe model's local response normalisation of the input is left out (normalise images in the
    data pipeline instead).

    Parameters
    ----------
    num_classes:
        Number of classes (11 for CamVid).
    width:
        Multiplier of the 64 channels.
    channels:
        Channels of every encoder/decoder conv before ``width`` scaling.
    in_channels:
        Channels of the input images.
    rng:
        Generator for the initial weights.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        width: float = 1.0,
        channels: int = 64,
        in_channels: int = 3,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(num_classes)
        rng = check_rng(rng, "segnet_basic")
        rng = np.random.default_rng() if rng is None else rng
        width = check_width(width, "segnet_basic")
        c = scaled_channels(check_positive_int(channels, "channels", "segnet_basic"), width)
        self.in_channels = check_positive_int(in_channels, "in_channels", "segnet_basic")
        self.encoder = ModuleList(
            [Sequential(*_conv_bn(self.in_channels if i == 0 else c, c, 7, rng, bias=False)) for i in range(4)]
        )
        self.decoder = ModuleList([Sequential(*_conv_bn(c, c, 7, rng, bias=False, relu=False)) for _ in range(4)])
        self.classifier = Conv2d(c, self.num_classes, 1, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        x = as_image_batch(x, self)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"segnet_basic: images must have shape (N, {self.in_channels}, H, W), got {x.shape}")
        if min(x.shape[-2:]) < 16:
            raise ValueError(f"segnet_basic: images must be at least 16x16 pixels (four poolings), got "
                             f"{x.shape[-2]}x{x.shape[-1]}")
        switches = []
        for encoder in self.encoder:
            x = encoder(x)
            size = (x.shape[-2], x.shape[-1])
            x, indices = F.max_pool2d(x, 2, 2, return_indices=True)
            switches.append((indices, size))
        for decoder, (indices, size) in zip(self.decoder, reversed(switches)):
            x = decoder(F.max_unpool2d(x, indices, 2, 2, output_size=size))
        return self.classifier(x)


def segnet(*, num_classes: int = 11, width: float = 1.0, rng: np.random.Generator | None = None) -> SegNet:
    """SegNet: VGG-16-BN encoder, decoder upsampling with the encoder's max-pooling indices."""
    return SegNet(num_classes, width=width, rng=rng)


def segnet_basic(
    *,
    num_classes: int = 11,
    width: float = 1.0,
    channels: int = 64,
    in_channels: int = 3,
    rng: np.random.Generator | None = None,
) -> SegNetBasic:
    """SegNet-Basic: 4 encoder/decoder stages of 7x7 convs with 64 channels, unpooling with the switches."""
    return SegNetBasic(num_classes, width=width, channels=channels, in_channels=in_channels, rng=rng)


SEMANTIC_MODELS = {"segnet": segnet, "segnet_basic": segnet_basic}
