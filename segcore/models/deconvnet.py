"""DeconvNet (Noh, Hong & Han, "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015).

VGG-16 encoder (13 convs with BatchNorm, ``backbone.features`` in torchvision's ``vgg16_bn`` layout), fc6 as
a valid 7x7 conv and fc7 as a 1x1 conv (4096 channels each), then the mirrored decoder of the paper's
Table 1: a 7x7 deconvolution back to pool5's size (``deconv_fc6``), and per stage an unpooling with the
encoder's pooling switches followed by 3x3 deconvolutions; a 1x1 ``classifier`` scores the 64-channel map.
The paper adds BatchNorm (and ReLU) after every convolution and deconvolution, fc6/fc7 included; it uses
no dropout. Inputs must be multiples of 32 (so unpooling inverts every pooling exactly) and at least 224
pixels (fc6 needs a 7x7 pool5 map), the paper's 224x224 being the smallest.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..nn import BatchNorm2d, Conv2d, ConvTranspose2d, ModuleList, ReLU, Sequential
from .backbones.vgg import VGG, check_rng, check_width, scaled_channels
from .base import SemanticSegmentationModel, as_image_batch, check_divisible

__all__ = ["DeconvNet", "deconvnet", "SEMANTIC_MODELS"]

#: Output channels of the 3x3 deconvolutions after each unpooling (paper Table 1), stage 5 first.
DECODER_STAGES: tuple[tuple[int, ...], ...] = ((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64, 64))


class DeconvNet(SemanticSegmentationModel):
    """DeconvNet: ``backbone`` (VGG-16-BN convs), ``fc6``, ``fc7``, ``deconv_fc6``, ``decoder`` (one
    ``Sequential`` of deconv/BN/ReLU per unpooling, stage 5 first) and ``classifier`` (1x1 conv).

    Parameters
    ----------
    num_classes:
        Number of classes (21 for PASCAL VOC).
    width:
        Multiplier of every channel count (fc6/fc7 included).
    rng:
        Generator for the initial weights.
    """

    def __init__(self, num_classes: int, *, width: float = 1.0, rng: np.random.Generator | None = None) -> None:
        super().__init__(num_classes)
        rng = check_rng(rng, "deconvnet")
        rng = np.random.default_rng() if rng is None else rng
        width = check_width(width, "deconvnet")
        self.backbone = VGG(batch_norm=True, width=width, fc_channels=None, rng=rng, name="deconvnet")
        c5 = self.backbone.feature_channels["pool5"]
        fc = scaled_channels(4096, width)
        self.fc6 = Sequential(Conv2d(c5, fc, 7, rng=rng), BatchNorm2d(fc), ReLU(inplace=True))
        self.fc7 = Sequential(Conv2d(fc, fc, 1, rng=rng), BatchNorm2d(fc), ReLU(inplace=True))
        self.deconv_fc6 = Sequential(ConvTranspose2d(fc, c5, 7, rng=rng), BatchNorm2d(c5), ReLU(inplace=True))
        stages, cin = [], c5
        for outs in DECODER_STAGES:
            layers = []
            for out in outs:
                out = scaled_channels(out, width)
                layers += [ConvTranspose2d(cin, out, 3, padding=1, rng=rng), BatchNorm2d(out), ReLU(inplace=True)]
                cin = out
            stages.append(Sequential(*layers))
        self.decoder = ModuleList(stages)
        self.classifier = Conv2d(cin, self.num_classes, 1, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        x = as_image_batch(x, self)
        check_divisible(x, 32, "deconvnet")
        if min(x.shape[-2:]) < 224:
            raise ValueError(
                f"deconvnet needs input height and width of at least 224 (fc6 is a valid 7x7 conv on the "
                f"1/32-resolution pool5 map), got {x.shape[-2]}x{x.shape[-1]}"
            )
        features, switches = self.backbone.forward_with_switches(x)
        y = self.deconv_fc6(self.fc7(self.fc6(features["pool5"])))
        for decoder, (indices, size) in zip(self.decoder, reversed(switches)):
            y = decoder(F.max_unpool2d(y, indices, 2, 2, output_size=size))
        return self.classifier(y)


def deconvnet(*, num_classes: int = 21, width: float = 1.0, rng: np.random.Generator | None = None) -> DeconvNet:
    """DeconvNet: VGG-16-BN encoder, fc6/fc7, mirrored unpooling + deconvolution decoder (inputs 32k >= 224)."""
    return DeconvNet(num_classes, width=width, rng=rng)


SEMANTIC_MODELS = {"deconvnet": deconvnet}
