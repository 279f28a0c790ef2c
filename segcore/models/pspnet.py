"""PSPNet (Zhao et al. 2017, "Pyramid Scene Parsing Network").

Dilated ResNet (output stride 8) + pyramid pooling module: the res5 map is average-pooled to 1x1, 2x2, 3x3 and
6x6 bins, each reduced by a 1x1 conv (+ BN + ReLU) to ``C / 4`` channels, upsampled bilinearly and
concatenated with the res5 map; a 3x3 conv (512) + BN + ReLU + dropout 0.1 and a 1x1 classifier follow. A deep
supervision head on res4 (torchvision's FCN head) adds an auxiliary loss weighted 0.4.

The paper's ResNet replaces the 7x7 stem by three 3x3 convs ("deep stem"); segcore uses torchvision's plain
stem so that torchvision's ImageNet weights load into ``backbone``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..nn import AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Module, ModuleList, ReLU, Sequential
from .backbones.resnet import build_resnet, scaled
from .deeplabv3 import FCNHead, SimpleSegmentationModel, check_aux_weight, check_model_args, check_probability

__all__ = ["PyramidPoolingModule", "PSPHead", "PSPNet", "pspnet", "SEMANTIC_MODELS"]


def _check_bins(bins: object) -> tuple[int, ...]:
    if (
        not isinstance(bins, (tuple, list))
        or not bins
        or not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b >= 1 for b in bins)
    ):
        raise ValueError(f"pspnet: bins must be a non-empty tuple of positive ints (pooled grid sizes), got {bins!r}")
    return tuple(int(b) for b in bins)


class PyramidPoolingModule(Module):
    """Pool to each bin size, 1x1 conv to ``in_channels // len(bins)`` + BN + ReLU, upsample, concatenate.

    Output channels: ``in_channels + len(bins) * (in_channels // len(bins))`` (input first, as in the paper's
    figure). ``stages.i`` is ``(AdaptiveAvgPool2d, Conv2d, BatchNorm2d, ReLU)``; the BN of the 1x1 bin needs a
    batch of at least 2 in training.
    """

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6), *, rng: np.random.Generator) -> None:
        super().__init__()
        self.bins = _check_bins(bins)
        reduced = max(1, in_channels // len(self.bins))
        self.stages = ModuleList(
            [
                Sequential(
                    AdaptiveAvgPool2d(b), Conv2d(in_channels, reduced, 1, bias=False, rng=rng), BatchNorm2d(reduced),
                    ReLU(),
                )  # fmt: skip
                for b in self.bins
            ]
        )
        self.out_channels = in_channels + len(self.bins) * reduced

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False) for stage in self.stages]
        return F.cat([x, *pooled], dim=1)


class PSPHead(Sequential):
    """Pyramid pooling, 3x3 conv + BN + ReLU + dropout, 1x1 classifier (``classifier.0..5``)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        bins: Sequence[int] = (1, 2, 3, 6),
        channels: int = 512,
        dropout: float = 0.1,
        *,
        rng: np.random.Generator,
    ) -> None:
        ppm = PyramidPoolingModule(in_channels, bins, rng=rng)
        super().__init__(
            ppm,
            Conv2d(ppm.out_channels, channels, 3, padding=1, bias=False, rng=rng),
            BatchNorm2d(channels),
            ReLU(),
            Dropout(dropout, rng=rng),
            Conv2d(channels, num_classes, 1, rng=rng),
        )


class PSPNet(SimpleSegmentationModel):
    """PSPNet: ResNet + :class:`PSPHead` as ``classifier`` + FCN head on res4 as ``aux_classifier``."""


def pspnet(
    *,
    num_classes: int,
    backbone: str = "resnet101",
    output_stride: int = 8,
    bins: Sequence[int] = (1, 2, 3, 6),
    dropout: float = 0.1,
    aux_loss: bool = True,
    aux_weight: float = 0.4,
    width: float = 1.0,
    rng: np.random.Generator | None = None,
) -> PSPNet:
    """PSPNet: dilated ResNet (default ResNet-101, output stride 8) + pyramid pooling (bins 1, 2, 3, 6).

    Keys: ``backbone.*``, ``classifier.0.stages.i`` (pyramid pooling), ``classifier.1..5`` (3x3 conv 512, BN,
    ReLU, dropout, 1x1 classifier) and ``aux_classifier.*`` (FCN head on res4, loss weight ``aux_weight`` =
    0.4 as in the paper). Plain torchvision stem instead of the paper's deep stem. Any input size works; the
    1x1-bin branch needs a batch of at least 2 in training. ``width`` scales backbone and head channels.
    """
    model = "pspnet"
    rng = check_model_args(model, num_classes, output_stride, width, rng)
    bins = _check_bins(bins)
    dropout = check_probability(dropout, "dropout", model)
    if not isinstance(aux_loss, bool):
        raise TypeError(f"{model}: aux_loss must be a bool, got {aux_loss!r}")
    aux_weight = check_aux_weight(aux_weight, model)
    net = build_resnet(backbone, output_stride=output_stride, width=width, rng=rng)
    head = PSPHead(net.feature_channels["res5"], num_classes, bins, scaled(512, width), dropout, rng=rng)
    aux = FCNHead(net.feature_channels["res4"], num_classes, rng=rng) if aux_loss else None
    return PSPNet(net, head, num_classes, aux_classifier=aux, aux_weight=aux_weight)


SEMANTIC_MODELS = {"pspnet": pspnet}
