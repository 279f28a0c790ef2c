"""ResNet backbones: published parameter counts, torchvision state-dict keys, dilation and multi-grid."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
from segcore.models.backbones.resnet import BACKBONES, build_resnet
from segcore.registry import build_backbone, list_backbones

# torchvision's published counts (ImageNet classifier included).
PUBLISHED = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}
# torchvision's resnet tables, written out here: (bottleneck?, blocks per stage).
TABLE = {
    "resnet18": (False, (2, 2, 2, 2)),
    "resnet34": (False, (3, 4, 6, 3)),
    "resnet50": (True, (3, 4, 6, 3)),
    "resnet101": (True, (3, 4, 23, 3)),
    "resnet152": (True, (3, 8, 36, 3)),
}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_keys(name: str, with_fc: bool) -> list[str]:
    """torchvision's ResNet state_dict keys in order, from its documented structure."""
    bottleneck, blocks = TABLE[name]
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in BN]
    convs = ("conv1", "conv2", "conv3") if bottleneck else ("conv1", "conv2")
    for stage, n in enumerate(blocks, start=1):
        for b in range(n):
            prefix = f"layer{stage}.{b}"
            for i, conv in enumerate(convs, start=1):
                keys.append(f"{prefix}.{conv}.weight")
                keys += [f"{prefix}.bn{i}.{s}" for s in BN]
            # A projection shortcut where channels or resolution change: every stage's first block for
            # Bottleneck (64 -> 256 in layer1), stages 2-4 for BasicBlock.
            if b == 0 and (bottleneck or stage > 1):
                keys.append(f"{prefix}.downsample.0.weight")
                keys += [f"{prefix}.downsample.1.{s}" for s in BN]
    if with_fc:
        keys += ["fc.weight", "fc.bias"]
    return keys


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_torchvision(name):
    model = build_resnet(name, classifier=True, rng=np.random.default_rng(0))
    assert model.num_parameters() == PUBLISHED[name]


@pytest.mark.parametrize(("name", "features"), [("resnet18", 512), ("resnet50", 2048)])
def test_backbone_without_classifier_drops_fc(name, features):
    # The segmentation backbone: the published count minus fc (features -> 1000, with bias).
    model = build_resnet(name, rng=np.random.default_rng(0))
    assert model.num_parameters() == PUBLISHED[name] - (features * 1000 + 1000)
    assert "fc" not in model._modules and "avgpool" not in model._modules


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_state_dict_keys_equal_torchvision(name):
    model = build_resnet(name, width=0.125, rng=np.random.default_rng(0))
    assert list(model.state_dict()) == torchvision_keys(name, with_fc=False)
    with_fc = build_resnet(name, width=0.125, classifier=True, rng=np.random.default_rng(0))
    assert list(with_fc.state_dict()) == torchvision_keys(name, with_fc=True)


def test_full_width_shapes_follow_torchvision_v1_5():
    sd = build_resnet("resnet50", rng=np.random.default_rng(0)).state_dict()
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["layer2.0.conv1.weight"].shape == (128, 256, 1, 1)
    assert sd["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    model = build_resnet("resnet50", width=0.125, rng=np.random.default_rng(0))
    # v1.5: the stride sits on the 3x3 conv, not on the first 1x1.
    assert model.layer2[0].conv1.stride == (1, 1) and model.layer2[0].conv2.stride == (2, 2)
    assert model.layer2[0].downsample[0].stride == (2, 2)


def _dilations(layer) -> list[int]:
    return [block.conv2.dilation[0] for block in layer]


def test_dilation_follows_replace_stride_with_dilation():
    os16 = build_resnet("resnet50", width=0.125, output_stride=16, rng=np.random.default_rng(0))
    assert _dilations(os16.layer3) == [1] * 6
    assert os16.layer3[0].conv2.stride == (2, 2)
    # First block of a dilated stage keeps the previous dilation; its stride becomes 1.
    assert _dilations(os16.layer4) == [1, 2, 2]
    assert os16.layer4[0].conv2.stride == (1, 1) and os16.layer4[0].downsample[0].stride == (1, 1)
    os8 = build_resnet("resnet101", width=0.125, output_stride=8, rng=np.random.default_rng(0))
    assert _dilations(os8.layer3) == [1] + [2] * 22
    assert _dilations(os8.layer4) == [2, 4, 4]
    assert [b.conv2.padding for b in os8.layer4] == [(2, 2), (4, 4), (4, 4)]
    assert list(os8.feature_strides.values()) == [2, 4, 8, 8, 8]
    assert list(os16.feature_strides.values()) == [2, 4, 8, 16, 16]


def test_multi_grid_multiplies_layer4_rate():
    # DeepLab v3: rates = rate * (1, 2, 4) = (2, 4, 8) at output stride 16 and (4, 8, 16) at 8.
    os16 = build_resnet("resnet50", width=0.125, output_stride=16, multi_grid=(1, 2, 4), rng=np.random.default_rng(0))
    assert _dilations(os16.layer4) == [2, 4, 8]
    os8 = build_resnet("resnet50", width=0.125, output_stride=8, multi_grid=(1, 2, 4), rng=np.random.default_rng(0))
    assert _dilations(os8.layer4) == [4, 8, 16]
    assert _dilations(os8.layer3) == [1, 2, 2, 2, 2, 2]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_dilated_network_computes_the_strided_one_on_its_grid(name):
    # Trading a stride for dilation must not change what is computed, only where it is sampled: with the same
    # weights (eval mode), the output-stride-8/16 maps taken every 4th/2nd pixel equal the stride-32 maps.
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ref = build_resnet(name, width=0.125, rng=np.random.default_rng(2)).eval()
    expected = {k: v.numpy() for k, v in ref(x).items()}
    scale = np.abs(expected["res5"]).max()
    for output_stride in (16, 8):
        dilated = build_resnet(name, width=0.125, output_stride=output_stride, rng=np.random.default_rng(3)).eval()
        dilated.load_state_dict(ref.state_dict())
        got = dilated(x)
        step = 32 // output_stride
        assert got["res5"].shape[-2:] == (64 // output_stride,) * 2
        np.testing.assert_allclose(got["res5"].numpy()[..., ::step, ::step], expected["res5"], atol=1e-5 * scale)
        if output_stride == 8:
            np.testing.assert_allclose(got["res4"].numpy()[..., ::2, ::2], expected["res4"], atol=1e-5 * scale)


@pytest.mark.parametrize(
    ("name", "size", "output_stride", "shapes"),
    [
        # width 0.125: stem 8; BasicBlock stages 8/16/32/64; Bottleneck 32/64/128/256. Sizes halve with ceil.
        ("resnet18", 65, 32, {"stem": (8, 33), "res2": (8, 17), "res3": (16, 9), "res4": (32, 5), "res5": (64, 3)}),
        ("resnet18", 64, 8, {"stem": (8, 32), "res2": (8, 16), "res3": (16, 8), "res4": (32, 8), "res5": (64, 8)}),
        ("resnet50", 33, 16, {"stem": (8, 17), "res2": (32, 9), "res3": (64, 5), "res4": (128, 3), "res5": (256, 3)}),
    ],
)
def test_feature_shapes(name, size, output_stride, shapes):
    model = build_resnet(name, width=0.125, output_stride=output_stride, rng=np.random.default_rng(0))
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    features = model(x)
    assert list(features) == ["stem", "res2", "res3", "res4", "res5"]
    for key, (channels, side) in shapes.items():
        assert features[key].shape == (2, channels, side, side), key
        assert model.feature_channels[key] == channels


def test_width_scales_channels_with_minimum_one():
    tiny = build_resnet("resnet18", width=0.001, rng=np.random.default_rng(0))
    assert list(tiny.feature_channels.values()) == [1, 1, 1, 1, 1]
    wide = build_resnet("resnet50", width=0.5, rng=np.random.default_rng(0))
    assert list(wide.feature_channels.values()) == [32, 128, 256, 512, 1024]


def test_classify_gives_class_logits():
    model = build_resnet("resnet18", width=0.125, classifier=True, num_classes=7, rng=np.random.default_rng(0))
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 40)).astype(np.float32)
    assert model.classify(x).shape == (2, 7)
    with pytest.raises(RuntimeError, match="classifier=True"):
        build_resnet("resnet18", width=0.125, rng=np.random.default_rng(0)).classify(x)


def test_initialisation_is_torchvision_he_normal_fan_out():
    model = build_resnet("resnet50", width=1.0, rng=np.random.default_rng(0))
    w = model.layer3[1].conv2.weight.numpy()  # 256 out channels, 3x3: std = sqrt(2 / (256 * 9))
    assert abs(w.std() - np.sqrt(2 / (256 * 9))) < 0.02 * np.sqrt(2 / (256 * 9))
    assert np.all(model.layer3[1].bn2.weight.numpy() == 1) and np.all(model.layer3[1].bn2.bias.numpy() == 0)


def test_zero_init_residual_makes_blocks_start_as_identity_shortcuts():
    model = build_resnet("resnet50", width=0.125, zero_init_residual=True, rng=np.random.default_rng(0)).eval()
    assert all(np.all(block.bn3.weight.numpy() == 0) for layer in (model.layer1, model.layer4) for block in layer)
    block = model.layer3[1]  # no downsample: output = relu(input) = input (inputs are post-ReLU)
    x = np.abs(np.random.default_rng(0).standard_normal((1, 128, 5, 5))).astype(np.float32)
    np.testing.assert_array_equal(block(segcore.tensor(x)).numpy(), x)


def test_same_seed_same_weights():
    a = build_resnet("resnet18", width=0.25, rng=np.random.default_rng(5)).state_dict()
    b = build_resnet("resnet18", width=0.25, rng=np.random.default_rng(5)).state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_registered_as_backbones():
    names = {spec.name for spec in list_backbones()}
    assert set(BACKBONES) <= names
    model = build_backbone("resnet34", width=0.125, output_stride=16, rng=np.random.default_rng(0))
    assert model.feature_strides["res5"] == 16 and model.feature_channels["res5"] == 64


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"output_stride": 4}, ValueError, "output_stride must be one of"),
        ({"output_stride": 16.0}, ValueError, "output_stride"),
        ({"width": 0}, ValueError, "width"),
        ({"width": "half"}, TypeError, "width"),
        ({"multi_grid": (1, 2)}, ValueError, "multi_grid"),
        ({"multi_grid": (1, 0, 2)}, ValueError, "multi_grid"),
        ({"rng": 3}, TypeError, "rng"),
        ({"classifier": True, "num_classes": 0}, ValueError, "num_classes"),
        ({"zero_init_residual": 1}, TypeError, "zero_init_residual"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_resnet("resnet50", **kwargs)


def test_unknown_depth_lists_the_known_ones():
    with pytest.raises(ValueError, match="resnet101"):
        build_resnet("resnet19")
    with pytest.raises(TypeError, match="did you mean 'output_stride'"):
        segcore.registry.build_backbone("resnet18", output_strid=8)
