"""Pascal VOC semantic segmentation: ``JPEGImages/*.jpg`` with palette PNG masks in ``SegmentationClass``.

The split lists image ids in ``ImageSets/Segmentation/<split>.txt``. Mask value 255 marks object boundaries
and void regions (ignored); 0 is background and 1-20 the object classes.
"""

from __future__ import annotations

import os
from typing import Any

from ..viz import colormap
from ._base import (
    DataFormatError,
    SegmentationDataset,
    check_dir,
    check_labels,
    check_same_size,
    read_image,
    read_label_png,
    read_lines,
)

__all__ = ["VOCSegmentation", "VOC_CLASSES"]

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


class VOCSegmentation(SegmentationDataset):
    """Pascal VOC (2007-2012 layout) semantic segmentation split.

    Parameters
    ----------
    root : path
        The ``VOC20XX`` directory (holding ``JPEGImages``, ``SegmentationClass``, ``ImageSets``), or a directory
        containing ``VOCdevkit/VOC2012`` or ``VOC2012``.
    split : str
        Name of the split file in ``ImageSets/Segmentation`` (``"train"``, ``"val"``, ``"trainval"``, ...).
    mask_dir : str
        Directory of the masks under ``root`` (``"SegmentationClass"``; ``"SegmentationClassAug"`` for SBD).
    """

    class_names = VOC_CLASSES
    palette = colormap(len(VOC_CLASSES))

    def __init__(self, root: str | os.PathLike, split: str = "train", *, mask_dir: str = "SegmentationClass") -> None:
        root = check_dir(root, "VOC root")
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty str such as 'train' or 'val', got {split!r}")
        candidates = [root, os.path.join(root, "VOCdevkit", "VOC2012"), os.path.join(root, "VOC2012")]
        found = next((c for c in candidates if os.path.isdir(os.path.join(c, "JPEGImages"))), None)
        if found is None:
            raise FileNotFoundError(
                f"no Pascal VOC tree under {root!r}: expected a JPEGImages directory in one of {candidates}"
            )
        self.root = found
        self.split = split
        split_file = os.path.join(found, "ImageSets", "Segmentation", f"{split}.txt")
        self.ids = read_lines(split_file)
        self.image_paths = [os.path.join(found, "JPEGImages", f"{i}.jpg") for i in self.ids]
        self.mask_paths = [os.path.join(found, mask_dir, f"{i}.png") for i in self.ids]
        # Missing files are found now rather than hours into training.
        missing = [p for pair in zip(self.image_paths, self.mask_paths) for p in pair if not os.path.isfile(p)]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataFormatError(f"{split_file}: {len(missing)} listed file(s) do not exist: {shown}")

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> dict[str, Any]:
        image_path, mask_path = self.image_paths[index], self.mask_paths[index]
        image = read_image(image_path)
        mask = read_label_png(mask_path)
        check_same_size(image, mask, image_path, mask_path)
        check_labels(mask, self.num_classes, self.ignore_index, mask_path)
        return {"image": image, "mask": mask, "id": self.ids[index]}

    def __repr__(self) -> str:
        return f"VOCSegmentation(root={self.root!r}, split={self.split!r}, {len(self)} samples)"
