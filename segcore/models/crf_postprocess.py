"""Dense CRF post-processing of ``predict`` for the models whose papers use it (DeepLab v1 and v2).

:class:`DenseCRFPredictMixin` gives a semantic model ``predict(images, crf=None, *, crf_images=None)``: with
the CRF on, the softmax of the logits is refined image by image with :func:`segcore.crf.dense_crf` using the
paper's preset (the class attribute ``crf_preset``), then the label map is its argmax. With the CRF off the
plain :meth:`SemanticSegmentationModel.predict` runs, unchanged.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Sequence

import numpy as np

from ..autograd import Tensor, no_grad
from ..crf import PRESETS, dense_crf
from .base import as_image_batch

__all__ = ["DenseCRFPredictMixin", "check_crf_args", "images_to_uint8"]

# Everything dense_crf takes besides the image and the scores (which predict supplies).
CRF_OPTION_NAMES = tuple(
    name for name in inspect.signature(dense_crf).parameters if name not in ("image", "probs", "unary")
)


def check_crf_args(crf: Any, crf_options: Any, model: str) -> tuple[bool, dict[str, Any]]:
    """The ``crf`` build option and a copy of ``crf_options`` (:func:`segcore.crf.dense_crf` keywords), checked.

    Raises a ``TypeError`` / ``ValueError`` naming ``model`` and the argument.
    """
    if not isinstance(crf, bool):
        raise TypeError(f"{model}: crf must be a bool, got {crf!r}")
    if crf_options is None:
        return crf, {}
    if not isinstance(crf_options, dict):
        raise TypeError(
            f"{model}: crf_options must be a dict of segcore.crf.dense_crf keywords or None, "
            f"got {type(crf_options).__name__}"
        )
    for key in crf_options:
        if key not in CRF_OPTION_NAMES:
            close = difflib.get_close_matches(str(key), CRF_OPTION_NAMES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{model}: crf_options has unknown key {key!r}.{hint} Accepted: {', '.join(CRF_OPTION_NAMES)}"
            )
    preset = crf_options.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"{model}: crf_options['preset'] must be one of {', '.join(PRESETS)} or None, got {preset!r}")
    return crf, dict(crf_options)


def images_to_uint8(images: np.ndarray) -> np.ndarray:
    """``(N, 3, H, W)`` normalised float images as ``(N, H, W, 3)`` uint8, each image rescaled to ``[0, 255]``.

    Each image's minimum maps to 0 and its maximum to 255, one affine map for all three channels together (so
    relative colours are kept); a constant image becomes all zeros.
    """
    low = images.min(axis=(1, 2, 3), keepdims=True).astype(np.float64)
    high = images.max(axis=(1, 2, 3), keepdims=True).astype(np.float64)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.rint((images - low) / span * 255.0)
    return np.ascontiguousarray(np.clip(scaled, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))


def _check_crf_images(crf_images: Any, shape: tuple[int, ...]) -> list[np.ndarray]:
    """``crf_images`` as a list of ``(H, W, 3)`` uint8 arrays matching the ``(N, C, H, W)`` input ``shape``."""
    n, _, height, width = shape
    expected = f"an (N, H, W, 3) = ({n}, {height}, {width}, 3) uint8 array or a list of {n} (H, W, 3) uint8 arrays"
    if isinstance(crf_images, np.ndarray):
        if crf_images.ndim != 4:
            raise ValueError(f"crf_images must be {expected}, got an array of shape {crf_images.shape}")
        items: Sequence[Any] = list(crf_images)
    elif isinstance(crf_images, (list, tuple)):
        items = crf_images
    else:
        raise TypeError(f"crf_images must be {expected}, got {type(crf_images).__name__}")
    if len(items) != n:
        raise ValueError(f"crf_images holds {len(items)} images but images holds {n}; expected {expected}")
    for i, image in enumerate(items):
        if not isinstance(image, np.ndarray):
            raise TypeError(
                f"crf_images[{i}] must be a NumPy uint8 array of shape (H, W, 3), got {type(image).__name__}"
            )
        if image.dtype != np.uint8:
            raise TypeError(f"crf_images[{i}] must be uint8 RGB (0..255), got dtype {image.dtype}")
        if image.shape != (height, width, 3):
            raise ValueError(
                f"crf_images[{i}] must have shape (H, W, 3) = ({height}, {width}, 3) to match the images, "
                f"got {image.shape}"
            )
    return list(items)


class DenseCRFPredictMixin:
    """``predict`` with optional dense CRF refinement; mix in before the model's base class.

    Subclasses set the class attribute ``crf_preset`` (a :data:`segcore.crf.PRESETS` name) and call
    :meth:`_setup_crf` in ``__init__``.
    """

    crf_preset: str

    def _setup_crf(self, crf: Any, crf_options: Any, model: str) -> None:
        self.crf, self.crf_options = check_crf_args(crf, crf_options, model)

    def predict(self, images, crf: bool | None = None, *, crf_images=None) -> list[np.ndarray]:
        """Label maps ``(H, W)`` int64, one per image, in eval mode without recording gradients.

        Parameters
        ----------
        images:
            ``(N, C, H, W)`` normalised float images (Tensor or NumPy array).
        crf:
            Refine with the dense CRF: ``True`` / ``False``, or ``None`` for the model's ``crf`` build option.
            With the CRF the softmax probabilities of the logits go through :func:`segcore.crf.dense_crf` with
            the paper's preset (``crf_preset``) updated by the ``crf_options`` build option, on the model's
            backend unless ``crf_options`` names one; the label map is the argmax of the refined marginals.
        crf_images:
            The original RGB images the CRF compares colours in (``bilateral_srgb`` is in their 0..255 levels):
            an ``(N, H, W, 3)`` uint8 array or a list of ``N`` ``(H, W, 3)`` uint8 arrays matching ``images``.
            Checked whenever given, used only with the CRF on. Without them (3-channel input only) they are
            derived from ``images``, since segcore knows no normalisation constants: each image is mapped to
            ``[0, 255]`` by one affine map shared by its three channels (its minimum over all channels to 0,
            its maximum to 255; a constant image to 0), rounded and moved channels-last. That keeps the edges,
            but the colours are the originals only up to a contrast stretch, and only if every channel was
            normalised with the same mean and std; pass ``crf_images`` whenever you have them.

        Returns
        -------
        list of numpy.ndarray
            ``N`` label maps ``(H, W)`` int64.
        """
        if crf is not None and not isinstance(crf, bool):
            raise TypeError(f"predict: crf must be True, False or None (the model's setting), got {crf!r}")
        use_crf = self.crf if crf is None else crf
        x = as_image_batch(images, self)
        rgb = None if crf_images is None else _check_crf_images(crf_images, x.shape)
        if not use_crf:
            return super().predict(x)
        if rgb is None:
            if x.shape[1] != 3:
                raise ValueError(
                    f"predict with crf=True needs crf_images for {x.shape[1]}-channel images: colours can "
                    "only be derived from 3-channel input"
                )
            rgb = list(images_to_uint8(x.numpy()))
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                logits = self(x)
        finally:
            self.train(was_training)
        probs = _softmax(logits.numpy())
        options = {"preset": self.crf_preset, "backend": _backend_of(self, x), **self.crf_options}
        return [dense_crf(rgb[i], probs[i], **options).argmax(axis=0).astype(np.int64) for i in range(len(rgb))]


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the class axis 1, computed in float64 and returned in the logits' dtype."""
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(logits.dtype, copy=False)


def _backend_of(model, x: Tensor):
    parameter = next(iter(model.parameters()), None)
    return parameter.backend if parameter is not None else x.backend
