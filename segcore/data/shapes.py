"""The embedded synthetic data set: filled shapes on textured, noisy backgrounds.

Nothing is downloaded: samples are drawn on the fly from a seed, so the same seed gives the same data on
every machine. Shape *kind* is the class; colours are drawn independently of the class, so a model has to
learn shape rather than colour. Shapes may overlap (later ones occlude earlier ones; instance masks are the
visible parts) and may be cut by the image border.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ._base import SegmentationDataset, as_generator, boxes_from_masks, check_size

__all__ = ["ShapesDataset", "shapes", "SHAPE_CLASSES"]

#: Class names in label order; ``num_classes=K`` uses the first ``K`` (background plus ``K - 1`` kinds).
SHAPE_CLASSES: tuple[str, ...] = ("background", "circle", "rectangle", "triangle", "ring", "cross")


def _check_int(value: Any, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        expected = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {expected}, got {value}")
    return int(value)


class ShapesDataset(SegmentationDataset):
    """Synthetic images of circles, rectangles, triangles (and rings, crosses) with full annotations.

    Build it with :func:`shapes`. Sample ``i`` is generated from ``(seed, i)`` alone, so it can be read in
    any order and from several threads, and is the same every time.
    """

    def __init__(
        self, n: int, size: tuple[int, int], num_classes: int, max_instances: int, seed: int
    ) -> None:
        self.n = n
        self.size = size
        self.class_names = SHAPE_CLASSES[:num_classes]
        self.max_instances = max_instances
        self.seed = seed

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(n={self.n}, size={self.size}, num_classes={self.num_classes}, "
            f"max_instances={self.max_instances}, seed={self.seed})"
        )

    def load(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng((self.seed, index))
        h, w = self.size
        image = _background(rng, h, w)
        mask = np.zeros((h, w), dtype=np.uint8)
        owner = np.full((h, w), -1, dtype=np.int64)  # which instance is visible at each pixel
        count = int(rng.integers(1, self.max_instances + 1))
        labels = rng.integers(1, self.num_classes, size=count)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5  # pixel centres
        base = float(image.reshape(-1, 3).mean())
        for k, label in enumerate(labels):
            region = _draw_shape(rng, int(label), xs, ys, h, w)
            colour = _shape_colour(rng, base)
            # A little shading inside the shape, so that flat colour is not a give-away of "not background".
            shade = rng.normal(0.0, 6.0, size=(h, w, 1))
            image[region] = np.clip(colour + shade[region], 0, 255)
            mask[region] = label
            owner[region] = k
        image += rng.normal(0.0, 8.0, size=image.shape)
        visible = owner[None] == np.arange(count)[:, None, None]
        keep = visible.any(axis=(1, 2))  # fully occluded shapes are no instances
        masks = visible[keep]
        return {
            "image": np.clip(np.rint(image), 0, 255).astype(np.uint8),
            "mask": mask,
            "boxes": boxes_from_masks(masks),
            "labels": labels[keep].astype(np.int64),
            "masks": masks,
            "iscrowd": np.zeros(int(keep.sum()), dtype=bool),
            "id": f"shapes-{index:05d}",
        }


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A float ``(h, w, 3)`` texture: base colour, smooth blotches and oriented stripes."""
    base = rng.uniform(40, 215, size=3)
    coarse = rng.normal(0.0, 18.0, size=(4, 4, 3))
    # Bilinear upsampling of a 4x4 grid gives low-frequency blotches without any image library.
    gy = np.linspace(0, 3, h)
    gx = np.linspace(0, 3, w)
    y0 = np.minimum(gy.astype(int), 2)
    x0 = np.minimum(gx.astype(int), 2)
    fy = (gy - y0)[:, None, None]
    fx = (gx - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    blotches = top * (1 - fy) + bottom * fy
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(4.0, 12.0)
    ys, xs = np.mgrid[0:h, 0:w]
    phase = (xs * math.cos(angle) + ys * math.sin(angle)) * (2 * math.pi / period)
    stripes = rng.uniform(4.0, 14.0) * np.sin(phase)[..., None]
    return base + blotches + stripes


def _shape_colour(rng: np.random.Generator, background_mean: float) -> np.ndarray:
    """A colour whose brightness differs clearly from the background's, so every shape is visible."""
    colour = rng.uniform(0, 255, size=3)
    shift = 70.0 - abs(colour.mean() - background_mean)
    if shift > 0:
        colour = colour + (shift if colour.mean() >= background_mean else -shift)
    return np.clip(colour, 0, 255)


def _convex(xs: np.ndarray, ys: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Pixels whose centres lie inside the convex polygon ``corners`` (counter-clockwise or clockwise)."""
    (ax, ay), (bx, by), (cx, cy) = corners[0], corners[1], corners[2]
    sign = 1.0 if (bx - ax) * (cy - by) - (by - ay) * (cx - bx) >= 0 else -1.0
    inside = np.ones(xs.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(corners, np.roll(corners, -1, axis=0)):
        inside &= sign * ((x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0)) >= 0
    return inside


def _rotated_box(cx: float, cy: float, half_w: float, half_h: float, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    local = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    return local @ np.array([[c, s], [-s, c]]) + (cx, cy)


def _draw_shape(rng: np.random.Generator, label: int, xs: np.ndarray, ys: np.ndarray, h: int, w: int) -> np.ndarray:
    """Boolean region of one shape of class ``label``; borders may cut off up to about a third of it."""
    scale = min(h, w)
    r = rng.uniform(0.12, 0.24) * scale
    # Centres at least half a radius inside: shapes touch and cross the border, yet keep enough of their outline
    # to be told apart (a triangle cut in half looks like a rectangle).
    cx, cy = rng.uniform(0.5 * r, w - 0.5 * r), rng.uniform(0.5 * r, h - 0.5 * r)
    angle = rng.uniform(0, 2 * math.pi)
    kind = SHAPE_CLASSES[label]
    d2 = (xs - cx) ** 2 + (ys - cy) ** 2
    if kind == "circle":
        region = d2 <= r * r
    elif kind == "rectangle":
        # Axis-aligned (either side the longer), as rectangles in documents and scenes mostly are.
        half = (r, r * rng.uniform(0.5, 1.0))
        half_w, half_h = half if angle < math.pi else half[::-1]
        region = (np.abs(xs - cx) <= half_w) & (np.abs(ys - cy) <= half_h)
    elif kind == "triangle":
        turns = angle + np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
        corners = np.stack([cx + 1.4 * r * np.cos(turns), cy + 1.4 * r * np.sin(turns)], axis=1)
        region = _convex(xs, ys, corners)
    elif kind == "ring":
        region = (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    else:  # cross: two bars through the centre
        bar = 0.35 * r
        region = _convex(xs, ys, _rotated_box(cx, cy, r, bar, angle)) | _convex(
            xs, ys, _rotated_box(cx, cy, bar, r, angle)
        )
    if not region.any():
        # A shape centred on a tiny image can miss every pixel centre; give it the pixel under its centre.
        region[min(int(cy), h - 1), min(int(cx), w - 1)] = True
    return region


def shapes(
    n: int,
    size: int | tuple[int, int] = (64, 64),
    *,
    num_classes: int = 4,
    max_instances: int = 4,
    rng: np.random.Generator | int = 0,
) -> ShapesDataset:
    """A deterministic synthetic segmentation data set of ``n`` images.

    Parameters
    ----------
    n : int
        Number of samples.
    size : int or (H, W)
        Image size (at least 8x8).
    num_classes : int
        2 to 6: background plus the first ``num_classes - 1`` of circle, rectangle, triangle, ring, cross.
    max_instances : int
        Each image holds 1 to ``max_instances`` shapes.
    rng : numpy.random.Generator or int
        Source of the data set's seed (one draw from a Generator, or the int itself). Same seed, same data.

    Returns
    -------
    ShapesDataset
        Samples with ``image``, ``mask``, ``boxes``, ``labels``, ``masks``, ``iscrowd`` and ``id``
        (see :mod:`segcore.data`).
    """
    n = _check_int(n, "n", 0)
    size = check_size(size, "size", minimum=8)
    num_classes = _check_int(num_classes, "num_classes", 2, len(SHAPE_CLASSES))
    max_instances = _check_int(max_instances, "max_instances", 1)
    if isinstance(rng, np.random.Generator):
        seed = int(rng.integers(0, 2**63 - 1))
    else:
        as_generator(rng)  # validates the int
        seed = int(rng)
    return ShapesDataset(n, size, num_classes, max_instances, seed)
