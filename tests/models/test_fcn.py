"""FCN-32s/16s/8s: Caffe geometry (crop offsets derived independently), any input size, bilinear learnable
upsampling, skip fusion and scaling, paper parameter counts by hand, training contract at tiny width."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import segcore
from segcore import registry
from segcore.models import fcn
from segcore.nn import ConvTranspose2d, Dropout
from segcore.optim import SGD
from segcore.testing import assert_is_semantic_segmentation_model

NAMES = ("fcn32s", "fcn16s", "fcn8s")
TINY = dict(width=1 / 16, zero_init_scores=False)


def build(name: str, seed: int = 0, **kwargs):
    kwargs = {"num_classes": 3, **TINY, **kwargs}
    return registry.build(name, rng=np.random.default_rng(seed), **kwargs)


def batch(n: int, h: int, w: int, k: int = 3, seed: int = 1):
    g = np.random.default_rng(seed)
    labels = g.integers(0, k, size=(n, h, w))
    labels[g.random((n, h, w)) < 0.1] = 255
    return g.standard_normal((n, 3, h, w)).astype(np.float32), labels.astype(np.int64)


def reseed_dropout(model, seed: int = 7) -> None:
    # Same masks for both evaluations, so the loss difference is the SGD step's alone.
    for m in model.modules():
        if isinstance(m, Dropout):
            m.rng = np.random.default_rng(seed)


def total_loss(model, x, y):
    reseed_dropout(model)
    terms = model.losses(x, y)
    loss = None
    for value in terms.values():
        loss = value if loss is None else loss + value
    return loss


# -- geometry ---------------------------------------------------------------------------------------------

# (kernel, stride, padding) of the reference net up to fc7, from the paper / voc-fcn32s prototxt.
VGG_LAYERS = (
    [(3, 1, 100), (3, 1, 1), (2, 2, 0)]
    + [(3, 1, 1)] * 2 + [(2, 2, 0)]
    + [(3, 1, 1)] * 3 + [(2, 2, 0)]
    + [(3, 1, 1)] * 3 + [(2, 2, 0)]
    + [(3, 1, 1)] * 3 + [(2, 2, 0)]
    + [(7, 1, 0), (1, 1, 0)]
)  # fmt: skip


def coordinate_map(layers):
    """(a, b) with ``image coordinate = a * index + b`` of each layer's outputs (centre of the receptive field)."""
    a, b = Fraction(1), Fraction(0)
    maps = []
    for k, s, p in layers:
        # output i covers inputs s*i - p .. s*i - p + k - 1, centred at s*i - p + (k - 1) / 2.
        a, b = a * s, b + a * (Fraction(k - 1, 2) - p)
        maps.append((a, b))
    return maps


def upsampled(coords, k: int, s: int):
    """Transposed conv (kernel k, stride s, no padding): output j sits at input index (j - (k - 1) / 2) / s."""
    a, b = coords
    return a / s, b - a * Fraction(k - 1, 2) / s


def test_crop_offsets_follow_from_the_layer_geometry():
    maps = coordinate_map(VGG_LAYERS)
    pool3, pool4, fc7 = maps[9], maps[13], maps[-1]
    assert (pool3[0], pool4[0], fc7[0]) == (8, 16, 32)
    # Final upsamplings must land on the pixel grid (coefficient 1); the crop is where coordinate 0 is.
    up32 = upsampled(fc7, 64, 32)
    assert up32[0] == 1 and -up32[1] == fcn.CROP_FINAL[32] == 19
    up2 = upsampled(fc7, 4, 2)
    assert up2[0] == pool4[0] and (up2[1] - pool4[1]) / pool4[0] == fcn.CROP_POOL4 == 5
    up16 = upsampled(up2, 32, 16)
    assert up16[0] == 1 and -up16[1] == fcn.CROP_FINAL[16] == 27
    up4 = upsampled(up2, 4, 2)
    assert up4[0] == pool3[0] and (up4[1] - pool3[1]) / pool3[0] == fcn.CROP_POOL3 == 9
    up8 = upsampled(up4, 16, 8)
    assert up8[0] == 1 and -up8[1] == fcn.CROP_FINAL[8] == 31


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(1, 1), (32, 32), (33, 47), (64, 31)])
def test_output_has_input_size_for_any_size(name, size):
    model = build(name)
    model.eval()
    x, _ = batch(2, *size)
    assert model(x).shape == (2, 3, *size)


@pytest.mark.parametrize("name", NAMES)
def test_sgd_step_lowers_loss_and_every_parameter_gets_gradient(name):
    model = build(name)
    x, y = batch(2, 32, 35)
    loss = total_loss(model, x, y)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert np.any(p.grad.numpy() != 0), f"{pname} got an all-zero gradient"
    SGD(model.parameters(), lr=0.1).step()
    assert total_loss(model, x, y).item() < loss.item()


@pytest.mark.parametrize("name", NAMES)
def test_contract_and_predict(name):
    model = build(name)
    assert_is_semantic_segmentation_model(model, num_classes=3, input_size=(2, 3, 33, 32))
    x, _ = batch(3, 31, 34)
    labels = model.predict(x)
    assert len(labels) == 3
    assert all(a.shape == (31, 34) and a.dtype.kind == "i" for a in labels)


def test_upsampling_layers_are_bilinear_learnable_and_biasless():
    model = build("fcn8s")
    expected = {"upscore2": (4, 2), "upscore_pool4": (4, 2), "upscore8": (16, 8)}
    ups = {n: m for n, m in model.named_modules() if isinstance(m, ConvTranspose2d)}
    assert {n: (m.kernel_size[0], m.stride[0]) for n, m in ups.items()} == expected
    assert build("fcn32s").upscore.kernel_size == (64, 64) and build("fcn32s").upscore.stride == (32, 32)
    assert build("fcn16s").upscore16.kernel_size == (32, 32) and build("fcn16s").upscore16.stride == (16, 16)
    for layer in ups.values():
        assert layer.bias is None and layer.weight.requires_grad
        w = layer.weight.numpy()
        k = w.shape[-1]
        f = math.ceil(k / 2)
        c = (2 * f - 1 - f % 2) / (2 * f)  # FCN's upsample_filt: center of the bilinear tent
        tent = 1 - np.abs(np.arange(k) / f - c)
        for i in range(3):
            for j in range(3):
                np.testing.assert_allclose(w[i, j], np.outer(tent, tent) if i == j else 0, atol=1e-7)


@pytest.mark.parametrize("k, s", [(4, 2), (64, 32)])
def test_bilinear_transposed_conv_reproduces_linear_ramps(k, s):
    # Bilinear interpolation is exact on linear functions: away from the borders, output j of a ramp
    # r(i) = i sits at input coordinate (j - (k - 1) / 2) / s.
    layer = ConvTranspose2d(1, 1, k, stride=s, bias=False)
    segcore.nn.init.bilinear_upsampling_(layer.weight)
    n = 6
    ramp = np.repeat(np.arange(n, dtype=np.float32)[:, None], n, axis=1)[None, None]
    out = layer(segcore.tensor(ramp)).numpy()[0, 0]
    inner = np.arange(k, (n - 1) * s)  # rows/columns reached by two input pixels
    expected = np.repeat(((inner - (k - 1) / 2) / s)[:, None], len(inner), axis=1)
    np.testing.assert_allclose(out[np.ix_(inner, inner)], expected, atol=1e-5)


def test_zero_initialised_scores_give_uniform_predictions():
    model = registry.build("fcn8s", num_classes=4, width=1 / 16, rng=np.random.default_rng(0))
    for layer in (model.score_fr, model.score_pool4, model.score_pool3):
        assert not np.any(layer.weight.numpy()) and not np.any(layer.bias.numpy())
    x, y = batch(1, 20, 21, k=4)
    model.eval()
    assert not np.any(model(x).numpy())
    model.train()
    np.testing.assert_allclose(model.losses(x, y)["loss"].item(), math.log(4), rtol=1e-6)


@pytest.mark.parametrize(
    "name, scales", [("fcn16s", {"score_pool4": 0.01}), ("fcn8s", {"score_pool4": 0.01, "score_pool3": 1e-4})]
)
def test_skip_scaling_scales_the_pool_features(name, scales):
    scaled = build(name, skip_scaling=True)
    plain = build(name)  # same seed: same weights
    for layer, factor in scales.items():
        # score(c * pool) = (c * W) pool + b
        weight = getattr(plain, layer).weight
        weight.data = weight.data * factor
    scaled.eval()
    plain.eval()
    x, _ = batch(1, 35, 30)
    np.testing.assert_allclose(scaled(x).numpy(), plain(x).numpy(), rtol=1e-4, atol=1e-6)
    assert not np.allclose(build(name)(x).numpy(), plain(x).numpy())


def conv(k: int, cin: int, cout: int, bias: bool = True) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def vgg16_fc7() -> int:
    stages = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    stages += [(256, 512)] + [(512, 512)] * 5
    return sum(conv(3, a, b) for a, b in stages) + conv(7, 512, 4096) + conv(1, 4096, 4096)


@pytest.mark.parametrize(
    "name, head",
    [
        ("fcn32s", conv(1, 4096, 21) + conv(64, 21, 21, bias=False)),
        ("fcn16s", conv(1, 4096, 21) + conv(4, 21, 21, False) + conv(1, 512, 21) + conv(32, 21, 21, False)),
        (
            "fcn8s",
            conv(1, 4096, 21) + conv(4, 21, 21, False) + conv(1, 512, 21) + conv(4, 21, 21, False)
            + conv(1, 256, 21) + conv(16, 21, 21, False),
        ),
    ],
    ids=NAMES,
)  # fmt: skip
def test_paper_parameter_count(name, head):
    model = registry.build(name, rng=np.random.default_rng(0))  # paper configuration: 21 VOC classes
    count = sum(p.numel() for p in model.parameters())
    assert count == vgg16_fc7() + head
    assert round(vgg16_fc7() / 1e6) == 134  # the paper's "134M" for the convolutionalised VGG-16
    keys = list(model.state_dict())
    assert keys[:3] == ["backbone.features.0.weight", "backbone.features.0.bias", "backbone.features.2.weight"]
    assert "backbone.features.28.weight" in keys and "backbone.classifier.3.weight" in keys
    assert model.backbone.features[0].padding == (100, 100)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"width": 0}, ValueError, "width"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"dropout": -0.1}, ValueError, "dropout"),
        ({"skip_scaling": "yes"}, TypeError, "skip_scaling"),
        ({"rng": 0}, TypeError, "rng"),
        ({"stride": 8}, TypeError, "stride"),  # not a factory keyword: the variant is the model name
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        registry.build("fcn16s", **kwargs)


def test_bad_images():
    model = build("fcn32s")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(TypeError, match="floating"):
        model(np.zeros((1, 3, 32, 32), np.int64))
