"""DeepLab v1/v2 ``predict(images, crf=...)``: the dense CRF post-processing of the papers, checked against an
independent softmax -> ``segcore.crf.dense_crf`` -> argmax, option precedence, argument errors, and a
hand-made case where the CRF moves a blurred boundary onto the colour edge."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

import segcore
from segcore.crf import dense_crf
from segcore.models.base import SemanticSegmentationModel

TINY = {
    "deeplabv1": {"width": 1 / 16},
    "deeplabv2": {"backbone": "resnet18", "width": 0.125},
}
PRESET = {"deeplabv1": "deeplab-largefov", "deeplabv2": "deeplab-v2-resnet"}


def build(name: str, num_classes: int = 3, seed: int = 0, **kwargs):
    return segcore.build(name, num_classes=num_classes, rng=np.random.default_rng(seed), **TINY[name], **kwargs)


def with_input_dependent_logits(model, monkeypatch):
    """Add 3 x (the first K input channels) to the network's logits.

    Tiny untrained networks give nearly constant logits, and a constant map leaves the CRF nothing to do; the
    added term gives a label map with several classes and boundaries while the network still runs.
    """
    network = model.forward
    k = model.num_classes

    def forward(x):
        x = segcore.tensor(x) if isinstance(x, np.ndarray) else x
        return network(x) + segcore.tensor(3.0 * x.numpy()[:, :k])

    monkeypatch.setattr(model, "forward", forward)
    return model


def inputs(n: int, h: int, w: int, seed: int = 1):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = np.stack([np.sin(xx / 4.0 + c) + np.cos(yy / 5.0 - c) for c in range(3)])
    images = smooth[None] + 0.3 * g.standard_normal((n, 3, h, w))
    rgb = g.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    return images.astype(np.float32), rgb


def reference_crf(model, images, rgb, **options):
    """softmax of the model's eval-mode logits, then dense_crf per image, then argmax (int64)."""
    model.eval()
    with segcore.no_grad():
        logits = model(images).numpy()
    probs = softmax(logits.astype(np.float64), axis=1).astype(np.float32)
    options = {"preset": PRESET[model_name(model)], **options}
    return [dense_crf(rgb[i], probs[i], **options).argmax(axis=0) for i in range(len(probs))]


def model_name(model) -> str:
    return {"DeepLabV1": "deeplabv1", "DeepLabV2": "deeplabv2"}[type(model).__name__]


def plain_argmax(model, images):
    return SemanticSegmentationModel.predict(model, images)


def min_max_uint8(images):
    """The documented derivation: per image, one affine map of all channels onto [0, 255]."""
    out = []
    for image in images.astype(np.float64):
        scaled = np.rint((image - image.min()) / (image.max() - image.min()) * 255)
        out.append(scaled.astype(np.uint8).transpose(1, 2, 0))
    return out


@pytest.mark.parametrize("name", ["deeplabv1", "deeplabv2"])
def test_crf_predict_equals_softmax_dense_crf_argmax(name, monkeypatch):
    model = with_input_dependent_logits(build(name), monkeypatch)
    images, rgb = inputs(2, 33, 28)
    model.train()
    labels = model.predict(images, crf=True, crf_images=rgb)
    assert model.training  # predict restores the mode it found
    expected = reference_crf(model, images, rgb)
    assert len(labels) == 2
    for got, want in zip(labels, expected):
        assert got.dtype == np.int64 and got.shape == (33, 28)
        np.testing.assert_array_equal(got, want)
    raw = plain_argmax(model, images)
    # The comparison is not vacuous: the raw map has several classes and the CRF changed it.
    assert all(len(np.unique(r)) >= 2 for r in raw)
    assert any(np.any(got != r) for got, r in zip(labels, raw))
    # ... and the preset is the paper's: the other DeepLab preset gives other labels here.
    other = next(preset for preset in PRESET.values() if preset != PRESET[name])
    assert any(np.any(got != o) for got, o in zip(labels, reference_crf(model, images, rgb, preset=other)))


@pytest.mark.parametrize("name", ["deeplabv1", "deeplabv2"])
def test_crf_options_override_the_preset(name, monkeypatch):
    images, rgb = inputs(1, 30, 26, seed=3)
    options = {"method": "exact", "iterations": 3, "bilateral_srgb": 20.0}
    model = with_input_dependent_logits(build(name, crf_options=options), monkeypatch)
    got = model.predict(images, crf=True, crf_images=rgb)[0]
    np.testing.assert_array_equal(got, reference_crf(model, images, rgb, **options)[0])
    # No mean-field iteration: the marginals are the softmax itself, so the labels are the plain argmax.
    model = with_input_dependent_logits(build(name, crf_options={"iterations": 0}), monkeypatch)
    np.testing.assert_array_equal(model.predict(images, crf=True, crf_images=rgb)[0], plain_argmax(model, images)[0])


def test_crf_images_default_to_a_joint_min_max_rescale_of_each_input(monkeypatch):
    model = with_input_dependent_logits(build("deeplabv1"), monkeypatch)
    images, _ = inputs(2, 26, 31, seed=5)
    images[1] *= 4.0  # a different range per image
    derived = min_max_uint8(images)
    assert all(d.min() == 0 and d.max() == 255 for d in derived)
    labels = model.predict(images, crf=True)
    for got, want in zip(labels, reference_crf(model, images, derived)):
        np.testing.assert_array_equal(got, want)


# -- a hand-made edge: blurred logits across a sharp two-colour boundary --------------------------------------------
H, W, EDGE = 24, 32, 16


def edge_case(name, monkeypatch, **kwargs):
    """A model whose logits are a soft ramp centred 3 pixels right of a red|blue edge at column EDGE."""
    model = build(name, num_classes=2, **kwargs)
    ramp = (np.arange(W) - (EDGE + 2.5)) / 2.0  # class 1 wins from column 19: columns 16..18 are wrong

    def forward(x):
        logits = np.stack([-ramp, ramp])[None, :, None, :] * np.ones((x.shape[0], 2, x.shape[2], 1))
        return segcore.tensor(logits.astype(np.float32))

    monkeypatch.setattr(model, "forward", forward)
    rgb = np.zeros((1, H, W, 3), dtype=np.uint8)
    rgb[..., :EDGE, :] = (200, 30, 30)
    rgb[..., EDGE:, :] = (30, 30, 200)
    images = ((rgb.astype(np.float32) / 255 - 0.45) / 0.25).transpose(0, 3, 1, 2)  # "normalised" input
    truth = np.tile((np.arange(W) >= EDGE).astype(np.int64), (H, 1))
    return model, images, rgb, truth


@pytest.mark.parametrize("name", ["deeplabv1", "deeplabv2"])
def test_crf_moves_a_blurred_boundary_onto_the_colour_edge(name, monkeypatch):
    model, images, rgb, truth = edge_case(name, monkeypatch)
    raw = model.predict(images)[0]
    assert (raw != truth).sum() == 3 * H
    np.testing.assert_array_equal(model.predict(images, crf=True, crf_images=rgb)[0], truth)
    # The colours derived from the normalised input have the same edge.
    np.testing.assert_array_equal(model.predict(images, crf=True)[0], truth)
    # The CRF follows crf_images, not the input: with the edge two columns further right there, so are the labels.
    shifted = rgb.copy()
    shifted[..., EDGE : EDGE + 2, :] = rgb[..., :1, :]
    moved = model.predict(images, crf=True, crf_images=shifted)[0]
    np.testing.assert_array_equal(moved, np.tile((np.arange(W) >= EDGE + 2).astype(np.int64), (H, 1)))


@pytest.mark.parametrize("name", ["deeplabv1", "deeplabv2"])
def test_predict_argument_overrides_the_build_option(name, monkeypatch):
    for build_crf in (False, True):
        model, images, rgb, truth = edge_case(name, monkeypatch, crf=build_crf)
        assert model.crf is build_crf
        raw = plain_argmax(model, images)[0]
        assert (raw != truth).any()
        default = model.predict(images, crf_images=rgb)[0]
        np.testing.assert_array_equal(default, truth if build_crf else raw)
        np.testing.assert_array_equal(model.predict(images, crf=None, crf_images=rgb)[0], default)
        np.testing.assert_array_equal(model.predict(images, crf=True, crf_images=rgb)[0], truth)
        np.testing.assert_array_equal(model.predict(images, crf=False, crf_images=rgb)[0], raw)


def test_default_predict_is_the_plain_argmax():
    model = build("deeplabv2")
    images, _ = inputs(2, 29, 34)
    for got, want in zip(model.predict(images), plain_argmax(model, images)):
        np.testing.assert_array_equal(got, want)


# -- errors -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("crf_images", "error", "match"),
    [
        (np.zeros((2, 20, 24, 3), dtype=np.float32), TypeError, r"crf_images\[0\] must be uint8"),
        (np.zeros((2, 3, 20, 24), dtype=np.uint8), ValueError, r"crf_images\[0\] must have shape .*\(20, 24, 3\)"),
        (np.zeros((20, 24, 3), dtype=np.uint8), ValueError, r"crf_images must be an \(N, H, W, 3\)"),
        (np.zeros((3, 20, 24, 3), dtype=np.uint8), ValueError, "crf_images holds 3 images but images holds 2"),
        ([np.zeros((20, 24, 3), np.uint8), np.zeros((20, 23, 3), np.uint8)], ValueError, r"crf_images\[1\]"),
        ([np.zeros((20, 24, 3), np.uint8), "image"], TypeError, r"crf_images\[1\] must be a NumPy"),
        ("images.png", TypeError, "crf_images must be"),
    ],
)
@pytest.mark.parametrize("crf", [True, False])
def test_bad_crf_images_are_named(crf_images, error, match, crf):
    model = build("deeplabv1")
    images, _ = inputs(2, 20, 24)
    with pytest.raises(error, match=match):
        model.predict(images, crf=crf, crf_images=crf_images)


def test_bad_crf_arguments_are_named():
    model = build("deeplabv1")
    images, _ = inputs(1, 20, 24)
    with pytest.raises(TypeError, match="predict: crf must be True, False or None"):
        model.predict(images, crf="yes")
    with pytest.raises(ValueError, match="needs crf_images for 4-channel images"):
        model.predict(np.zeros((1, 4, 20, 24), np.float32), crf=True)


@pytest.mark.parametrize("name", ["deeplabv1", "deeplabv2"])
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"crf": 1}, TypeError, "crf must be a bool"),
        ({"crf_options": "exact"}, TypeError, "crf_options must be a dict"),
        ({"crf_options": {"iteration": 3}}, ValueError, "crf_options has unknown key 'iteration'. Did you mean"),
        ({"crf_options": {"image": None}}, ValueError, "crf_options has unknown key 'image'"),
        ({"crf_options": {"preset": "deeplab-v3"}}, ValueError, r"crf_options\['preset'\] must be one of"),
    ],
)
def test_bad_crf_build_options_are_named(name, kwargs, error, match):
    with pytest.raises(error, match=f"{name}: {match}"):
        segcore.build(name, num_classes=3, **TINY[name], **kwargs)
