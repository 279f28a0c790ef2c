"""COCO instances reader: polygons, uncompressed and compressed RLE, iscrowd, sparse category ids, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from segcore.data import COCOInstances, DataFormatError
from segcore.metrics import mask_rle

H, W = 20, 30


def _uncompressed(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE written out independently of segcore (column-major runs, zeros first)."""
    flat = mask.T.ravel().astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": [mask.shape[0], mask.shape[1]], "counts": counts}


def _masks():
    crowd = np.zeros((H, W), dtype=bool)
    crowd[10:18, 2:9] = True
    small = np.zeros((H, W), dtype=bool)
    small[5:9, 14:19] = True  # inside the polygon: painted over it in the semantic mask
    return crowd, small


def make_coco(root, *, mutate=None) -> tuple[str, str]:
    """Two images (one without annotations) and three annotations; ``mutate(data)`` edits the JSON first."""
    image_dir = os.path.join(root, "images")
    os.makedirs(image_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(os.path.join(image_dir, "a.png"))
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(os.path.join(image_dir, "b.png"))
    crowd, small = _masks()
    data = {
        "images": [
            {"id": 42, "file_name": "a.png", "height": H, "width": W},
            {"id": 7, "file_name": "b.png", "height": 12, "width": 16},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
        "annotations": [
            {
                "id": 1, "image_id": 42, "category_id": 18, "iscrowd": 0, "bbox": [12.0, 2.0, 14.0, 10.0],
                "segmentation": [[12.0, 2.0, 26.0, 2.0, 26.0, 12.0, 12.0, 12.0]],
            },
            {"id": 2, "image_id": 42, "category_id": 3, "iscrowd": 1, "segmentation": _uncompressed(crowd)},
            {"id": 3, "image_id": 42, "category_id": 3, "iscrowd": 0, "segmentation": mask_rle.encode(small)},
        ],
    }  # fmt: skip
    if mutate is not None:
        mutate(data)
    path = os.path.join(root, "instances.json")
    with open(path, "w") as handle:
        json.dump(data, handle)
    return image_dir, path


def test_reads_instances_labels_and_semantic_mask(tmp_path):
    image_dir, path = make_coco(tmp_path)
    data = COCOInstances(image_dir, path)
    assert len(data) == 2
    # Sparse category ids sorted and made contiguous: car (3) -> 1, dog (18) -> 2.
    assert data.class_names == ("background", "car", "dog") and data.category_ids == (3, 18)
    s = data[1]  # image ids are sorted: 7, 42
    assert s["image_id"] == 42 and s["id"] == "a"
    assert s["labels"].tolist() == [2, 1, 1] and s["iscrowd"].tolist() == [False, True, False]
    crowd, small = _masks()
    polygon = np.zeros((H, W), dtype=bool)
    polygon[2:12, 12:26] = True  # an axis-aligned square polygon covers exactly these pixels
    assert np.array_equal(s["masks"][0], polygon)
    assert np.array_equal(s["masks"][1], crowd)  # uncompressed RLE
    assert np.array_equal(s["masks"][2], small)  # compressed RLE
    expected = np.zeros((H, W), dtype=np.uint8)
    expected[polygon] = 2
    expected[small] = 1  # smaller instance on top
    expected[crowd] = 255  # crowd regions are ignored
    assert np.array_equal(s["mask"], expected)
    # bbox given: xywh -> xyxy; bbox absent: the mask's tight box.
    assert s["boxes"][0].tolist() == [12.0, 2.0, 26.0, 12.0]
    assert s["boxes"][2].tolist() == [14.0, 5.0, 19.0, 9.0]
    empty = data[0]
    assert empty["masks"].shape == (0, 12, 16) and empty["boxes"].shape == (0, 4) and not empty["mask"].any()


def test_polygons_agree_with_pycocotools(tmp_path):
    coco_mask = pytest.importorskip("pycocotools.mask")
    triangle = [3.2, 1.5, 27.7, 6.1, 9.4, 18.8]

    def mutate(data):
        data["annotations"][0]["segmentation"] = [triangle]

    image_dir, path = make_coco(tmp_path, mutate=mutate)
    ours = COCOInstances(image_dir, path)[1]["masks"][0]
    reference = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([triangle], H, W))).astype(bool)
    assert np.array_equal(ours, reference)


def test_skip_empty(tmp_path):
    image_dir, path = make_coco(tmp_path)
    assert COCOInstances(image_dir, path, skip_empty=True).image_ids == [42]


def _expect_error(tmp_path, mutate, *fragments, index=None):
    image_dir, path = make_coco(tmp_path, mutate=mutate)
    with pytest.raises(DataFormatError) as info:
        data = COCOInstances(image_dir, path)
        data[index]
    assert path in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_missing_top_level_key(tmp_path):
    _expect_error(tmp_path, lambda d: d.pop("annotations"), "the top level is missing the key(s) ['annotations']")


def test_annotation_missing_key(tmp_path):
    drop = lambda d: d["annotations"][1].pop("segmentation")  # noqa: E731
    _expect_error(tmp_path, drop, "annotations[1] is missing", "segmentation")


def test_polygon_with_fewer_than_three_points(tmp_path):
    def mutate(data):
        data["annotations"][0]["segmentation"] = [[1.0, 1.0, 5.0, 5.0]]

    _expect_error(tmp_path, mutate, "annotations[0] (image id 42)", "at least 3", index=1)


def test_rle_of_another_size(tmp_path):
    def mutate(data):
        data["annotations"][2]["segmentation"] = mask_rle.encode(np.zeros((H + 1, W), dtype=bool))

    _expect_error(tmp_path, mutate, "annotations[2]", "expected the image size", index=1)


def test_image_size_mismatch(tmp_path):
    def mutate(data):
        data["images"][0]["width"] = W + 2

    image_dir, path = make_coco(tmp_path, mutate=mutate)
    with pytest.raises(DataFormatError) as info:
        COCOInstances(image_dir, path)[1]
    message = str(info.value)
    assert os.path.join(image_dir, "a.png") in message and path in message and "does not match" in message


def test_unknown_category_and_image(tmp_path):
    _expect_error(tmp_path, lambda d: d["annotations"][0].update(category_id=99), "category_id 99")
    _expect_error(tmp_path, lambda d: d["annotations"][0].update(image_id=5), "image id 5")


def test_bad_bbox(tmp_path):
    _expect_error(tmp_path, lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), "['bbox']", index=1)


def test_invalid_json_and_missing_files(tmp_path):
    image_dir, path = make_coco(tmp_path)
    with open(path, "w") as handle:
        handle.write('{"images": [')
    with pytest.raises(DataFormatError, match="not valid JSON"):
        COCOInstances(image_dir, path)
    with pytest.raises(DataFormatError, match="annotation file not found"):
        COCOInstances(image_dir, os.path.join(tmp_path, "missing.json"))
    image_dir, path = make_coco(tmp_path)
    os.remove(os.path.join(image_dir, "a.png"))
    with pytest.raises(DataFormatError, match="a.png: file not found"):
        COCOInstances(image_dir, path)[1]
