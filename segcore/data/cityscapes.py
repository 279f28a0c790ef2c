"""Cityscapes fine annotations: ``gtFine/<split>/<city>/*_gtFine_labelIds.png`` mapped to the 19 train ids.

Images are ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png``. The id -> trainId table is
the official one (``cityscapesscripts/helpers/labels.py``); ids without a train id map to 255 (ignored).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._base import DataFormatError, SegmentationDataset, check_dir, check_same_size, read_image, read_label_png

__all__ = ["CityscapesSegmentation", "CITYSCAPES_CLASSES", "CITYSCAPES_ID_TO_TRAIN_ID"]

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

# Official train id of each label id 0..33 (unlabeled, ego vehicle, rectification border, out of roi, static,
# dynamic, ground, road, sidewalk, parking, rail track, building, wall, fence, guard rail, bridge, tunnel, pole,
# polegroup, traffic light, traffic sign, vegetation, terrain, sky, person, rider, car, truck, bus, caravan,
# trailer, train, motorcycle, bicycle).
CITYSCAPES_ID_TO_TRAIN_ID: tuple[int, ...] = (
    255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5,
    255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18,
)  # fmt: skip

# The official colours of the train ids, for overlays.
_CITYSCAPES_COLOURS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"


class CityscapesSegmentation(SegmentationDataset):
    """A Cityscapes split with fine annotations, labels in train ids (19 classes, 255 ignored).

    Parameters
    ----------
    root : path
        Directory holding ``leftImg8bit`` and ``gtFine``.
    split : str
        ``"train"``, ``"val"`` or ``"test"`` (a directory name under both trees).
    """

    class_names = CITYSCAPES_CLASSES
    palette = np.asarray(_CITYSCAPES_COLOURS, dtype=np.uint8)

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        root = check_dir(root, "Cityscapes root")
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty str such as 'train' or 'val', got {split!r}")
        image_root = os.path.join(root, "leftImg8bit", split)
        label_root = os.path.join(root, "gtFine", split)
        for directory in (image_root, label_root):
            if not os.path.isdir(directory):
                raise FileNotFoundError(f"no Cityscapes split {split!r} under {root!r}: {directory!r} is missing")
        self.root, self.split = root, split
        self.image_paths: list[str] = []
        self.label_paths: list[str] = []
        self.ids: list[str] = []
        for city in sorted(os.listdir(image_root)):
            city_dir = os.path.join(image_root, city)
            if not os.path.isdir(city_dir):
                continue
            for name in sorted(os.listdir(city_dir)):
                if not name.endswith(_IMAGE_SUFFIX):
                    continue
                stem = name[: -len(_IMAGE_SUFFIX)]
                label = os.path.join(label_root, city, stem + _LABEL_SUFFIX)
                if not os.path.isfile(label):
                    raise DataFormatError(f"{os.path.join(city_dir, name)}: no fine annotation {label}")
                self.image_paths.append(os.path.join(city_dir, name))
                self.label_paths.append(label)
                self.ids.append(stem)
        if not self.ids:
            raise FileNotFoundError(f"no *{_IMAGE_SUFFIX} images under {image_root!r}")
        lookup = np.full(256, 255, dtype=np.uint8)
        lookup[: len(CITYSCAPES_ID_TO_TRAIN_ID)] = CITYSCAPES_ID_TO_TRAIN_ID
        self._lookup = lookup

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.image_paths[index], self.label_paths[index]
        image = read_image(image_path)
        ids = read_label_png(label_path)
        check_same_size(image, ids, image_path, label_path)
        unknown = ids >= len(CITYSCAPES_ID_TO_TRAIN_ID)
        if unknown.any():
            values = sorted({int(v) for v in np.unique(ids[unknown])})[:10]
            raise DataFormatError(
                f"{label_path}: label ids {values} are not Cityscapes ids "
                f"(expected 0-{len(CITYSCAPES_ID_TO_TRAIN_ID) - 1})"
            )
        return {"image": image, "mask": self._lookup[ids], "id": self.ids[index]}

    def __repr__(self) -> str:
        return f"CityscapesSegmentation(root={self.root!r}, split={self.split!r}, {len(self)} samples)"
