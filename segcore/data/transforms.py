"""Joint transforms of a sample's image, semantic mask, boxes and instance masks.

A transform is called as ``transform(sample, rng)`` and returns a new sample dict (the input is never
modified). All randomness comes from ``rng`` (a ``numpy.random.Generator``), so the same generator state
gives the same output; :class:`segcore.data.DataLoader` hands each sample its own generator derived from
the epoch's seed and the sample's index, which keeps augmentation reproducible with worker threads.

Geometric and colour transforms work on ``(H, W, 3)`` uint8 images; :class:`Normalize` turns the image into
a ``(3, H, W)`` float32 array and therefore comes last. Images are resized bilinearly and masks by nearest
neighbour with the same half-pixel coordinate mapping, so the mask label chosen for an output pixel is
always that of one of the four image pixels it was interpolated from.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

import numpy as np

from ._base import INSTANCE_KEYS, boxes_from_masks, check_size

__all__ = [
    "Compose",
    "RandomScale",
    "Resize",
    "RandomCrop",
    "PadToMultiple",
    "RandomHorizontalFlip",
    "ColorJitter",
    "Normalize",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Transform = Callable[[dict, np.random.Generator], dict]


# -- checks -----------------------------------------------------------------------------------------------
def _check_sample(sample: Any, owner: str) -> tuple[int, int]:
    """``(H, W)`` of a sample after checking the layout the geometric transforms rely on."""
    if not isinstance(sample, dict) or "image" not in sample:
        raise TypeError(f"{owner}: sample must be a dict with an 'image' entry, got {type(sample).__name__}")
    image = sample["image"]
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        found = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(
            f"{owner}: sample['image'] must be an (H, W, 3) uint8 array, got {found} "
            "(Normalize, which makes float CHW images, must come last)"
        )
    h, w = image.shape[:2]
    mask = sample.get("mask")
    if mask is not None and (not isinstance(mask, np.ndarray) or mask.shape != (h, w)):
        found = mask.shape if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ValueError(f"{owner}: sample['mask'] must have the image's shape {(h, w)}, got {found}")
    masks = sample.get("masks")
    if masks is not None and (not isinstance(masks, np.ndarray) or masks.ndim != 3 or masks.shape[1:] != (h, w)):
        found = masks.shape if isinstance(masks, np.ndarray) else type(masks).__name__
        raise ValueError(f"{owner}: sample['masks'] must have shape (R, {h}, {w}), got {found}")
    boxes = sample.get("boxes")
    if boxes is not None and (not isinstance(boxes, np.ndarray) or boxes.ndim != 2 or boxes.shape[1] != 4):
        found = boxes.shape if isinstance(boxes, np.ndarray) else type(boxes).__name__
        raise ValueError(f"{owner}: sample['boxes'] must have shape (R, 4), got {found}")
    return h, w


def _check_rng(rng: Any, owner: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{owner}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_range(value: Any, name: str, owner: str, low: float, high: float = math.inf) -> tuple[float, float]:
    """A ``(lo, hi)`` pair with ``low <= lo <= hi <= high``."""
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
        or not low <= value[0] <= value[1] <= high
    ):
        raise ValueError(f"{owner}: {name} must be a pair (lo, hi) with {low} <= lo <= hi <= {high}, got {value!r}")
    return float(value[0]), float(value[1])


def _check_fill(value: Any, owner: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64) if isinstance(value, (numbers.Real, Sequence)) else None
    if array is None or array.shape not in ((), (3,)) or not ((array >= 0) & (array <= 255)).all():
        raise ValueError(f"{owner}: fill must be an int or three ints in [0, 255], got {value!r}")
    return np.broadcast_to(np.rint(array).astype(np.uint8), (3,)).copy()


def _check_label(value: Any, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= 255:
        raise ValueError(f"{owner}: {name} must be an int in [0, 255], got {value!r}")
    return int(value)


# -- resampling -------------------------------------------------------------------------------------------
def _source(out_size: int, in_size: int) -> np.ndarray:
    """Half-pixel source coordinate of each output pixel centre (torch's ``align_corners=False``)."""
    return (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5


def _resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = image.shape[:2]
    sy = np.clip(_source(size[0], h), 0, h - 1)
    sx = np.clip(_source(size[1], w), 0, w - 1)
    y0 = np.minimum(sy.astype(np.int64), h - 1)
    x0 = np.minimum(sx.astype(np.int64), w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    fy = (sy - y0).astype(np.float32)[:, None, None]
    fx = (sx - x0).astype(np.float32)[None, :, None]
    src = image.astype(np.float32)
    top = src[y0][:, x0] * (1 - fx) + src[y0][:, x1] * fx
    bottom = src[y1][:, x0] * (1 - fx) + src[y1][:, x1] * fx
    out = top * (1 - fy) + bottom * fy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _nearest_index(out_size: int, in_size: int) -> np.ndarray:
    # round(source coordinate): the bilinear tap with the larger weight (ties go to the lower pixel).
    return np.clip(np.ceil(_source(out_size, in_size) - 0.5), 0, in_size - 1).astype(np.int64)


def _resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes."""
    rows = _nearest_index(size[0], array.shape[-2])
    cols = _nearest_index(size[1], array.shape[-1])
    return array[..., rows[:, None], cols[None, :]]


def _keep_instances(sample: dict, keep: np.ndarray) -> None:
    """Drop, in place on a copied sample, the instances where ``keep`` is False."""
    for key in INSTANCE_KEYS:
        if sample.get(key) is not None:
            sample[key] = sample[key][keep]


def _resize_sample(sample: dict, size: tuple[int, int]) -> dict:
    h, w = sample["image"].shape[:2]
    out = dict(sample)
    out["image"] = _resize_bilinear(sample["image"], size)
    if sample.get("mask") is not None:
        out["mask"] = _resize_nearest(sample["mask"], size)
    if sample.get("boxes") is not None:
        scale = np.array([size[1] / w, size[0] / h, size[1] / w, size[0] / h], dtype=np.float32)
        out["boxes"] = (sample["boxes"] * scale).astype(np.float32)
    if sample.get("masks") is not None:
        out["masks"] = _resize_nearest(sample["masks"], size)
        # An instance thinner than a pixel of the new grid can vanish; it then stops being an instance.
        _keep_instances(out, out["masks"].any(axis=(1, 2)))
    return out


# -- transforms -------------------------------------------------------------------------------------------
class Compose:
    """Apply ``transforms`` in order, each with the same generator (so each draws after the previous one)."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"Compose: transforms[{i}] must be callable as t(sample, rng), got {t!r}")
        self.transforms = transforms

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        _check_rng(rng, "Compose")
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"Compose([\n  {inner}\n])"


class RandomScale:
    """Resize by a factor drawn uniformly from ``scale`` (both sides by the same factor).

    Parameters
    ----------
    scale : (lo, hi)
        Range of the factor, ``0 < lo <= hi``; segmentation recipes commonly use ``(0.5, 2.0)``.
    """

    def __init__(self, scale: tuple[float, float] = (0.5, 2.0)) -> None:
        self.scale = _check_range(scale, "scale", "RandomScale", 1e-3)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        h, w = _check_sample(sample, "RandomScale")
        factor = _check_rng(rng, "RandomScale").uniform(*self.scale)
        return _resize_sample(sample, (max(1, round(h * factor)), max(1, round(w * factor))))

    def __repr__(self) -> str:
        return f"RandomScale(scale={self.scale})"


class Resize:
    """Resize to a fixed ``size`` (an int ``S`` means ``S x S``; ``(H, W)`` otherwise)."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = check_size(size, "Resize: size")

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        _check_sample(sample, "Resize")
        return _resize_sample(sample, self.size)

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


def _pad(sample: dict, size: tuple[int, int], fill: np.ndarray, ignore_index: int) -> dict:
    """Pad at the bottom and right up to ``size``: image with ``fill``, mask with ``ignore_index``."""
    h, w = sample["image"].shape[:2]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph == 0 and pw == 0:
        return sample
    out = dict(sample)
    image = np.empty((h + ph, w + pw, 3), dtype=np.uint8)
    image[...] = fill
    image[:h, :w] = sample["image"]
    out["image"] = image
    if sample.get("mask") is not None:
        mask = np.full((h + ph, w + pw), ignore_index, dtype=sample["mask"].dtype)
        mask[:h, :w] = sample["mask"]
        out["mask"] = mask
    if sample.get("masks") is not None:
        out["masks"] = np.pad(sample["masks"], ((0, 0), (0, ph), (0, pw)))
    return out


class RandomCrop:
    """Crop a random ``size`` window, padding first where the image is smaller.

    Padded image pixels get ``fill``; padded mask pixels get ``ignore_index`` so that they count neither in the
    loss nor in metrics. Instances left without pixels are dropped and boxes become the tight boxes of the
    cropped instance masks; without instance masks, boxes are shifted and clipped to the window and those left
    empty are dropped.

    Parameters
    ----------
    size : int or (H, W)
        Output size.
    fill : int or (R, G, B)
        Image value of padded pixels.
    ignore_index : int
        Mask value of padded pixels.
    """

    def __init__(self, size: int | tuple[int, int], fill: int | Sequence[int] = 0, ignore_index: int = 255) -> None:
        self.size = check_size(size, "RandomCrop: size")
        self.fill = _check_fill(fill, "RandomCrop")
        self.ignore_index = _check_label(ignore_index, "ignore_index", "RandomCrop")

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        _check_sample(sample, "RandomCrop")
        _check_rng(rng, "RandomCrop")
        sample = _pad(sample, self.size, self.fill, self.ignore_index)
        h, w = sample["image"].shape[:2]
        ch, cw = self.size
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
        out = dict(sample)
        window = (slice(top, top + ch), slice(left, left + cw))
        out["image"] = sample["image"][window]
        if sample.get("mask") is not None:
            out["mask"] = sample["mask"][window]
        if sample.get("masks") is not None:
            out["masks"] = sample["masks"][(slice(None), *window)]
        if sample.get("boxes") is not None:
            boxes = sample["boxes"] - np.array([left, top, left, top], dtype=np.float32)
            out["boxes"] = np.clip(boxes, 0, [cw, ch, cw, ch]).astype(np.float32)
        if out.get("masks") is not None:
            _keep_instances(out, out["masks"].any(axis=(1, 2)))
            if out.get("boxes") is not None:
                # A clipped box overstates a non-convex instance that leaves the window partly; the cropped
                # mask knows the truth.
                out["boxes"] = boxes_from_masks(out["masks"])
        elif out.get("boxes") is not None:
            b = out["boxes"]
            _keep_instances(out, (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))
        return out

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, fill={tuple(self.fill.tolist())}, ignore_index={self.ignore_index})"


class PadToMultiple:
    """Pad at the bottom and right so height and width are multiples of ``multiple`` (for evaluation of
    models that downsample, at the original resolution: padded mask pixels are ``ignore_index``)."""

    def __init__(self, multiple: int = 32, fill: int | Sequence[int] = 0, ignore_index: int = 255) -> None:
        if isinstance(multiple, bool) or not isinstance(multiple, numbers.Integral) or multiple < 1:
            raise ValueError(f"PadToMultiple: multiple must be a positive int, got {multiple!r}")
        self.multiple = int(multiple)
        self.fill = _check_fill(fill, "PadToMultiple")
        self.ignore_index = _check_label(ignore_index, "ignore_index", "PadToMultiple")

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        h, w = _check_sample(sample, "PadToMultiple")
        m = self.multiple
        return _pad(sample, (-(-h // m) * m, -(-w // m) * m), self.fill, self.ignore_index)

    def __repr__(self) -> str:
        return f"PadToMultiple(multiple={self.multiple})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p`` (boxes ``x1, x2`` become ``W - x2, W - x1``)."""

    def __init__(self, p: float = 0.5) -> None:
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        h, w = _check_sample(sample, "RandomHorizontalFlip")
        # Always draw, so the generator advances the same way whatever the outcome.
        if _check_rng(rng, "RandomHorizontalFlip").random() >= self.p:
            return sample
        out = dict(sample)
        out["image"] = sample["image"][:, ::-1].copy()
        if sample.get("mask") is not None:
            out["mask"] = sample["mask"][:, ::-1].copy()
        if sample.get("masks") is not None:
            out["masks"] = sample["masks"][:, :, ::-1].copy()
        if sample.get("boxes") is not None:
            b = sample["boxes"]
            out["boxes"] = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], axis=1).astype(np.float32)
        return out

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


# RGB <-> YIQ: hue is a rotation of the (I, Q) chroma plane, which needs no per-pixel branching (unlike HSV).
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]], dtype=np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ColorJitter:
    """Random brightness, contrast, saturation and hue changes of the image only, in a random order.

    Factors are drawn uniformly from ``[1 - x, 1 + x]`` for brightness, contrast and saturation, and the hue is
    rotated by an angle drawn from ``[-hue, hue]`` turns (``hue <= 0.5``), as in torchvision.
    """

    def __init__(
        self, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3, hue: float = 0.05
    ) -> None:
        for name, value, high in (
            ("brightness", brightness, 1.0),
            ("contrast", contrast, 1.0),
            ("saturation", saturation, 1.0),
            ("hue", hue, 0.5),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= high:
                raise ValueError(f"ColorJitter: {name} must be a number in [0, {high}], got {value!r}")
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation, self.hue = float(saturation), float(hue)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        _check_sample(sample, "ColorJitter")
        _check_rng(rng, "ColorJitter")
        factors = {
            "brightness": rng.uniform(1 - self.brightness, 1 + self.brightness),
            "contrast": rng.uniform(1 - self.contrast, 1 + self.contrast),
            "saturation": rng.uniform(1 - self.saturation, 1 + self.saturation),
            "hue": rng.uniform(-self.hue, self.hue),
        }
        order = rng.permutation(4)
        image = sample["image"].astype(np.float32)
        for step in order:
            name = ("brightness", "contrast", "saturation", "hue")[step]
            f = np.float32(factors[name])
            if name == "brightness":
                image = image * f
            elif name == "contrast":
                image = (image - (image @ _GREY).mean()) * f + (image @ _GREY).mean()
            elif name == "saturation":
                grey = (image @ _GREY)[..., None]
                image = (image - grey) * f + grey
            else:
                angle = np.float32(2 * math.pi) * f
                c, s = np.cos(angle), np.sin(angle)
                rotate = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float32)
                image = image @ (_YIQ_TO_RGB @ rotate @ _RGB_TO_YIQ).T
            image = np.clip(image, 0, 255)
        out = dict(sample)
        out["image"] = np.rint(image).astype(np.uint8)
        return out

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue})"
        )


class Normalize:
    """Turn the ``(H, W, 3)`` uint8 image into ``(3, H, W)`` float32 ``(x / 255 - mean) / std``.

    The last transform of a pipeline; masks and instance annotations pass through unchanged.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        mean_a = np.asarray(mean, dtype=np.float64) if isinstance(mean, Sequence) else None
        std_a = np.asarray(std, dtype=np.float64) if isinstance(std, Sequence) else None
        if mean_a is None or mean_a.shape != (3,) or not np.isfinite(mean_a).all():
            raise ValueError(f"Normalize: mean must be three finite numbers, got {mean!r}")
        if std_a is None or std_a.shape != (3,) or not (np.isfinite(std_a).all() and (std_a > 0).all()):
            raise ValueError(f"Normalize: std must be three positive numbers, got {std!r}")
        self.mean = tuple(float(v) for v in mean_a)
        self.std = tuple(float(v) for v in std_a)
        self._scale = (1.0 / (255.0 * std_a)).astype(np.float32)
        self._shift = (mean_a / std_a).astype(np.float32)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        _check_sample(sample, "Normalize")
        out = dict(sample)
        image = sample["image"].astype(np.float32) * self._scale - self._shift
        out["image"] = np.ascontiguousarray(image.transpose(2, 0, 1))
        return out

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"
