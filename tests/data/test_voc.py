"""Pascal VOC reader on a small tree the tests write with Pillow, including malformed files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from segcore.data import DataFormatError, VOCSegmentation
from segcore.viz import colormap


def _write_mask(path, labels: np.ndarray, mode: str = "P") -> None:
    picture = Image.fromarray(labels.astype(np.uint8), mode="P" if mode == "P" else "L")
    if mode == "P":
        picture.putpalette(colormap(256).reshape(-1).tolist())
    elif mode == "RGB":
        picture = picture.convert("RGB")
    picture.save(path)


def make_voc(root, samples: dict[str, tuple[np.ndarray, np.ndarray]], splits: dict[str, list[str]]) -> str:
    """Write a VOCdevkit/VOC2012 tree; returns the VOC2012 directory."""
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    for sub in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    for name, (image, mask) in samples.items():
        Image.fromarray(image).save(os.path.join(voc, "JPEGImages", f"{name}.jpg"), quality=95)
        _write_mask(os.path.join(voc, "SegmentationClass", f"{name}.png"), mask)
    for split, names in splits.items():
        with open(os.path.join(voc, "ImageSets", "Segmentation", f"{split}.txt"), "w") as handle:
            handle.write("\n".join(names) + "\n\n")
    return voc


def _sample(rng, h=24, w=32):
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:, : w // 2] = (200, 40, 40)
    image[:, w // 2 :] = (40, 40, 200)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[:, w // 2 :] = rng.integers(1, 21)
    mask[:, w // 2 - 1] = 255  # a VOC-style boundary line
    return image, mask


@pytest.fixture
def voc_tree(tmp_path):
    rng = np.random.default_rng(0)
    samples = {"2007_000001": _sample(rng), "2007_000002": _sample(rng, 20, 20), "2008_000003": _sample(rng)}
    voc = make_voc(tmp_path, samples, {"train": ["2007_000001", "2008_000003"], "val": ["2007_000002"]})
    return tmp_path, voc, samples


def test_reads_split_images_and_palette_masks(voc_tree):
    root, voc, samples = voc_tree
    data = VOCSegmentation(voc, "train")
    assert len(data) == 2 and data.ids == ["2007_000001", "2008_000003"]
    assert data.num_classes == 21 and data.class_names[15] == "person" and data.ignore_index == 255
    s = data[1]
    image, mask = samples["2008_000003"]
    assert s["id"] == "2008_000003"
    assert s["image"].shape == image.shape and s["image"].dtype == np.uint8
    # JPEG is lossy, most of all at colour edges: compare away from the edge in the middle.
    for columns in (slice(0, 12), slice(20, 32)):
        assert np.abs(s["image"][:, columns].astype(int) - image[:, columns]).max() < 30
    assert np.array_equal(s["mask"], mask)  # palette indices, 255 boundaries kept
    assert data.palette.shape == (21, 3) and data.palette[1].tolist() == [128, 0, 0]


def test_root_may_be_the_devkit_parent(voc_tree):
    root, voc, _ = voc_tree
    assert len(VOCSegmentation(root, "val")) == 1
    with pytest.raises(FileNotFoundError, match="no Pascal VOC tree"):
        VOCSegmentation(os.path.join(voc, "JPEGImages"), "val")


def test_missing_split_file_and_listed_files(voc_tree):
    root, voc, _ = voc_tree
    with pytest.raises(DataFormatError, match="test.txt: split file not found"):
        VOCSegmentation(voc, "test")
    os.remove(os.path.join(voc, "SegmentationClass", "2007_000002.png"))
    with pytest.raises(DataFormatError) as info:
        VOCSegmentation(voc, "val")
    message = str(info.value)
    assert "val.txt" in message and "2007_000002.png" in message and "do not exist" in message


def test_truncated_png_names_the_file(voc_tree):
    root, voc, _ = voc_tree
    path = os.path.join(voc, "SegmentationClass", "2007_000001.png")
    payload = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(payload[: len(payload) // 2])
    data = VOCSegmentation(voc, "train")
    with pytest.raises(DataFormatError) as info:
        data[0]
    assert path in str(info.value) and "cannot decode" in str(info.value)
    assert data[1]["mask"].shape == (24, 32)  # the other samples still load


def test_mask_image_size_mismatch(voc_tree):
    root, voc, _ = voc_tree
    path = os.path.join(voc, "SegmentationClass", "2008_000003.png")
    _write_mask(path, np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(DataFormatError) as info:
        VOCSegmentation(voc, "train")[1]
    message = str(info.value)
    assert path in message and "2008_000003.jpg" in message and "does not match" in message


def test_labels_out_of_range_and_colour_masks_are_refused(voc_tree):
    root, voc, _ = voc_tree
    path = os.path.join(voc, "SegmentationClass", "2007_000001.png")
    bad = np.zeros((24, 32), dtype=np.uint8)
    bad[0, 0] = 30
    _write_mask(path, bad)
    with pytest.raises(DataFormatError, match=r"label\(s\) \[30\]"):
        VOCSegmentation(voc, "train")[0]
    _write_mask(path, bad, mode="RGB")
    with pytest.raises(DataFormatError, match="mode 'RGB'"):
        VOCSegmentation(voc, "train")[0]


def test_bad_arguments(voc_tree, tmp_path):
    root, voc, _ = voc_tree
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        VOCSegmentation(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split must be a non-empty str"):
        VOCSegmentation(voc, "")
    with pytest.raises(TypeError, match="VOC root must be a str"):
        VOCSegmentation(3)
