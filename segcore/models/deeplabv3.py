"""DeepLab v3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation").

Dilated ResNet + ASPP head with torchvision's layout and state-dict keys (``backbone.*``,
``classifier.0.convs.N``, ``classifier.0.project``, ``classifier.1..4``, optional ``aux_classifier``), logits
upsampled bilinearly to the input size. Also home of the pieces other ResNet models share:
:class:`SimpleSegmentationModel` (backbone + head on one feature + optional auxiliary head) and
:class:`FCNHead` (torchvision's FCN head, the usual auxiliary classifier).
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..nn import BatchNorm2d, Conv2d, Dropout, Module, ReLU, Sequential
from .aspp import ASPP, check_atrous_rates, deeplab_atrous_rates
from .backbones.resnet import build_resnet, check_output_stride, check_width, scaled
from .base import Backbone, SemanticSegmentationModel, as_image_batch

__all__ = [
    "FCNHead",
    "DeepLabHead",
    "DeepLabV3",
    "SimpleSegmentationModel",
    "check_aux_weight",
    "check_model_args",
    "check_probability",
    "deeplabv3",
    "SEMANTIC_MODELS",
]


def check_model_args(
    model: str, num_classes: object, output_stride: object, width: object, rng: object
) -> np.random.Generator:
    """Validate the keywords every ResNet-based factory takes, before anything is built; returns the rng."""
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"{model}: num_classes must be a positive int, got {num_classes!r}")
    check_output_stride(output_stride, model)
    check_width(width, model)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"{model}: rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return np.random.default_rng() if rng is None else rng


def check_probability(value: object, name: str, model: str) -> float:
    """A dropout probability in ``[0, 1)``, or a ValueError naming ``model`` and ``name``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{model}: {name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_aux_weight(value: object, model: str) -> float:
    """A non-negative finite auxiliary loss weight."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not (0.0 <= value < float("inf")):
        raise ValueError(f"{model}: aux_weight must be a non-negative number, got {value!r}")
    return float(value)


class FCNHead(Sequential):
    """torchvision's FCN head: 3x3 conv to ``in_channels // 4`` + BN + ReLU + dropout 0.1 + 1x1 classifier.

    Used as the auxiliary classifier on res4 by DeepLab v3 (torchvision) and PSPNet (Zhao et al.).
    """

    def __init__(
        self, in_channels: int, channels: int, *, dropout: float = 0.1, rng: np.random.Generator | None = None
    ) -> None:
        inter = max(1, in_channels // 4)
        super().__init__(
            Conv2d(in_channels, inter, 3, padding=1, bias=False, rng=rng),
            BatchNorm2d(inter),
            ReLU(),
            Dropout(dropout, rng=rng),
            Conv2d(inter, channels, 1, rng=rng),
        )


class DeepLabHead(Sequential):
    """torchvision's DeepLab v3 head: ASPP, 3x3 conv + BN + ReLU, 1x1 classifier (``classifier.0..4``)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        atrous_rates: Sequence[int] = (12, 24, 36),
        channels: int = 256,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(
            ASPP(in_channels, atrous_rates, channels, rng=rng),
            Conv2d(channels, channels, 3, padding=1, bias=False, rng=rng),
            BatchNorm2d(channels),
            ReLU(),
            Conv2d(channels, num_classes, 1, rng=rng),
        )


class SimpleSegmentationModel(SemanticSegmentationModel):
    """Backbone + a head on one named feature (+ an auxiliary head on another), upsampled to the input.

    The structure of torchvision's ``_SimpleSegmentationModel``: attributes ``backbone``, ``classifier`` and
    ``aux_classifier`` (``None`` when off). ``forward`` returns only the main logits; the auxiliary logits
    enter :meth:`losses` (through :meth:`forward_with_aux`) with weight ``aux_weight``.

    Parameters
    ----------
    backbone:
        A :class:`~segcore.models.Backbone` producing ``feature`` (and ``aux_feature``).
    classifier:
        Maps ``feature`` to ``num_classes`` score maps.
    num_classes:
        Number of classes.
    feature, aux_feature:
        Backbone feature names the heads read (e.g. ``"res5"``, ``"res4"``).
    aux_classifier, aux_weight:
        Optional auxiliary head and the weight of its loss.
    """

    def __init__(
        self,
        backbone: Backbone,
        classifier: Module,
        num_classes: int,
        *,
        feature: str = "res5",
        aux_classifier: Module | None = None,
        aux_feature: str = "res4",
        aux_weight: float = 0.4,
    ) -> None:
        super().__init__(num_classes)
        for name in (feature, aux_feature) if aux_classifier is not None else (feature,):
            if name not in backbone.feature_channels:
                known = ", ".join(backbone.feature_channels)
                raise ValueError(f"feature {name!r} is not produced by the backbone (it has {known})")
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.feature = feature
        self.aux_feature = aux_feature
        if aux_classifier is not None:
            self.aux_loss_weights = {"aux": float(aux_weight)}

    def _run(self, x: Tensor, with_aux: bool) -> tuple[Tensor, dict[str, Tensor]]:
        x = as_image_batch(x, self, "x")
        size = x.shape[-2:]
        features = self.backbone(x)
        out = F.interpolate(self.classifier(features[self.feature]), size=size, mode="bilinear", align_corners=False)
        aux: dict[str, Tensor] = {}
        if with_aux and self.aux_classifier is not None:
            aux_out = self.aux_classifier(features[self.aux_feature])
            aux["aux"] = F.interpolate(aux_out, size=size, mode="bilinear", align_corners=False)
        return out, aux

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, K, H, W)`` at the input resolution."""
        return self._run(x, with_aux=False)[0]

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Main logits and ``{"aux": logits}`` when the auxiliary head is on."""
        return self._run(x, with_aux=True)


class DeepLabV3(SimpleSegmentationModel):
    """DeepLab v3 (torchvision's ``DeepLabV3``): ResNet + :class:`DeepLabHead` (+ FCN auxiliary head)."""


def deeplabv3(
    *,
    num_classes: int,
    backbone: str = "resnet101",
    output_stride: int = 16,
    multi_grid: Sequence[int] | None = (1, 2, 4),
    atrous_rates: Sequence[int] | None = None,
    aux_loss: bool = False,
    aux_weight: float = 0.5,
    width: float = 1.0,
    rng: np.random.Generator | None = None,
) -> DeepLabV3:
    """DeepLab v3: dilated ResNet + ASPP (1x1, three atrous 3x3, image pooling; 256 channels), torchvision keys.

    Defaults are the paper's: ResNet-101, output stride 16 (its training setting) with ASPP rates (6, 12, 18)
    (``atrous_rates=None`` picks (12, 24, 36) at output stride 8), multi-grid (1, 2, 4) in layer4 (pass
    ``multi_grid=None`` for torchvision's plain dilation, or a tuple with one rate per layer4 block — ResNet-18
    has 2). ``aux_loss`` adds torchvision's FCN head on res4 with loss weight ``aux_weight`` (0.5, torchvision's
    reference recipe; the paper uses no auxiliary loss). The image-pooling branch needs a batch of at least 2 in
    training. ``width`` scales backbone and head channels.
    """
    model = "deeplabv3"
    rng = check_model_args(model, num_classes, output_stride, width, rng)
    atrous_rates = deeplab_atrous_rates(output_stride) if atrous_rates is None else atrous_rates
    atrous_rates = check_atrous_rates(atrous_rates, model)
    if not isinstance(aux_loss, bool):
        raise TypeError(f"{model}: aux_loss must be a bool, got {aux_loss!r}")
    aux_weight = check_aux_weight(aux_weight, model)
    net = build_resnet(backbone, output_stride=output_stride, multi_grid=multi_grid, width=width, rng=rng)
    head = DeepLabHead(net.feature_channels["res5"], num_classes, atrous_rates, scaled(256, width), rng=rng)
    aux = FCNHead(net.feature_channels["res4"], num_classes, rng=rng) if aux_loss else None
    return DeepLabV3(net, head, num_classes, aux_classifier=aux, aux_weight=aux_weight)


SEMANTIC_MODELS = {"deeplabv3": deeplabv3}
