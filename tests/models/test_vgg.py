"""VGG-16 backbones: published parameter counts, torchvision state-dict keys, named features, LargeFOV geometry."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
from segcore import registry
from segcore.models.backbones.vgg import VGG, vgg16, vgg16_bn, vgg16_largefov
from segcore.nn import Conv2d, Dropout, MaxPool2d

# VGG-16 = configuration "D" of Simonyan & Zisserman, Table 1.
CFG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def torchvision_feature_keys(batch_norm: bool) -> list[str]:
    """torchvision's ``make_layers``: conv (+ bn) + relu per number, one pool per "M", indices counted up."""
    keys, i = [], 0
    for v in CFG_D:
        if v == "M":
            i += 1
            continue
        keys += [f"features.{i}.weight", f"features.{i}.bias"]
        if batch_norm:
            bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
            keys += [f"features.{i + 1}.{n}" for n in bn]
        i += 3 if batch_norm else 2
    return keys


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def images(n: int, h: int, w: int, seed: int = 1) -> segcore.Tensor:
    return segcore.tensor(np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32))


@pytest.mark.parametrize(
    "factory, batch_norm, expected",
    [(vgg16, False, 138_357_544), (vgg16_bn, True, 138_365_992)],  # torchvision's published counts
)
def test_paper_parameter_count_and_torchvision_keys(factory, batch_norm, expected):
    model = factory(num_classes=1000, rng=rng())
    assert sum(p.numel() for p in model.parameters()) == expected
    classifier = [f"classifier.{i}.{n}" for i in (0, 3, 6) for n in ("weight", "bias")]
    assert list(model.state_dict()) == torchvision_feature_keys(batch_norm) + classifier
    # fc6/fc7/fc8 as convolutions with torchvision's Linear weights' element counts.
    assert model.classifier[0].weight.shape == (4096, 512, 7, 7)
    assert model.classifier[3].weight.shape == (4096, 4096, 1, 1)
    assert model.classifier[6].weight.shape == (1000, 4096, 1, 1)


def test_vgg16_parameters_by_hand():
    # Independent sum over the paper's layers: 13 3x3 convs, fc6 7x7x512->4096, fc7 4096->4096, fc8 -> 1000.
    total, cin = 0, 3
    for v in CFG_D:
        if v != "M":
            total += 3 * 3 * cin * v + v
            cin = v
    total += 7 * 7 * 512 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
    assert total == 138_357_544
    model = vgg16(include_fc=False, rng=rng())
    assert sum(p.numel() for p in model.parameters()) == 14_714_688  # the 13 convs alone


def test_torchvision_linear_weights_load_into_the_conv_classifier():
    model = vgg16(width=1 / 64, num_classes=10, rng=rng())  # pool5 has 8 channels, fc6/fc7 64
    g = rng(5)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    linear = {
        "classifier.0.weight": g.standard_normal((64, 8 * 7 * 7)).astype(np.float32),
        "classifier.3.weight": g.standard_normal((64, 64)).astype(np.float32),
        "classifier.6.weight": g.standard_normal((10, 64)).astype(np.float32),
    }
    state.update(linear)
    model.load_torchvision_state_dict(state)
    model.eval()
    pool5 = g.standard_normal((1, 8, 7, 7)).astype(np.float32)
    fc6 = model.classifier[0](segcore.tensor(pool5)).numpy().reshape(64)
    # torchvision: Linear on the channel-major flattened pool5.
    expected = linear["classifier.0.weight"] @ pool5.reshape(-1) + state["classifier.0.bias"]
    np.testing.assert_allclose(fc6, expected, rtol=1e-4, atol=1e-4)
    bad = dict(state, **{"classifier.0.weight": np.zeros((64, 100), np.float32)})
    with pytest.raises(ValueError, match="classifier.0.weight"):
        model.load_torchvision_state_dict(bad)


def test_named_features_shapes_channels_and_strides():
    model = registry.build_backbone("vgg16", width=1 / 16, rng=rng())
    model.eval()
    features = model(images(1, 224, 256))
    expected = {}
    for stage, c in enumerate((4, 8, 16, 32, 32), start=1):
        expected[f"conv{stage}"] = (c, 224 // 2 ** (stage - 1), 256 // 2 ** (stage - 1))
        expected[f"pool{stage}"] = (c, 224 // 2**stage, 256 // 2**stage)
    expected["fc6"] = expected["fc7"] = (256, 1, 2)  # valid 7x7 conv on the 7x8 pool5 map
    assert {k: tuple(v.shape[1:]) for k, v in features.items()} == expected
    assert list(model.feature_channels.items()) == [(k, v[0]) for k, v in expected.items()]
    strides = {**{f"conv{s}": 2 ** (s - 1) for s in range(1, 6)}, **{f"pool{s}": 2**s for s in range(1, 6)}}
    assert dict(model.feature_strides) == {**strides, "fc6": 32, "fc7": 32}


def test_switches_are_the_pool_argmax_and_sizes():
    model = vgg16(width=1 / 16, include_fc=False, rng=rng())
    x = images(1, 35, 33)
    features, switches = model.forward_with_switches(x)
    assert [size for _, size in switches] == [(35, 33), (17, 16), (8, 8), (4, 4), (2, 2)]
    conv1 = features["conv1"].numpy()[0, 0, :34, :32]
    windows = conv1.reshape(17, 2, 16, 2).transpose(0, 2, 1, 3).reshape(17, 16, 4)
    arg = windows.argmax(-1)
    rows, cols = np.arange(17)[:, None] * 2 + arg // 2, np.arange(16)[None, :] * 2 + arg % 2
    assert np.array_equal(switches[0][0].numpy()[0, 0], rows * 33 + cols)
    np.testing.assert_array_equal(features["pool1"].numpy()[0, 0], windows.max(-1))


def test_input_size_errors():
    with_fc = vgg16(width=1 / 64, rng=rng())
    assert with_fc.min_input_size == 224
    with pytest.raises(ValueError, match="at least 224x224"):
        with_fc(images(1, 223, 300))
    without_fc = vgg16(width=1 / 64, include_fc=False, rng=rng())
    assert without_fc.min_input_size == 32
    with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\)"):
        without_fc(segcore.tensor(np.zeros((1, 1, 32, 32), np.float32)))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"width": 0}, ValueError, "width"),
        ({"width": "1"}, TypeError, "width"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"include_fc": 1}, TypeError, "include_fc"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"rng": 3}, TypeError, "rng"),
        ({"include_fc": False, "num_classes": 10}, ValueError, "num_classes"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        vgg16(**kwargs)


def test_largefov_geometry_and_parameters():
    model = vgg16_largefov(rng=rng())
    # 13 convs + fc6 (3x3x512->1024) + fc7 (1024->1024), by hand.
    assert sum(p.numel() for p in model.parameters()) == 14_714_688 + (9 * 512 * 1024 + 1024) + (1024 * 1024 + 1024)
    pools = [m for m in model.features if isinstance(m, MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, 2, 1)] * 3 + [(3, 1, 1)] * 2
    convs = [m for m in model.features if isinstance(m, Conv2d)]
    assert [c.dilation for c in convs] == [(1, 1)] * 10 + [(2, 2)] * 3
    assert [c.padding for c in convs[10:]] == [(2, 2)] * 3
    fc6, fc7 = model.classifier[0], model.classifier[3]
    assert (fc6.kernel_size, fc6.dilation, fc6.padding, fc6.out_channels) == ((3, 3), (12, 12), (12, 12), 1024)
    assert (fc7.kernel_size, fc7.out_channels) == ((1, 1), 1024)
    assert [type(model.classifier[i]) for i in (2, 5)] == [Dropout, Dropout]
    assert model.classifier[2].p == 0.5


def test_largefov_output_stride_8():
    model = registry.build_backbone("vgg16_largefov", width=1 / 32, rng=rng())
    model.eval()
    features = model(images(1, 321, 97))
    # DeepLab's 321x321 crops give 41x41 score maps: (321 - 1) / 8 + 1.
    assert features["fc7"].shape[-2:] == (41, 13)
    assert features["pool3"].shape[-2:] == (41, 13)
    assert model.feature_strides["fc7"] == 8


def test_unseeded_construction_and_backbone_registry():
    names = {spec.name for spec in registry.list_backbones()}
    assert {"vgg16", "vgg16_bn", "vgg16_largefov"} <= names
    a, b = VGG(width=1 / 64, fc_channels=None, rng=rng(3)), VGG(width=1 / 64, fc_channels=None, rng=rng(3))
    assert all(np.array_equal(p.numpy(), q.numpy()) for p, q in zip(a.parameters(), b.parameters()))
