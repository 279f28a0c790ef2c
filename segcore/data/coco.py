"""COCO instance annotations (``instances_*.json``): polygons, uncompressed and compressed RLE, ``iscrowd``.

Category ids (sparse in COCO: 1..90) are mapped to contiguous labels ``1..C`` in ascending id order; label 0
is background. Each sample carries the instances and a semantic mask painted from them (larger instances
first, so smaller ones stay visible where they overlap); crowd regions are painted ``ignore_index`` since
their pixels belong to no single labelled instance. Masks are decoded with :mod:`segcore.metrics.mask_rle`,
which rasterises polygons exactly as the COCO toolbox does.
"""

from __future__ import annotations

import json
import numbers
import os
from typing import Any, Mapping

import numpy as np

from ..metrics import mask_rle
from ._base import DataFormatError, SegmentationDataset, boxes_from_masks, check_dir, read_image

__all__ = ["COCOInstances"]


def _require(record: Any, keys: tuple[str, ...], where: str, path: str) -> None:
    if not isinstance(record, Mapping):
        raise DataFormatError(f"{path}: {where} must be a JSON object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataFormatError(f"{path}: {where} is missing the key(s) {missing}")


def _int(value: Any, where: str, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataFormatError(f"{path}: {where} must be an integer, got {value!r}")
    return int(value)


class COCOInstances(SegmentationDataset):
    """A COCO-format instance segmentation data set.

    Parameters
    ----------
    image_dir : path
        Directory holding the images (``file_name`` entries are relative to it).
    annotation_file : path
        The ``instances_*.json`` file.
    skip_empty : bool
        Leave out images without any (non-crowd) annotation.

    Attributes
    ----------
    category_ids : tuple of int
        COCO category id of each label ``1..C`` (``category_ids[label - 1]``).
    """

    def __init__(
        self, image_dir: str | os.PathLike, annotation_file: str | os.PathLike, *, skip_empty: bool = False
    ) -> None:
        self.image_dir = check_dir(image_dir, "COCO image_dir")
        if not isinstance(annotation_file, (str, os.PathLike)):
            raise TypeError(f"annotation_file must be a str or os.PathLike, got {type(annotation_file).__name__}")
        path = os.fspath(annotation_file)
        if not isinstance(skip_empty, bool):
            raise TypeError(f"skip_empty must be True or False, got {skip_empty!r}")
        if not os.path.isfile(path):
            raise DataFormatError(f"{path}: annotation file not found")
        self.annotation_file = path
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFormatError(f"{path}: not valid JSON ({exc})") from None
        _require(data, ("images", "annotations", "categories"), "the top level", path)
        for key in ("images", "annotations", "categories"):
            if not isinstance(data[key], list):
                raise DataFormatError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")

        categories = []
        for i, cat in enumerate(data["categories"]):
            _require(cat, ("id", "name"), f"categories[{i}]", path)
            categories.append((_int(cat["id"], f"categories[{i}]['id']", path), str(cat["name"])))
        categories.sort()
        self.category_ids = tuple(c for c, _ in categories)
        if len(set(self.category_ids)) != len(self.category_ids):
            raise DataFormatError(f"{path}: category ids are not unique: {list(self.category_ids)}")
        if len(categories) >= self.ignore_index:
            # Semantic masks are uint8 with 255 reserved for "ignore".
            raise DataFormatError(
                f"{path}: {len(categories)} categories do not fit uint8 semantic masks (at most 254 besides "
                "background and the ignore label 255)"
            )
        self.class_names = ("background",) + tuple(name for _, name in categories)
        self._label_of = {c: label for label, c in enumerate(self.category_ids, start=1)}

        images: dict[int, dict] = {}
        for i, img in enumerate(data["images"]):
            _require(img, ("id", "file_name", "height", "width"), f"images[{i}]", path)
            image_id = _int(img["id"], f"images[{i}]['id']", path)
            if image_id in images:
                raise DataFormatError(f"{path}: image id {image_id} appears twice in 'images'")
            images[image_id] = {
                "file_name": str(img["file_name"]),
                "height": _int(img["height"], f"images[{i}]['height']", path),
                "width": _int(img["width"], f"images[{i}]['width']", path),
                "annotations": [],
            }
        for i, ann in enumerate(data["annotations"]):
            _require(ann, ("image_id", "category_id", "segmentation"), f"annotations[{i}]", path)
            image_id = _int(ann["image_id"], f"annotations[{i}]['image_id']", path)
            category = _int(ann["category_id"], f"annotations[{i}]['category_id']", path)
            if image_id not in images:
                raise DataFormatError(f"{path}: annotations[{i}] refers to image id {image_id}, which 'images' lacks")
            if category not in self._label_of:
                raise DataFormatError(
                    f"{path}: annotations[{i}] has category_id {category}, which 'categories' lacks"
                )
            images[image_id]["annotations"].append((i, ann))
        self.image_ids = [
            image_id
            for image_id, img in sorted(images.items())
            if not skip_empty or any(not a.get("iscrowd", 0) for _, a in img["annotations"])
        ]
        self._images = images

    def __len__(self) -> int:
        return len(self.image_ids)

    def load(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        info = self._images[image_id]
        image_path = os.path.join(self.image_dir, info["file_name"])
        image = read_image(image_path)
        h, w = info["height"], info["width"]
        if image.shape[:2] != (h, w):
            raise DataFormatError(
                f"{image_path}: image size {image.shape[1]}x{image.shape[0]} (WxH) does not match the size "
                f"{w}x{h} given for image id {image_id} in {self.annotation_file}"
            )
        masks, labels, crowd = [], [], []
        for i, ann in info["annotations"]:
            try:
                masks.append(mask_rle.segmentation_to_mask(ann["segmentation"], h, w))
            except (ValueError, TypeError) as exc:
                where = f"{self.annotation_file}: annotations[{i}] (image id {image_id})"
                raise DataFormatError(f"{where}: {exc}") from None
            labels.append(self._label_of[int(ann["category_id"])])
            crowd.append(bool(ann.get("iscrowd", 0)))
        masks_a = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
        labels_a = np.asarray(labels, dtype=np.int64)
        crowd_a = np.asarray(crowd, dtype=bool)
        semantic = np.zeros((h, w), dtype=np.uint8)
        areas = masks_a.sum(axis=(1, 2))
        for r in np.argsort(-areas, kind="stable"):
            if not crowd_a[r]:
                semantic[masks_a[r]] = labels_a[r]
        for r in np.flatnonzero(crowd_a):
            semantic[masks_a[r]] = self.ignore_index
        boxes = np.zeros((len(masks), 4), dtype=np.float32)
        for r, (i, ann) in enumerate(info["annotations"]):
            bbox = ann.get("bbox")
            if bbox is not None:
                box = np.asarray(bbox, dtype=np.float64) if isinstance(bbox, list) else None
                if box is None or box.shape != (4,) or not np.isfinite(box).all() or (box[2:] < 0).any():
                    raise DataFormatError(
                        f"{self.annotation_file}: annotations[{i}]['bbox'] must be [x, y, w, h] with w, h >= 0, "
                        f"got {bbox!r}"
                    )
                boxes[r] = (box[0], box[1], box[0] + box[2], box[1] + box[3])
            else:
                boxes[r] = boxes_from_masks(masks_a[r : r + 1])[0]
        return {
            "image": image,
            "mask": semantic,
            "boxes": boxes,
            "labels": labels_a,
            "masks": masks_a,
            "iscrowd": crowd_a,
            "id": os.path.splitext(os.path.basename(info["file_name"]))[0],
            "image_id": image_id,
        }

    def __repr__(self) -> str:
        return f"COCOInstances({self.annotation_file!r}, {len(self)} images, {self.num_classes - 1} categories)"
