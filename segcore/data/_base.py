"""What every data set shares: the sample layout, the dataset base class, and image/label file reading.

A sample is a plain ``dict`` (torchvision's target-dict style, so instance models read it directly):

* ``"image"``: ``(H, W, 3)`` uint8 RGB (:class:`segcore.data.transforms.Normalize` turns it into a
  ``(3, H, W)`` float32 array as the last step of a pipeline);
* ``"mask"``: ``(H, W)`` uint8 semantic labels in ``[0, num_classes)``, ``ignore_index`` (255) for void;
* instance annotations where the data set has them, one row per instance: ``"boxes"`` ``(R, 4)`` float32
  ``(x1, y1, x2, y2)`` in pixel-edge coordinates (a box around pixel ``(0, 0)`` alone is ``(0, 0, 1, 1)``),
  ``"labels"`` ``(R,)`` int64 class indices (0 is background), ``"masks"`` ``(R, H, W)`` bool, ``"iscrowd"``
  ``(R,)`` bool;
* ``"id"``: a str naming the sample (file stem or synthetic index), used for output file names.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, Sequence

import numpy as np

__all__ = ["DataFormatError", "SegmentationDataset", "INSTANCE_KEYS", "read_image", "read_label_png"]

#: Per-instance sample keys: transforms index them together and drop instances that leave the image.
INSTANCE_KEYS: tuple[str, ...] = ("boxes", "labels", "masks", "iscrowd")


class DataFormatError(ValueError):
    """A data file is missing, unreadable or inconsistent; the message names the file and the problem."""


class SegmentationDataset:
    """Base class of segcore's data sets: a random-access sequence of sample dicts.

    Subclasses set :attr:`class_names` (index = label; entry 0 is the background class where there is one),
    optionally :attr:`palette` (``(K, 3)`` uint8 colours) and implement ``__len__`` and :meth:`load`.

    Attributes
    ----------
    class_names : tuple of str
        One name per class; ``num_classes == len(class_names)``.
    ignore_index : int
        Mask value of void pixels (255).
    palette : np.ndarray or None
        ``(num_classes, 3)`` uint8 colours used by :mod:`segcore.viz`; ``None`` for the default colour map.
    """

    class_names: tuple[str, ...] = ()
    ignore_index: int = 255
    palette: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes ``K`` (labels are ``0 .. K-1``)."""
        return len(self.class_names)

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def load(self, index: int) -> dict[str, Any]:
        """Read sample ``index`` (already checked to lie in ``[0, len(self))``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement load")

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"{type(self).__name__} index must be an int, got {index!r} ({type(index).__name__})")
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__} index {index} is out of range for {n} samples")
        return self.load(int(index) % n)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples, {self.num_classes} classes)"


def check_dir(path: str | os.PathLike, what: str) -> str:
    """``path`` as a str after checking it is an existing directory (``what`` names it in the error)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} {path!r} is not a directory")
    return path


def _open(path: str):
    from PIL import Image

    if not os.path.isfile(path):
        raise DataFormatError(f"{path}: file not found")
    try:
        image = Image.open(path)
        # Image.open only reads the header; load() decodes, which is where truncated files fail.
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataFormatError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB (greyscale, palette and RGBA images are converted)."""
    path = os.fspath(path)
    image = _open(path)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """A label PNG (palette ``"P"`` or greyscale ``"L"``) as ``(H, W)`` uint8 label indices.

    Colour (RGB) masks are refused: their colours would have to be mapped back to classes, and silently
    taking one channel would give wrong labels.
    """
    path = os.fspath(path)
    image = _open(path)
    if image.mode not in ("P", "L"):
        raise DataFormatError(
            f"{path}: label image has mode {image.mode!r}, expected a single-channel palette ('P') or "
            "greyscale ('L') PNG of class indices"
        )
    return np.asarray(image, dtype=np.uint8).copy()


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: str, mask_path: str) -> None:
    """Raise :class:`DataFormatError` naming both files when the mask does not cover the image exactly."""
    if image.shape[:2] != mask.shape[:2]:
        raise DataFormatError(
            f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) does not match the image "
            f"{image_path} of size {image.shape[1]}x{image.shape[0]}"
        )


def check_labels(mask: np.ndarray, num_classes: int, ignore_index: int, path: str) -> None:
    """Raise :class:`DataFormatError` naming ``path`` when ``mask`` holds a label outside the class range."""
    bad = (mask >= num_classes) & (mask != ignore_index)
    if bad.any():
        values = sorted({int(v) for v in np.unique(mask[bad])})[:10]
        raise DataFormatError(
            f"{path}: mask holds label(s) {values}, expected labels in [0, {num_classes}) or {ignore_index} (ignore)"
        )


def read_lines(path: str) -> list[str]:
    """Non-empty, stripped lines of a text file (split lists), with an error naming a missing file."""
    if not os.path.isfile(path):
        raise DataFormatError(f"{path}: split file not found")
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """``(R, 4)`` float32 pixel-edge boxes ``(x1, y1, x2, y2)`` around each mask; zeros for empty masks."""
    boxes = np.zeros((masks.shape[0], 4), dtype=np.float32)
    for r, mask in enumerate(masks):
        cols = np.flatnonzero(mask.any(axis=0))
        if cols.size:
            rows = np.flatnonzero(mask.any(axis=1))
            boxes[r] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def as_generator(rng: Any, name: str = "rng") -> np.random.Generator:
    """``rng`` itself if it is a Generator, a new one seeded with it if it is a non-negative int."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"{name} must be a numpy.random.Generator or a non-negative int seed, got {rng!r}")


def check_size(size: Any, name: str = "size", minimum: int = 1) -> tuple[int, int]:
    """``size`` as ``(H, W)``: an int ``S`` means ``(S, S)``."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= minimum for s in size)
    ):
        raise ValueError(f"{name} must be an int or an (H, W) pair of ints >= {minimum}, got {size!r}")
    return int(size[0]), int(size[1])
