"""The model contract (DESIGN.md section 1) shared by every segmentation model, and the backbone contract.

A semantic model implements ``forward(x) -> logits (N, K, H, W)`` at input resolution; this base class then
provides ``losses(images, targets)`` (cross-entropy with ``ignore_index=255`` plus weighted auxiliary terms)
and ``predict(images)`` (a list of ``H x W`` int64 label maps). Models with auxiliary heads override
:meth:`SemanticSegmentationModel.forward_with_aux`.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict

import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..nn import Module

__all__ = [
    "SemanticSegmentationModel",
    "Backbone",
    "as_image_batch",
    "as_label_batch",
    "check_divisible",
    "scaled_channels",
]


def as_image_batch(images, like: Module, name: str = "images") -> Tensor:
    """``images`` as an ``(N, C, H, W)`` floating Tensor on the model's backend (NumPy arrays accepted)."""
    parameter = next(iter(like.parameters()), None)
    if not isinstance(images, Tensor):
        if not isinstance(images, np.ndarray):
            raise TypeError(f"{name} must be a Tensor or a NumPy array, got {type(images).__name__}")
        if images.dtype.kind != "f":
            raise TypeError(f"{name} must be floating point (normalised images), got dtype {images.dtype}")
        backend = parameter.backend if parameter is not None else None
        images = Tensor((backend or _numpy_backend()).asarray(images), backend or _numpy_backend())
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got shape {images.shape}")
    if parameter is not None and images.backend is not parameter.backend:
        raise ValueError(
            f"{name} live on backend {images.backend.name!r} but the model's parameters on "
            f"{parameter.backend.name!r}; move them with .to({parameter.backend.name!r})"
        )
    return images


def as_label_batch(targets, images: Tensor, name: str = "targets") -> Tensor:
    """``targets`` as an ``(N, H, W)`` integer Tensor matching ``images`` (NumPy arrays accepted)."""
    if not isinstance(targets, Tensor):
        if not isinstance(targets, np.ndarray):
            raise TypeError(f"{name} must be a Tensor or a NumPy array, got {type(targets).__name__}")
        targets = Tensor(images.backend.asarray(targets), images.backend)
    if np.dtype(targets.dtype).kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {targets.dtype}")
    expected = (images.shape[0],) + images.shape[2:]
    if targets.shape != expected:
        raise ValueError(f"{name} must have shape (N, H, W) = {expected} to match the images, got {targets.shape}")
    return targets


def check_divisible(x: Tensor, multiple: int, model: str) -> None:
    """Raise a clear error when the input's spatial size is not a multiple the architecture needs."""
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"{model} needs input height and width divisible by {multiple}, got {h}x{w}; "
            f"pad or resize the images (e.g. to {-(-h // multiple) * multiple}x{-(-w // multiple) * multiple})"
        )


def check_width(width: object, where: str, name: str = "width") -> float:
    """``width`` (a channel multiplier, 1.0 = the paper's channel counts) as a positive float.

    TypeError when it is not a real number, ValueError when it is not finite and positive; both name
    ``where`` and the argument.
    """
    if not isinstance(width, numbers.Real) or isinstance(width, bool):
        raise TypeError(f"{where}: {name} must be a positive number (1.0 = paper channel counts), got {width!r}")
    if not np.isfinite(width) or width <= 0:
        raise ValueError(f"{where}: {name} must be a positive number (1.0 = paper channel counts), got {width!r}")
    return float(width)


def scaled_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1: the width multiplier every built-in model applies."""
    return max(1, int(round(channels * width)))


def _numpy_backend():
    from ..backend import get_backend

    return get_backend("numpy")


class SemanticSegmentationModel(Module):
    """Base class of semantic segmentation models: subclasses implement ``forward``.

    Parameters
    ----------
    num_classes:
        Number of classes ``K`` (logits have ``K`` channels).
    ignore_index:
        Target label excluded from the loss (255 marks void pixels in VOC-style masks).
    """

    task = "semantic"

    def __init__(self, num_classes: int, *, ignore_index: int = 255) -> None:
        super().__init__()
        if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        # name -> weight of each auxiliary loss term produced by forward_with_aux (e.g. PSPNet's {"aux": 0.4}).
        self.aux_loss_weights: dict[str, float] = {}

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Main logits plus auxiliary logits by name (any resolution; upsampled for the loss)."""
        return self(x), {}

    def losses(self, images, targets) -> dict[str, Tensor]:
        """Loss terms: ``"loss"`` (pixel-wise cross-entropy) and ``"loss_<aux>"`` already weighted."""
        images = as_image_batch(images, self)
        targets = as_label_batch(targets, images)
        logits, aux = self.forward_with_aux(images)
        terms = {"loss": F.cross_entropy(logits, targets, ignore_index=self.ignore_index)}
        for name, aux_logits in aux.items():
            if name not in self.aux_loss_weights:
                raise KeyError(f"auxiliary output {name!r} has no weight in aux_loss_weights")
            if aux_logits.shape[-2:] != images.shape[-2:]:
                aux_logits = F.interpolate(aux_logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(aux_logits, targets, ignore_index=self.ignore_index)
            terms[f"loss_{name}"] = loss * self.aux_loss_weights[name]
        return terms

    def predict(self, images) -> list[np.ndarray]:
        """Label maps ``(H, W)`` int64, one per image, computed in eval mode without recording gradients."""
        images = as_image_batch(images, self)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                logits = self(images)
        finally:
            self.train(was_training)
        labels = logits.numpy().argmax(axis=1).astype(np.int64)
        return [labels[i] for i in range(labels.shape[0])]


class Backbone(Module):
    """A feature extractor whose ``forward`` returns named intermediate features (ChainerCV's ``pick``).

    Subclasses fill :attr:`feature_channels` and :attr:`feature_strides` (name -> channels / stride relative to
    the input, in forward order) and return an ``OrderedDict`` with the same names from ``forward``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.feature_channels: OrderedDict[str, int] = OrderedDict()
        self.feature_strides: OrderedDict[str, int] = OrderedDict()
