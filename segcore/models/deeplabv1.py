"""DeepLab v1, LargeFOV variant (Chen, Papandreou, Kokkinos, Murphy & Yuille, ICLR 2015).

VGG-16 LargeFOV (:func:`segcore.models.backbones.vgg.vgg16_largefov`: output stride 8, conv5 with dilation
2, fc6 a 3x3 conv with dilation 12 and 1024 channels, fc7 1x1 with 1024 channels, dropout 0.5 after both),
a 1x1 classifier (fc8) and bilinear upsampling of the stride-8 logits to the input size. The upsampling
uses ``align_corners=True`` (Caffe's ``Interp`` layer): for DeepLab's input sizes ``8k + 1`` (321, 513)
the logit grid then lands exactly on every 8th input pixel. The paper's fully connected CRF is a
post-processing step of ``predict`` (``crf=True``, preset ``"deeplab-largefov"``).
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..nn import Conv2d, init
from .backbones.vgg import check_rng, vgg16_largefov
from .base import SemanticSegmentationModel, as_image_batch
from .crf_postprocess import DenseCRFPredictMixin

__all__ = ["DeepLabV1", "deeplabv1", "SEMANTIC_MODELS"]


class DeepLabV1(DenseCRFPredictMixin, SemanticSegmentationModel):
    """DeepLab-LargeFOV: ``backbone`` (VGG-16 LargeFOV up to fc7) + ``classifier`` (fc8, 1x1 conv).

    Parameters
    ----------
    num_classes:
        Number of classes (21 for PASCAL VOC).
    width:
        Multiplier of every channel count (fc6/fc7 included).
    fc6_dilation:
        Dilation (and padding) of the 3x3 fc6 (12: the LargeFOV field of view).
    dropout:
        Dropout probability after fc6 and fc7.
    rng:
        Generator for initial weights and dropout masks.
    crf, crf_options:
        Default of ``predict``'s dense CRF refinement, and :func:`segcore.crf.dense_crf` keywords that
        override the ``"deeplab-largefov"`` preset.
    """

    crf_preset = "deeplab-largefov"

    def __init__(
        self,
        num_classes: int,
        *,
        width: float = 1.0,
        fc6_dilation: int = 12,
        dropout: float = 0.5,
        rng: np.random.Generator | None = None,
        crf: bool = False,
        crf_options: dict | None = None,
    ) -> None:
        super().__init__(num_classes)
        self._setup_crf(crf, crf_options, "deeplabv1")
        rng = check_rng(rng, "deeplabv1")
        rng = np.random.default_rng() if rng is None else rng
        self.backbone = vgg16_largefov(width=width, fc6_dilation=fc6_dilation, dropout=dropout, rng=rng)
        self.classifier = Conv2d(self.backbone.feature_channels["fc7"], self.num_classes, 1, rng=rng)
        # DeepLab's prototxt initialises fc8 from N(0, 0.01^2) with zero bias.
        init.normal_(self.classifier.weight, 0.0, 0.01, rng=rng)
        init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = as_image_batch(x, self)
        logits = self.classifier(self.backbone(x)["fc7"])
        return F.interpolate(logits, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=True)


def deeplabv1(
    *,
    num_classes: int = 21,
    width: float = 1.0,
    fc6_dilation: int = 12,
    dropout: float = 0.5,
    rng: np.random.Generator | None = None,
    crf: bool = False,
    crf_options: dict | None = None,
) -> DeepLabV1:
    """DeepLab v1 LargeFOV: atrous VGG-16 (output stride 8, fc6 dilation 12) + bilinear upsampling.

    ``crf=True`` makes ``predict`` refine with the dense CRF by default (preset ``"deeplab-largefov"``,
    overridden by ``crf_options``, keywords of :func:`segcore.crf.dense_crf`).
    """
    return DeepLabV1(
        num_classes,
        width=width,
        fc6_dilation=fc6_dilation,
        dropout=dropout,
        rng=rng,
        crf=crf,
        crf_options=crf_options,
    )


SEMANTIC_MODELS = {"deeplabv1": deeplabv1}
