"""DeepLab v2 (Chen et al. 2016/2018, "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets,
Atrous Convolution, and Fully Connected CRFs"): dilated ResNet + ASPP-L.

ResNet-101 at output stride 8, then four parallel 3x3 atrous classifiers (rates 6, 12, 18, 24) whose score maps
are summed (:class:`~segcore.models.aspp.ASPPv2`), upsampled bilinearly to the input size. The paper's dense
CRF is a post-processing step of ``predict`` (``crf=True``, preset ``"deeplab-v2-resnet"``), not part of the
network.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .aspp import ASPPv2, check_atrous_rates
from .backbones.resnet import build_resnet
from .crf_postprocess import DenseCRFPredictMixin, check_crf_args
from .deeplabv3 import SimpleSegmentationModel, check_model_args

__all__ = ["DeepLabV2", "deeplabv2", "SEMANTIC_MODELS"]


class DeepLabV2(DenseCRFPredictMixin, SimpleSegmentationModel):
    """DeepLab v2: ResNet + :class:`~segcore.models.aspp.ASPPv2` as ``classifier``, no auxiliary head.

    ``crf`` / ``crf_options``: default of ``predict``'s dense CRF refinement and :func:`segcore.crf.dense_crf`
    keywords that override the ``"deeplab-v2-resnet"`` preset.
    """

    crf_preset = "deeplab-v2-resnet"

    def __init__(self, *args, crf: bool = False, crf_options: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup_crf(crf, crf_options, "deeplabv2")


def deeplabv2(
    *,
    num_classes: int,
    backbone: str = "resnet101",
    output_stride: int = 8,
    atrous_rates: Sequence[int] = (6, 12, 18, 24),
    width: float = 1.0,
    rng: np.random.Generator | None = None,
    crf: bool = False,
    crf_options: dict | None = None,
) -> DeepLabV2:
    """DeepLab v2: dilated ResNet (default ResNet-101, output stride 8) + ASPP of summed atrous classifiers.

    Keys: ``backbone.*`` (torchvision ResNet names) and ``classifier.convs.0..3`` (one 3x3 conv with bias per
    rate). The backbone is torchvision's ResNet (stride on the 3x3 conv, dilation as
    ``replace_stride_with_dilation``) rather than the Caffe ResNet of the paper. Any input size works.
    ``width`` scales the backbone's channels. ``crf=True`` makes ``predict`` refine with the dense CRF by default
    (preset ``"deeplab-v2-resnet"``, overridden by ``crf_options``, keywords of :func:`segcore.crf.dense_crf`).
    """
    model = "deeplabv2"
    rng = check_model_args(model, num_classes, output_stride, width, rng)
    atrous_rates = check_atrous_rates(atrous_rates, model)
    check_crf_args(crf, crf_options, model)
    net = build_resnet(backbone, output_stride=output_stride, width=width, rng=rng)
    head = ASPPv2(net.feature_channels["res5"], num_classes, atrous_rates, rng=rng)
    return DeepLabV2(net, head, num_classes, crf=crf, crf_options=crf_options)


SEMANTIC_MODELS = {"deeplabv2": deeplabv2}
