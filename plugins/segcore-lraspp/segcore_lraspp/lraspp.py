"""LR-ASPP: Lite Reduced Atrous Spatial Pyramid Pooling (Howard et al. 2019, "Searching for MobileNetV3").

The head reads two backbone features: ``high`` (output stride 16) and ``low`` (output stride 8).

* ``cbr``: 1x1 conv + BN + ReLU on ``high``;
* ``scale``: global average pool + 1x1 conv + sigmoid on ``high``, a per-channel gate (squeeze-excite-like);
* the gated ``cbr`` output is upsampled bilinearly to ``low``'s size and classified (``high_classifier``);
* ``low_classifier`` classifies ``low``; the two class maps are summed and upsampled to the input.

Attribute names follow torchvision's ``lraspp_mobilenet_v3_large`` (``backbone.*``, ``classifier.cbr``,
``classifier.scale``, ``classifier.low_classifier``, ``classifier.high_classifier``).
"""

from __future__ import annotations

import numpy as np

import segcore
import segcore.functional as F
import segcore.nn as nn
from segcore import Tensor

from .mobilenetv3 import MobileNetV3Features

__all__ = ["LRASPP", "LRASPPHead", "lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_small", "IGNORE_INDEX"]

#: Target value of pixels that do not count in the loss (VOC's "void" border).
IGNORE_INDEX = 255


class LRASPPHead(nn.Module):
    """The LR-ASPP segmentation head on ``{"low": ..., "high": ...}`` features."""

    def __init__(
        self,
        low_channels: int,
        high_channels: int,
        num_classes: int,
        inter_channels: int,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, inter_channels, 1, bias=False, rng=rng),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(inplace=True),
        )
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(high_channels, inter_channels, 1, bias=False, rng=rng),
            nn.Sigmoid(),
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1, rng=rng)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1, rng=rng)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        low, high = features["low"], features["high"]
        x = self.cbr(high) * self.scale(high)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)


class LRASPP(nn.Module):
    """Backbone + LR-ASPP head, with segcore's semantic segmentation model contract.

    ``forward(images)`` returns logits ``(N, num_classes, H, W)`` at input resolution; ``losses(images,
    targets)`` returns ``{"loss_sem_seg": cross-entropy}`` ignoring target pixels equal to 255 (LR-ASPP uses
    no auxiliary loss); ``predict(images)`` returns one ``(H, W)`` int64 label map per image.
    """

    def __init__(
        self,
        backbone: MobileNetV3Features,
        num_classes: int,
        inter_channels: int = 128,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"LRASPP: num_classes must be a positive int, got {num_classes!r}")
        if not isinstance(inter_channels, (int, np.integer)) or inter_channels < 1:
            raise ValueError(f"LRASPP: inter_channels must be a positive int, got {inter_channels!r}")
        missing = {"low", "high"} - set(backbone.channels)
        if missing:
            raise ValueError(
                f"LRASPP: the backbone must return features 'low' and 'high', it returns {sorted(backbone.channels)}"
            )
        self.num_classes = int(num_classes)
        self.backbone = backbone
        self.classifier = LRASPPHead(
            backbone.channels["low"], backbone.channels["high"], self.num_classes, int(inter_channels), rng=rng
        )

    def _check_images(self, images: Tensor, argument: str = "images") -> None:
        if not isinstance(images, Tensor):
            raise TypeError(f"LRASPP: {argument} must be a segcore Tensor, got {type(images).__name__}")
        expected = self.backbone[0][0].in_channels
        if images.ndim != 4 or images.shape[1] != expected:
            raise ValueError(f"LRASPP: {argument} must have shape (N, {expected}, H, W), got {images.shape}")

    def forward(self, images: Tensor) -> Tensor:
        self._check_images(images)
        out = self.classifier(self.backbone(images))
        return F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def losses(self, images: Tensor, targets: Tensor | np.ndarray) -> dict[str, Tensor]:
        """Pixel-wise cross-entropy against ``targets`` ``(N, H, W)`` of class indices (255 = ignore)."""
        self._check_images(images)
        if isinstance(targets, np.ndarray):
            targets = segcore.tensor(targets, backend=images.backend)
        if not isinstance(targets, Tensor):
            raise TypeError(f"LRASPP.losses: targets must be a Tensor or ndarray, got {type(targets).__name__}")
        n, _, h, w = images.shape
        if targets.shape != (n, h, w) or np.dtype(targets.dtype).kind not in "iu":
            raise ValueError(
                f"LRASPP.losses: targets must be integer class indices of shape {(n, h, w)}, "
                f"got shape {targets.shape} and dtype {targets.dtype}"
            )
        if np.dtype(targets.dtype) != np.int64:
            targets = targets.long()
        logits = self(images)
        return {"loss_sem_seg": F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)}

    def predict(self, images: Tensor) -> list[np.ndarray]:
        """The most likely class of every pixel, one ``(H, W)`` int64 array per image (eval mode, no grad)."""
        self._check_images(images)
        was_training = self.training
        self.eval()
        try:
            with segcore.no_grad():
                labels = F.argmax(self(images), dim=1).numpy().astype(np.int64)
        finally:
            self.train(was_training)
        return list(labels)


def lraspp_mobilenet_v3_large(
    num_classes: int = 21,
    *,
    width_mult: float = 1.0,
    inter_channels: int = 128,
    reduced_tail: bool = False,
    in_channels: int = 3,
    rng: np.random.Generator | None = None,
) -> LRASPP:
    """LR-ASPP on a dilated MobileNetV3-Large (output stride 16), as in the paper and torchvision."""
    backbone = MobileNetV3Features(
        "large", width_mult=width_mult, dilated=True, reduced_tail=reduced_tail, in_channels=in_channels, rng=rng
    )
    return LRASPP(backbone, num_classes, inter_channels, rng=rng)


def lraspp_mobilenet_v3_small(
    num_classes: int = 21,
    *,
    width_mult: float = 1.0,
    inter_channels: int = 128,
    reduced_tail: bool = False,
    in_channels: int = 3,
    rng: np.random.Generator | None = None,
) -> LRASPP:
    """LR-ASPP on a dilated MobileNetV3-Small (output stride 16)."""
    backbone = MobileNetV3Features(
        "small", width_mult=width_mult, dilated=True, reduced_tail=reduced_tail, in_channels=in_channels, rng=rng
    )
    return LRASPP(backbone, num_classes, inter_channels, rng=rng)
