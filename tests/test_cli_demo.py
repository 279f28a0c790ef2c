"""`segcore demo`, `train`, `evaluate` and `predict` end to end on tiny settings, checking the files they write."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

import segcore
from segcore.cli import main
from segcore.data import shapes
from segcore.data import transforms as T

TINY = ["--train-images", "16", "--val-images", "8", "--batch-size", "4", "--no-progress"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _miou(text: str) -> float:
    return float(re.search(r"^mIoU (\d\.\d+)$", text, re.M).group(1))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny demo run shared by the tests that read its files: exit status, output directory, stdout."""
    out = tmp_path_factory.mktemp("demo") / "segcore-demo"
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = main(["demo", "--epochs", "1", "--size", "32", "--out", str(out), "--target", "0", *TINY])
    return code, out, text.getvalue()


def test_demo_trains_reports_and_writes_its_files(tmp_path, capsys):
    out = tmp_path / "segcore-demo"
    code, stdout, _ = run(capsys, "demo", "--epochs", "1", "--size", "32", "--out", out, "--target", "0", *TINY)
    assert code == 0, stdout
    assert stdout.startswith("segcore demo: unet (")
    assert re.search(r"^epoch 1/1  loss \d+\.\d+  lr \S+  mIoU \d\.\d+  pixel_accuracy", stdout, re.M)
    for name in ("background", "circle", "rectangle", "triangle"):
        assert re.search(rf"^{name} +(\d\.\d+|-)$", stdout, re.M), name
    miou = _miou(stdout)
    assert f"PASS: held-out mIoU {miou:.4f} >= target 0.00" in stdout
    assert sorted(os.listdir(out)) == ["checkpoint", "curves.png", "model.safetensors", "overlay.png"]
    assert sorted(os.listdir(out / "checkpoint")) == ["checkpoint.safetensors", "history.json", "model.safetensors"]
    with Image.open(out / "overlay.png") as overlay:
        # Six rows of input | ground truth | prediction at 4x (32 -> 128 pixels), plus the legend.
        assert overlay.mode == "RGB" and overlay.size[0] >= 3 * 128 and overlay.size[1] >= 6 * 128
    with safe_open(out / "model.safetensors", framework="np") as handle:
        config = json.loads(handle.metadata()["segcore.model"])
    assert config["model"] == "unet" and config["num_classes"] == 4 and config["model_args"]["depth"] == 3
    model = segcore.build("unet", num_classes=4, **config["model_args"])
    model.load(out / "model.safetensors")


def test_demo_below_target_fails(tmp_path, capsys):
    code, stdout, _ = run(capsys, "demo", "--epochs", "1", "--size", "16", "--out", tmp_path, "--target", "1", *TINY)
    assert code == 1 and "FAIL: held-out mIoU" in stdout and "< target 1.00" in stdout


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["demo", "--target", "1.5"], "--target must be an mIoU in [0, 1], got 1.5"),
        (["demo", "--epochs", "0"], "--epochs must be at least 1"),
        (["demo", "--model", "unetz"], "unetz"),
        (["train", "--model", "unet", "--data", "pascal:/x"], "--data must be shapes, voc:PATH"),
        (["predict", "--weights", "/nonexistent.safetensors", "a.png", "--out", "x"], "no file '/nonexistent"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, argv, fragment):
    code, stdout, stderr = run(capsys, *argv)
    assert code == 1 and stderr.startswith("segcore: error: ") and fragment in stderr


def test_evaluate_reproduces_the_demo_score(demo_run, capsys):
    code, out, demo_text = demo_run
    assert code == 0
    argv = ["evaluate", "--weights", out / "model.safetensors", "--data", "shapes", "--size", "32"]
    code, stdout, _ = run(capsys, *argv, "--val-images", "8", "--json", out / "scores.json")
    assert code == 0
    # The same held-out images (seed 0) give the same mIoU as the demo reported.
    assert _miou(stdout) == _miou(demo_text)
    scores = json.load(open(out / "scores.json"))
    assert scores["miou"] == pytest.approx(_miou(stdout), abs=5e-5) and set(scores["iou"]) >= {"circle", "triangle"}


def test_predict_writes_label_pngs_and_overlays(demo_run, tmp_path, capsys):
    _, out, _ = demo_run
    sample = shapes(1, (37, 45), rng=9)[0]  # an odd size: padded for the model, cropped back
    Image.fromarray(sample["image"]).save(tmp_path / "odd.png")
    square = shapes(1, 32, rng=4)[0]["image"]
    Image.fromarray(square).save(tmp_path / "square.jpg", quality=100)
    code, stdout, _ = run(
        capsys, "predict", "--weights", out / "model.safetensors", tmp_path / "odd.png", tmp_path / "square.jpg",
        "--out", tmp_path / "pred",
    )  # fmt: skip
    assert code == 0 and stdout.count("wrote") == 2
    assert sorted(os.listdir(tmp_path / "pred")) == ["odd.png", "odd_overlay.png", "square.png", "square_overlay.png"]
    with Image.open(tmp_path / "pred" / "odd.png") as labels:
        assert labels.mode == "P" and labels.size == (45, 37)
        assert np.asarray(labels).max() < 4
    with Image.open(tmp_path / "pred" / "odd_overlay.png") as overlay:
        assert overlay.size[0] > 45 and overlay.size[1] >= 37
    # The label PNG is what the model predicts for the normalised image.
    model = segcore.build("unet", num_classes=4, width=0.125, depth=3, batch_norm=True, dropout=0.0)
    model.load(out / "model.safetensors")
    jpeg = np.asarray(Image.open(tmp_path / "square.jpg").convert("RGB"))
    expected = model.predict(T.Normalize()({"image": jpeg}, np.random.default_rng(0))["image"][None])[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pred" / "square.png")), expected)


def test_train_resume_and_voc_data(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["train", "--model", "unet", "--model-arg", "width=0.0625", "--model-arg", "depth=2", "--size", "16",
              "--out", out, *TINY]  # fmt: skip
    code, stdout, _ = run(capsys, *common, "--data", "shapes", "--epochs", "1")
    assert code == 0 and "epoch 1/1" in stdout and "per-class IoU" in stdout
    code, stdout, _ = run(capsys, *common, "--data", "shapes", "--epochs", "2", "--resume")
    assert code == 0 and "resumed from" in stdout and "epoch 2/2" in stdout and "epoch 1/2" not in stdout
    assert [e["epoch"] for e in json.load(open(out / "checkpoint" / "history.json"))] == [1, 2]
    assert {"model.safetensors", "curves.png", "checkpoint"} <= set(os.listdir(out))

    # Pascal VOC: real-image pipeline (scale, crop, pad-to-multiple evaluation) on a two-image tree.
    voc = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(voc / sub)
    rng = np.random.default_rng(0)
    for name, size in (("a", (30, 40)), ("b", (26, 21))):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        mask = Image.fromarray(rng.integers(0, 21, size).astype(np.uint8), mode="P")
        mask.putpalette(segcore.viz.colormap(256).reshape(-1).tolist())
        mask.save(voc / "SegmentationClass" / f"{name}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text("a\nb\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("b\n")
    code, stdout, stderr = run(
        capsys, "train", "--model", "unet", "--model-arg", "width=0.0625", "--model-arg", "depth=2",
        "--data", f"voc:{voc}", "--crop-size", "16", "--batch-size", "2", "--epochs", "1", "--out", tmp_path / "voc",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, stderr
    assert "on 2 images of 21 classes, validating on 1" in stdout and re.search(r"^aeroplane +", stdout, re.M)
    with safe_open(tmp_path / "voc" / "model.safetensors", framework="np") as handle:
        config = json.loads(handle.metadata()["segcore.model"])
    assert config["class_names"][15] == "person" and config["palette"][1] == [128, 0, 0]


def test_blas_threads_are_limited_while_training():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from segcore.cli import _blas_threads

    blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    if not blas:
        pytest.skip("NumPy's BLAS is not visible to threadpoolctl")
    before = [i["num_threads"] for i in blas]
    with _blas_threads(1):
        assert all(i["num_threads"] == 1 for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
    assert [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"] == before
    with pytest.raises(ValueError, match="--blas-threads must be at least 1, got 0"):
        with _blas_threads(0):
            pass
