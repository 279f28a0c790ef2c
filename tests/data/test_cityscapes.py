"""Cityscapes reader: directory layout, the official id -> trainId mapping, malformed files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from segcore.data import CITYSCAPES_CLASSES, CityscapesSegmentation, DataFormatError

# Spot checks typed from cityscapesscripts/helpers/labels.py: (name, id, trainId).
OFFICIAL = [
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("ground", 6, 255), ("road", 7, 0), ("sidewalk", 8, 1),
    ("parking", 9, 255), ("rail track", 10, 255), ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4),
    ("guard rail", 14, 255), ("pole", 17, 5), ("polegroup", 18, 255), ("traffic light", 19, 6),
    ("traffic sign", 20, 7), ("vegetation", 21, 8), ("terrain", 22, 9), ("sky", 23, 10), ("person", 24, 11),
    ("rider", 25, 12), ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15), ("caravan", 29, 255),
    ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
]  # fmt: skip


def make_cityscapes(root, split="val", frames=(("aachen", "000000_000019"), ("bochum", "000001_000020"))):
    """Write images and labelIds PNGs; each label image holds every id 0..33 in row-major order."""
    ids = np.resize(np.arange(34, dtype=np.uint8), (10, 12))
    rng = np.random.default_rng(0)
    paths = []
    for city, frame in frames:
        for tree in ("leftImg8bit", "gtFine"):
            os.makedirs(os.path.join(root, tree, split, city), exist_ok=True)
        image = os.path.join(root, "leftImg8bit", split, city, f"{city}_{frame}_leftImg8bit.png")
        label = os.path.join(root, "gtFine", split, city, f"{city}_{frame}_gtFine_labelIds.png")
        Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(image)
        Image.fromarray(ids, mode="L").save(label)
        # Other gtFine files of the real data set must be ignored.
        Image.fromarray(ids, mode="L").save(label.replace("labelIds", "instanceIds"))
        paths.append((image, label))
    return ids, paths


def test_reads_split_and_maps_ids_to_train_ids(tmp_path):
    ids, paths = make_cityscapes(tmp_path)
    data = CityscapesSegmentation(tmp_path, "val")
    assert len(data) == 2 and data.ids == ["aachen_000000_000019", "bochum_000001_000020"]
    assert data.num_classes == 19 and data.class_names == CITYSCAPES_CLASSES and data.palette.shape == (19, 3)
    s = data[0]
    assert s["image"].shape == (10, 12, 3) and s["mask"].dtype == np.uint8
    for name, label_id, train_id in OFFICIAL:
        assert (s["mask"][ids == label_id] == train_id).all(), name
    for name, _, train_id in OFFICIAL:
        if train_id != 255:
            assert CITYSCAPES_CLASSES[train_id] == name
    assert sorted(set(s["mask"].ravel().tolist()) - {255}) == list(range(19))


def test_missing_annotation_is_named(tmp_path):
    _, paths = make_cityscapes(tmp_path)
    os.remove(paths[1][1])
    with pytest.raises(DataFormatError) as info:
        CityscapesSegmentation(tmp_path, "val")
    assert paths[1][0] in str(info.value) and paths[1][1] in str(info.value)


def test_unknown_ids_and_size_mismatch(tmp_path):
    _, paths = make_cityscapes(tmp_path)
    bad = np.full((10, 12), 7, dtype=np.uint8)
    bad[3, 3] = 40
    Image.fromarray(bad, mode="L").save(paths[0][1])
    data = CityscapesSegmentation(tmp_path, "val")
    with pytest.raises(DataFormatError, match=r"label ids \[40\] are not Cityscapes ids") as info:
        data[0]
    assert paths[0][1] in str(info.value)
    Image.fromarray(np.zeros((9, 12), dtype=np.uint8), mode="L").save(paths[1][1])
    with pytest.raises(DataFormatError, match="does not match") as info:
        data[1]
    assert paths[1][1] in str(info.value) and paths[1][0] in str(info.value)


def test_missing_split(tmp_path):
    make_cityscapes(tmp_path)
    with pytest.raises(FileNotFoundError, match="no Cityscapes split 'train'"):
        CityscapesSegmentation(tmp_path, "train")
