"""Multi-scale RoIAlign over a feature pyramid, as ``torchvision.ops.MultiScaleRoIAlign``.

Each RoI is pooled from one pyramid level chosen by the FPN paper's rule (Lin et al. 2017, eq. 1):
``level = floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps)``, clamped to the levels present.
Level scales are inferred from the feature and image sizes (``2 ** round(log2(feature / image))``) on the first
call and kept, like torchvision.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Sequence

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..nn.module import Module
from ._utils import check_boxes_tensor, check_int, convert_boxes_to_roi_format, output_pair
from .boxes import box_area
from .roi_align import roi_align

__all__ = ["LevelMapper", "MultiScaleRoIAlign", "infer_scale"]


class LevelMapper:
    """Assigns each box to an FPN level with eq. 1 of the FPN paper (torchvision's ``LevelMapper``).

    Parameters
    ----------
    k_min, k_max:
        Lowest and highest pyramid level available (e.g. 2 and 5 for P2-P5).
    canonical_scale, canonical_level:
        A ``canonical_scale x canonical_scale`` box maps to ``canonical_level`` (224 and 4, from ImageNet).
    eps:
        Added before the floor, in the boxes' dtype, so that exact powers of two land on the upper level.

    Calling the mapper on a list of ``(L_i, 4)`` box Tensors returns an int64 Tensor of level *indices*
    ``level - k_min`` in ``[0, k_max - k_min]`` for all boxes, concatenated. Boxes of zero area go to the lowest
    level; boxes of negative area (inverted corners) have no defined level in torchvision and also go to the
    lowest level here.
    """

    def __init__(
        self, k_min: int, k_max: int, canonical_scale: int = 224, canonical_level: int = 4, eps: float = 1e-6
    ) -> None:
        op = "LevelMapper"
        self.k_min = check_int(op, k_min, "k_min")
        self.k_max = check_int(op, k_max, "k_max")
        if self.k_max < self.k_min:
            raise ValueError(f"{op}: k_max must be >= k_min, got k_min={k_min}, k_max={k_max}")
        if not isinstance(canonical_scale, (numbers.Real, np.number)) or not canonical_scale > 0:
            raise ValueError(f"{op}: canonical_scale must be a number > 0, got {canonical_scale!r}")
        self.s0 = canonical_scale
        self.lvl0 = check_int(op, canonical_level, "canonical_level")
        self.eps = float(eps)

    def __call__(self, boxlists: Sequence[Tensor]) -> Tensor:
        if not isinstance(boxlists, (list, tuple)) or not boxlists:
            raise TypeError(f"LevelMapper: expected a non-empty list of (L, 4) box Tensors, got {boxlists!r:.100}")
        for i, b in enumerate(boxlists):
            check_boxes_tensor("LevelMapper", b, f"boxlists[{i}]", 4)
        xp = boxlists[0].backend.xp
        areas = xp.concat([box_area(b).data for b in boxlists])
        t = areas.dtype.type
        # torchvision: floor(lvl0 + log2(sqrt(area) / s0) + eps), every step in the boxes' dtype.
        with np.errstate(divide="ignore", invalid="ignore"):
            s = xp.sqrt(areas)
            levels = xp.floor(t(self.lvl0) + xp.log2(s / t(self.s0)) + t(self.eps))
        levels = xp.where(xp.isnan(levels), t(self.k_min), levels)
        levels = xp.clip(levels, t(self.k_min), t(self.k_max))
        return Tensor(xp.astype(levels, xp.int64) - self.k_min, boxlists[0].backend)


def infer_scale(feature_size: Sequence[int], original_size: Sequence[int]) -> float:
    """torchvision's ``_infer_scale``: ``2 ** round(log2(feature / image))`` from the heights (float32 maths)."""
    approx = np.float32(float(feature_size[0]) / float(original_size[0]))
    # torch.round rounds halves to even, as np.round does.
    return float(2.0 ** float(np.round(np.log2(approx))))


class MultiScaleRoIAlign(Module):
    """RoIAlign over the levels of a feature pyramid, as ``torchvision.ops.MultiScaleRoIAlign``.

    Parameters
    ----------
    featmap_names:
        Keys of the feature dict to pool from, e.g. ``["0", "1", "2", "3"]`` (in the dict's order, finest first).
    output_size:
        ``(Ph, Pw)`` or one int.
    sampling_ratio:
        Passed to :func:`segcore.ops.roi_align` (``aligned=False``, as torchvision).
    canonical_scale, canonical_level:
        Of :class:`LevelMapper`.

    Calling it with ``(features, boxes, image_shapes)`` — a dict of ``(N, C, H_l, W_l)`` maps, a list of
    ``(L_i, 4)`` boxes per image in image coordinates, and the ``(height, width)`` of every image before the
    backbone — returns ``(sum L_i, C, Ph, Pw)``, differentiable with respect to the features.
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        output_size: int | tuple[int, int],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        op = "MultiScaleRoIAlign"
        if isinstance(featmap_names, str) or not all(isinstance(n, str) for n in featmap_names) or not featmap_names:
            raise TypeError(f"{op}: featmap_names must be a non-empty list of str, got {featmap_names!r}")
        self.featmap_names = list(featmap_names)
        self.output_size = output_pair(op, output_size)
        self.sampling_ratio = check_int(op, sampling_ratio, "sampling_ratio")
        self.canonical_scale = canonical_scale
        self.canonical_level = check_int(op, canonical_level, "canonical_level")
        self.scales: list[float] | None = None
        self.map_levels: LevelMapper | None = None

    def setup_scales(self, features: Sequence[Tensor], image_shapes: Sequence[tuple[int, int]]) -> None:
        """Infer every level's scale from the largest image and derive the level range (torchvision's rule)."""
        if not image_shapes:
            raise ValueError("MultiScaleRoIAlign: image_shapes must list the (height, width) of every image, got []")
        original = (max(int(s[0]) for s in image_shapes), max(int(s[1]) for s in image_shapes))
        scales = [infer_scale(f.shape[-2:], original) for f in features]
        lvl_min = -math.log2(float(np.float32(scales[0])))
        lvl_max = -math.log2(float(np.float32(scales[-1])))
        self.scales = scales
        self.map_levels = LevelMapper(
            int(lvl_min), int(lvl_max), canonical_scale=self.canonical_scale, canonical_level=self.canonical_level
        )

    def forward(
        self, x: Mapping[str, Tensor], boxes: Sequence[Tensor], image_shapes: Sequence[tuple[int, int]]
    ) -> Tensor:
        op = "MultiScaleRoIAlign"
        if not isinstance(x, Mapping):
            raise TypeError(f"{op}: x must be a dict of feature maps, got {type(x).__name__}")
        features = [v for k, v in x.items() if k in self.featmap_names]
        if not features:
            raise ValueError(f"{op}: none of featmap_names {self.featmap_names} is a key of x (keys: {list(x)})")
        if not isinstance(boxes, (list, tuple)):
            raise TypeError(f"{op}: boxes must be a list of (L, 4) Tensors, one per image, got {type(boxes).__name__}")
        if self.scales is None or self.map_levels is None:
            self.setup_scales(features, image_shapes)
        rois = convert_boxes_to_roi_format(boxes, op)
        if len(features) == 1:
            return roi_align(
                features[0], rois, self.output_size, spatial_scale=self.scales[0], sampling_ratio=self.sampling_ratio
            )
        levels = self.map_levels(boxes).numpy()
        xp = rois.backend.xp
        pooled, members = [], []
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            idx = np.flatnonzero(levels == level)
            if idx.size == 0:
                continue
            level_rois = Tensor(rois.data[xp.asarray(idx)], rois.backend)
            pooled.append(roi_align(feature, level_rois, self.output_size, scale, self.sampling_ratio))
            members.append(idx)
        # Levels past the last feature map given (featmap_names skipping a level in between) have no map to
        # pool from: those RoIs stay zero, as torchvision's zero-initialised result.
        unmapped = np.flatnonzero(levels >= len(features))
        if unmapped.size or not pooled:
            shape = (unmapped.size, features[0].shape[1]) + self.output_size
            pooled.append(Tensor(xp.zeros(shape, dtype=features[0].dtype), features[0].backend))
            members.append(unmapped)
        # Put each RoI's result back at its position with one differentiable gather.
        inverse = np.argsort(np.concatenate(members), kind="stable")
        stacked = pooled[0] if len(pooled) == 1 else F.cat(pooled, dim=0)
        return stacked[Tensor(xp.asarray(inverse), rois.backend)]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio})"
        )
