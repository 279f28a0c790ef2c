"""Fully convolutional networks FCN-32s, FCN-16s and FCN-8s on VGG-16 (Long, Shelhamer & Darrell, 2015).

Geometry reproduces the reference Caffe models (``voc-fcn*s``) exactly: conv1_1 is padded by 100 and the
pools round up (Caffe's ceil mode), so fc6 (a valid 7x7 conv) has an output for any input size; score maps
are upsampled by transposed convolutions without bias, initialised to bilinear interpolation and learned;
skip scores and the final output are cropped with Caffe's offsets (pool4 5, pool3 9; final 19 / 27 / 31),
which align every map with the input pixel grid. Weights converted from the Caffe models therefore apply
unchanged. Attribute names follow the Caffe layer names (``score_fr``, ``upscore2``, ``score_pool4``, ...);
``backbone`` is a torchvision-layout VGG-16 (``backbone.features.N``, ``backbone.classifier.{0,3}``).
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..nn import Conv2d, ConvTranspose2d, init
from .backbones.vgg import VGG, check_bool, check_rng, check_width
from .base import SemanticSegmentationModel, as_image_batch

__all__ = ["FCN", "fcn32s", "fcn16s", "fcn8s", "SEMANTIC_MODELS"]

#: Caffe crop offsets of the reference nets (derived from the layers' coordinate maps; see the tests).
CROP_POOL4 = 5
CROP_POOL3 = 9
CROP_FINAL = {32: 19, 16: 27, 8: 31}

# "At-once" FCN-8s/16s (Shelhamer et al., PAMI 2017) scale the pool features before scoring them so that
# the skips start small relative to the fc7 path.
SKIP_SCALE_POOL4 = 0.01
SKIP_SCALE_POOL3 = 0.0001


def _crop(x: Tensor, offset: int, height: int, width: int) -> Tensor:
    return x[:, :, offset : offset + height, offset : offset + width]


class FCN(SemanticSegmentationModel):
    """FCN on VGG-16: ``stride`` 32 (FCN-32s), 16 (FCN-16s, pool4 skip) or 8 (FCN-8s, pool4 and pool3 skips).

    Parameters
    ----------
    num_classes:
        Number of classes (21 for PASCAL VOC).
    stride:
        32, 16 or 8: the stride of the coarsest prediction that is upsampled to the output.
    width:
        Multiplier of every channel count of the VGG-16 (fc6/fc7 included).
    dropout:
        Dropout probability after fc6 and fc7 (0.5 in the paper).
    skip_scaling:
        Multiply pool4 by 0.01 and pool3 by 0.0001 before their score layers ("at-once" training).
    zero_init_scores:
        Zero-initialise the score layers, as the paper does; with ``False`` they get torch's default init
        (gradients then reach the backbone from the first step, which small from-scratch runs want).
    rng:
        Generator for initial weights and dropout masks.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        stride: int = 8,
        width: float = 1.0,
        dropout: float = 0.5,
        skip_scaling: bool = False,
        zero_init_scores: bool = True,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(num_classes)
        name = f"fcn{stride}s"
        if stride not in (8, 16, 32):
            raise ValueError(f"FCN: stride must be 8, 16 or 32, got {stride!r}")
        check_width(width, name)
        rng = check_rng(rng, name)
        rng = np.random.default_rng() if rng is None else rng
        self.stride = stride
        self.skip_scaling = check_bool(skip_scaling, "skip_scaling", name)
        check_bool(zero_init_scores, "zero_init_scores", name)
        k = self.num_classes
        self.backbone = VGG(
            width=width, first_padding=100, ceil_mode=True, fc_channels=4096, fc6_kernel=7, dropout=dropout,
            rng=rng, name=name,
        )  # fmt: skip
        channels = self.backbone.feature_channels
        self.score_fr = Conv2d(channels["fc7"], k, 1, rng=rng)
        scores = [self.score_fr]
        if stride == 32:
            self.upscore = ConvTranspose2d(k, k, 64, stride=32, bias=False, rng=rng)
            upsamplers = [self.upscore]
        else:
            self.upscore2 = ConvTranspose2d(k, k, 4, stride=2, bias=False, rng=rng)
            self.score_pool4 = Conv2d(channels["pool4"], k, 1, rng=rng)
            scores.append(self.score_pool4)
            if stride == 16:
                self.upscore16 = ConvTranspose2d(k, k, 32, stride=16, bias=False, rng=rng)
                upsamplers = [self.upscore2, self.upscore16]
            else:
                self.upscore_pool4 = ConvTranspose2d(k, k, 4, stride=2, bias=False, rng=rng)
                self.score_pool3 = Conv2d(channels["pool3"], k, 1, rng=rng)
                self.upscore8 = ConvTranspose2d(k, k, 16, stride=8, bias=False, rng=rng)
                scores.append(self.score_pool3)
                upsamplers = [self.upscore2, self.upscore_pool4, self.upscore8]
        for layer in upsamplers:
            init.bilinear_upsampling_(layer.weight)
        if zero_init_scores:
            for layer in scores:
                init.zeros_(layer.weight)
                init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = as_image_batch(x, self)
        h, w = x.shape[-2:]
        features = self.backbone(x)
        score = self.score_fr(features["fc7"])
        if self.stride == 32:
            return _crop(self.upscore(score), CROP_FINAL[32], h, w)
        up = self.upscore2(score)
        pool4 = features["pool4"] * SKIP_SCALE_POOL4 if self.skip_scaling else features["pool4"]
        up = up + _crop(self.score_pool4(pool4), CROP_POOL4, up.shape[-2], up.shape[-1])
        if self.stride == 16:
            return _crop(self.upscore16(up), CROP_FINAL[16], h, w)
        up = self.upscore_pool4(up)
        pool3 = features["pool3"] * SKIP_SCALE_POOL3 if self.skip_scaling else features["pool3"]
        up = up + _crop(self.score_pool3(pool3), CROP_POOL3, up.shape[-2], up.shape[-1])
        return _crop(self.upscore8(up), CROP_FINAL[8], h, w)


def fcn32s(
    *,
    num_classes: int = 21,
    width: float = 1.0,
    dropout: float = 0.5,
    zero_init_scores: bool = True,
    rng: np.random.Generator | None = None,
) -> FCN:
    """FCN-32s: VGG-16 fc7 scores upsampled 32x by a learned 64x64 transposed conv (bilinear init)."""
    return FCN(num_classes, stride=32, width=width, dropout=dropout, zero_init_scores=zero_init_scores, rng=rng)


def fcn16s(
    *,
    num_classes: int = 21,
    width: float = 1.0,
    dropout: float = 0.5,
    skip_scaling: bool = False,
    zero_init_scores: bool = True,
    rng: np.random.Generator | None = None,
) -> FCN:
    """FCN-16s: FCN-32s plus a pool4 skip; 2x then 16x learned upsampling (bilinear init)."""
    return FCN(
        num_classes, stride=16, width=width, dropout=dropout, skip_scaling=skip_scaling,
        zero_init_scores=zero_init_scores, rng=rng,
    )  # fmt: skip


def fcn8s(
    *,
    num_classes: int = 21,
    width: float = 1.0,
    dropout: float = 0.5,
    skip_scaling: bool = False,
    zero_init_scores: bool = True,
    rng: np.random.Generator | None = None,
) -> FCN:
    """FCN-8s: FCN-16s plus a pool3 skip; 2x, 2x then 8x learned upsampling (bilinear init)."""
    return FCN(
        num_classes, stride=8, width=width, dropout=dropout, skip_scaling=skip_scaling,
        zero_init_scores=zero_init_scores, rng=rng,
    )  # fmt: skip


SEMANTIC_MODELS = {"fcn32s": fcn32s, "fcn16s": fcn16s, "fcn8s": fcn8s}
