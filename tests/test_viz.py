"""segcore.viz: colour maps, overlays, instances, legends, layout, atomic PNG files, training curves."""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest
from PIL import Image

from segcore import viz
from segcore.io import atomic_write
from segcore.data import transforms as T
from segcore.train import EpochRecord, History


def _image(h=20, w=30, value=100):
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_colormap_is_the_voc_colour_map():
    colours = viz.colormap(256)
    assert colours.shape == (256, 3) and colours.dtype == np.uint8
    # Published VOC colours: background, aeroplane, bicycle, bird, person (15), and the 255 "void" index.
    assert colours[0].tolist() == [0, 0, 0] and colours[1].tolist() == [128, 0, 0]
    assert colours[2].tolist() == [0, 128, 0] and colours[3].tolist() == [128, 128, 0]
    assert colours[15].tolist() == [192, 128, 128] and colours[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in colours}) == 256


def test_colorize_and_overlay():
    labels = np.zeros((20, 30), dtype=np.int64)
    labels[5:10, 5:10] = 2
    labels[0, 0] = 255
    colour = viz.colorize(labels)
    assert colour[6, 6].tolist() == [0, 128, 0] and colour[0, 0].tolist() == list(viz.IGNORE_COLOUR)
    image = _image()
    out = viz.overlay(image, labels, alpha=0.5)
    assert np.array_equal(out[labels == 0], image[labels == 0])  # background left as is
    assert out[0, 0].tolist() == [100, 100, 100]  # ignored pixels too
    assert out[6, 6].tolist() == [50, 114, 50]  # (100 + [0, 128, 0]) / 2, rounded half to even
    custom = viz.overlay(image, labels, palette=[[0, 0, 0], [0, 0, 0], [200, 0, 0]], alpha=1.0)
    assert custom[6, 6].tolist() == [200, 0, 0]
    assert np.array_equal(viz.overlay(image, labels, alpha=0.0), image)


def test_draw_instances_marks_masks_boxes_and_captions():
    image = _image(40, 60, 20)
    masks = np.zeros((2, 40, 60), dtype=bool)
    masks[0, 20:30, 10:20] = True
    masks[1, 22:35, 40:55] = True
    boxes = np.array([[10, 20, 20, 30], [40, 22, 55, 35]], dtype=np.float32)
    out = viz.draw_instances(image, masks, boxes, [1, 2], [0.9, 0.75], class_names=["bg", "cat", "dog"])
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[masks[0]] != 20).any(axis=-1).all() and (out[masks[1]] != 20).any(axis=-1).all()
    assert not np.array_equal(out[25, 10], out[25, 40])  # the two instances have different colours
    assert (out[5:20, 10:40] != 20).any()  # the caption above the first box
    assert (out[0:3] == 20).all()  # far from everything nothing changed
    with pytest.raises(ValueError, match="must describe the same instances"):
        viz.draw_instances(image, masks, boxes[:1])
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        viz.draw_instances(image.astype(np.float32), masks)


def test_legend_rows_and_swatches():
    small = viz.legend(["background", "circle"])
    colours = [[0, 0, 0], [255, 0, 0], [0, 0, 255], [9, 9, 9]]
    large = viz.legend(["background", "circle", "rectangle", "triangle"], colours)
    assert large.shape[0] > small.shape[0] and large.dtype == np.uint8
    flat = large.reshape(-1, 3).tolist()
    assert [255, 0, 0] in flat and [0, 0, 255] in flat
    with pytest.raises(ValueError, match="class_names must be a non-empty sequence"):
        viz.legend("circle")


def test_side_by_side_and_stack():
    a, b = _image(10, 12, 0), _image(8, 5, 50)
    row = viz.side_by_side([a, b], ["x", "y"], pad=2, scale=2)
    assert row.shape[1] == 2 * 12 + 2 * 5 + 3 * 2 and row.shape[0] >= 20
    assert [0, 0, 0] in row.reshape(-1, 3).tolist() and [50, 50, 50] in row.reshape(-1, 3).tolist()
    grid = viz.stack([row, a], pad=3)
    assert grid.shape == (row.shape[0] + 3 + 10, row.shape[1], 3)
    with pytest.raises(ValueError, match="one entry per panel"):
        viz.side_by_side([a, b], ["x"])


def test_denormalize_inverts_normalize():
    image = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    normalised = T.Normalize()({"image": image}, np.random.default_rng(0))["image"]
    assert np.array_equal(viz.denormalize(normalised, T.IMAGENET_MEAN, T.IMAGENET_STD), image)


def test_save_png_label_maps_and_images(tmp_path):
    labels = np.random.default_rng(1).integers(0, 21, (9, 11))
    labels[0, 0] = 255
    path = tmp_path / "labels.png"
    viz.save_png(path, labels)
    with Image.open(path) as picture:
        assert picture.mode == "P"
        assert np.array_equal(np.asarray(picture), labels)
        palette = np.asarray(picture.getpalette()).reshape(-1, 3)
        assert palette[1].tolist() == [128, 0, 0] and palette[255].tolist() == list(viz.IGNORE_COLOUR)
    rgb = np.random.default_rng(2).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    viz.save_png(tmp_path / "rgb.png", rgb)
    with Image.open(tmp_path / "rgb.png") as picture:
        assert picture.mode == "RGB" and np.array_equal(np.asarray(picture), rgb)
    with pytest.raises(ValueError, match="labels <= 255"):
        viz.save_png(tmp_path / "big.png", np.full((2, 2), 300))


def test_save_png_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    viz.save_png(path, _image())
    before = path.read_bytes()

    def failing(handle):
        handle.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not the private mode of a temporary file
    with pytest.raises(FileNotFoundError, match="does not exist"):
        viz.save_png(tmp_path / "missing" / "x.png", _image())


def _history():
    return History(
        EpochRecord(epoch=e, loss=1.0 / e, lr=0.01, seconds=1.0, images_per_second=10.0, val={"miou": 0.2 * e})
        for e in range(1, 5)
    )


def test_plot_history_without_matplotlib(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    viz.plot_history(_history(), tmp_path / "curves.png")
    with Image.open(tmp_path / "curves.png") as picture:
        chart = np.asarray(picture.convert("RGB"))
    assert chart.shape[1] > 600  # two panels: loss and validation
    assert len({tuple(c) for c in chart.reshape(-1, 3).tolist()}) > 3  # lines and text, not a blank page
    with pytest.raises(ImportError, match="pip install matplotlib"):
        viz.plot_history(_history(), tmp_path / "mpl.png", use_matplotlib=True)
    with pytest.raises(ValueError, match="no finite loss"):
        viz.plot_history([], tmp_path / "empty.png")


def test_plot_history_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    viz.plot_history(_history().to_list(), tmp_path / "curves.png", use_matplotlib=True)
    with Image.open(tmp_path / "curves.png") as picture:
        assert picture.size[0] > 400
