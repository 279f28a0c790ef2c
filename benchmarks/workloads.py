"""Inputs and checks shared by the benchmark scripts (no optional imports here: a test may import this)."""

from __future__ import annotations

import numpy as np

__all__ = ["photo_like", "max_abs_diff"]


def photo_like(height: int, width: int, labels: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 image of smooth shaded colour regions with noise and sharp edges, and noisy float32 softmax
    probabilities that favour each region's label: the dense CRF's benchmark setting."""
    yy, xx = np.mgrid[0:height, 0:width]
    # A grid of rectangular regions of unequal sizes, plus discs, so every label appears with real edges.
    cells = (np.floor(xx / width * 6) + 6 * np.floor(yy / height * 4)).astype(int) % labels
    for i in range(labels // 3):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(15, 60)
        cells[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = (i * 7) % labels
    palette = rng.integers(20, 236, (labels, 3))
    image = palette[cells].astype(np.float64)
    image += 30 * np.sin(xx / 23.0)[..., None] * np.array([1.0, -0.5, 0.5]) + 20 * np.cos(yy / 17.0)[..., None]
    image += rng.normal(0, 8, image.shape)
    logits = 2.0 * np.eye(labels)[cells].transpose(2, 0, 1) + rng.normal(0, 1.5, (labels, height, width))
    probs = np.exp(logits - logits.max(axis=0))
    probs /= probs.sum(axis=0)
    return np.clip(image, 0, 255).astype(np.uint8), probs.astype(np.float32)


def max_abs_diff(a, b) -> float:
    """The largest absolute difference of two arrays, computed in float64."""
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))
