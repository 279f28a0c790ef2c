"""MobileNetV2 backbone: torchvision's parameter count and layout, width rounding, dilation, named features."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
import segcore.functional as F
from segcore.models.backbones.mobilenetv2 import InvertedResidual, MobileNetV2, _make_divisible, mobilenet_v2
from segcore.registry import build_backbone


def images(n=2, h=65, w=47, seed=0):
    return segcore.tensor(np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32))


def ceil_div(size: int, stride: int) -> int:
    return -(-size // stride)


def test_parameter_count_matches_torchvision():
    # torchvision.models.mobilenet_v2(): 3,504,872 parameters, of which the classifier Linear(1280, 1000) has
    # 1280 * 1000 + 1000 = 1,281,000.
    assert sum(p.numel() for p in mobilenet_v2(num_classes=1000).parameters()) == 3_504_872
    assert sum(p.numel() for p in mobilenet_v2().parameters()) == 3_504_872 - 1_281_000


def test_state_dict_layout_follows_torchvision():
    state = mobilenet_v2(num_classes=1000).state_dict()
    # Shapes of torchvision's mobilenet_v2 weights: a t=1 block has no expansion conv, so its depthwise conv
    # is conv.0 and its projection conv.1/conv.2; t=6 blocks expand in conv.0.
    expected = {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.running_var": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.1.conv.2.bias": (16,),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.2.conv.3.running_mean": (24,),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "features.18.1.weight": (1280,),
        "classifier.1.weight": (1000, 1280),
        "classifier.1.bias": (1000,),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert "features.19.0.weight" not in state and "features.1.conv.3.weight" not in state
    # 52 convs (stem, 17 x (2 or 3), last) each followed by a BN with 5 entries, plus Linear weight and bias.
    convs = 1 + (1 * 2 + 16 * 3) + 1
    assert len(state) == convs * (1 + 5) + 2


def test_make_divisible_rounds_like_torchvision():
    # Nearest multiple of 8, at least 8, bumped up when rounding would lose more than 10%.
    assert [_make_divisible(v) for v in (11.2, 12, 16, 33.6, 4, 1280)] == [16, 16, 16, 32, 8, 1280]


def test_width_multiplier_rounds_stage_channels_and_keeps_1280_last():
    # width 0.5: 32->16 stem, stages 16,24,32,64,96,160,320 -> 8,12->16,16,32,48,80,160; last conv stays 1280.
    net = mobilenet_v2(width_mult=0.5)
    assert net.features[0][0].out_channels == 16
    assert [net.features[i].out_channels for i in (1, 3, 6, 10, 13, 16, 17)] == [8, 16, 16, 32, 48, 80, 160]
    assert dict(net.feature_channels) == {"c1": 8, "c2": 16, "c3": 16, "c4": 48, "c5": 1280}
    # width 1.4 widens the last conv too: 1280 * 1.4 = 1792.
    assert mobilenet_v2(width_mult=1.4).feature_channels["c5"] == 1792


@pytest.mark.parametrize(
    ("output_stride", "strides"),
    [(32, (2, 4, 8, 16, 32)), (16, (2, 4, 8, 16, 16)), (8, (2, 4, 8, 8, 8))],
)
def test_features_have_the_advertised_shapes_for_odd_sizes(output_stride, strides):
    net = mobilenet_v2(width_mult=0.25, output_stride=output_stride, rng=np.random.default_rng(0))
    assert tuple(net.feature_strides.values()) == strides
    out = net(images(1, 65, 47))
    assert list(out) == ["c1", "c2", "c3", "c4", "c5"]
    for name, stride in zip(out, strides):
        # Every 3x3 stride-2 conv with padding 1 maps H to ceil(H / 2).
        assert out[name].shape == (1, net.feature_channels[name], ceil_div(65, stride), ceil_div(47, stride)), name


def _depthwise(block: InvertedResidual):
    return block.conv[1][0] if len(block.conv) == 4 else block.conv[0][0]


@pytest.mark.parametrize(
    ("output_stride", "dilations", "destrided"),
    [
        # The first block of a de-strided stage keeps the previous dilation; the blocks after it double it.
        (32, [1] * 17, []),
        (16, [1] * 14 + [2, 2, 2], [14]),
        (8, [1] * 7 + [2] * 7 + [4, 4, 4], [7, 14]),
    ],
)
def test_output_stride_replaces_strides_by_dilation(output_stride, dilations, destrided):
    net = mobilenet_v2(width_mult=0.25, output_stride=output_stride)
    blocks = [net.features[i] for i in range(1, 18)]
    assert [_depthwise(b).dilation[0] for b in blocks] == dilations
    assert [_depthwise(b).padding[0] for b in blocks] == dilations
    strided = [i for i in range(1, 18) if _depthwise(net.features[i]).stride == (2, 2)]
    assert strided == sorted({2, 4, 7, 14} - set(destrided))


@pytest.mark.parametrize("output_stride", [32, 8])
def test_residual_connections_only_where_shapes_agree(output_stride):
    # Stride 1 and equal channels: the repeats of each (t, c, n, s) row; de-striding never adds one because
    # the first block of every strided row also changes the channel count.
    full = mobilenet_v2(output_stride=output_stride)
    assert [i for i in range(1, 18) if full.features[i].use_res_connect] == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    net = mobilenet_v2(width_mult=0.25, output_stride=output_stride, rng=np.random.default_rng(0))
    block = net.features[5]
    x = net.features[:5](images(2, 32, 32))
    np.testing.assert_allclose(block(x).numpy(), (block.conv(x) + x).numpy(), rtol=1e-6)


def test_classifier_pools_c5_and_applies_dropout_linear():
    net = mobilenet_v2(width_mult=0.25, num_classes=10, rng=np.random.default_rng(0)).eval()
    x = images(2, 40, 33)
    c5 = net(x)["c5"].numpy()
    linear = net.classifier[1]
    expected = c5.mean(axis=(2, 3)) @ linear.weight.numpy().T + linear.bias.numpy()
    np.testing.assert_allclose(net.classify(x).numpy(), expected, rtol=1e-4, atol=1e-6)
    assert net.classifier[0].p == 0.2
    with pytest.raises(ValueError, match=r"built without a classifier \(num_classes=None\)"):
        mobilenet_v2(width_mult=0.25).classify(x)


def test_a_training_step_reaches_every_parameter_at_output_stride_16():
    net = mobilenet_v2(width_mult=0.25, output_stride=16, rng=np.random.default_rng(0))
    out = net(images(2, 33, 31))
    # A scalar touching c2 and c5 (the DeepLabv3+ inputs) reaches every layer up to features.18.
    loss = F.mean(out["c5"] * out["c5"]) + F.mean(out["c2"])
    loss.backward()
    silent = [n for n, p in net.named_parameters() if p.grad is None or not np.any(p.grad.numpy())]
    assert silent == []


def test_registered_and_built_by_name():
    assert "mobilenet_v2" in [spec.name for spec in segcore.list_backbones()]
    net = build_backbone("mobilenet_v2", width_mult=0.25, output_stride=16)
    assert isinstance(net, MobileNetV2) and net.feature_strides["c5"] == 16


def test_bad_arguments_name_the_argument_and_value():
    with pytest.raises(ValueError, match=r"width_mult must be a positive number .* got 0"):
        MobileNetV2(width_mult=0)
    with pytest.raises(TypeError, match=r"width_mult must be a positive number .* got '1'"):
        MobileNetV2(width_mult="1")
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\), got 4"):
        mobilenet_v2(output_stride=4)
    with pytest.raises(ValueError, match="num_classes must be a positive int or None, got 0"):
        mobilenet_v2(num_classes=0)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator or None, got int"):
        mobilenet_v2(rng=0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, H, W\), got \(1, 1, 8, 8\)"):
        mobilenet_v2(width_mult=0.25)(images(1, 8, 8)[:, :1])
