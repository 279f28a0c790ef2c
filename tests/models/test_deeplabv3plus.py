"""DeepLab v3+: parameter counts at the paper configuration, encoder-decoder wiring, model contract per backbone."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
import segcore.functional as F
from segcore.models.aspp import SeparableConvBNReLU
from segcore.models.backbones.xception import xception65
from segcore.models.deeplabv3plus import DeepLabV3Plus
from segcore.optim import SGD
from segcore.testing import assert_is_semantic_segmentation_model

# Small widths that keep every backbone's forward + backward well under a second on a CPU.
SMALL = {"xception65": 0.0625, "resnet50": 0.125, "resnet101": 0.125, "mobilenet_v2": 0.25}


def small(backbone: str, num_classes: int = 3, **kwargs):
    return segcore.build(
        "deeplabv3plus", num_classes=num_classes, backbone=backbone, width=SMALL[backbone],
        rng=np.random.default_rng(0), **kwargs,
    )  # fmt: skip


def batch(n=2, h=33, w=31, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, h, w)).astype(np.float32), rng.integers(0, k, size=(n, h, w))


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


# Head parameters by hand (convs without bias are followed by BN: 2 parameters per channel).
def conv_bn(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + 2 * cout


def sep_bn(cin: int, cout: int) -> int:
    return 9 * cin + 2 * cin + cin * cout + 2 * cout


def head(high: int, low: int, separable: bool, k: int = 21) -> int:
    atrous = sep_bn(high, 256) if separable else conv_bn(high, 256, 3)
    aspp = conv_bn(high, 256, 1) + 3 * atrous + conv_bn(high, 256, 1) + conv_bn(5 * 256, 256, 1)
    fuse = sep_bn(256 + 48, 256) + sep_bn(256, 256) if separable else conv_bn(256 + 48, 256, 3) + conv_bn(256, 256, 3)
    return aspp + conv_bn(low, 48, 1) + fuse + 256 * k + k


@pytest.mark.parametrize(
    ("backbone", "backbone_params", "high", "low", "separable", "total"),
    [
        # Xception-65 without classifier: the hand sum of tests/models/test_xception.py.
        ("xception65", 37_867_312, 2048, 256, True, 41_055_413),
        # torchvision's published totals minus the ImageNet fc (2048 * 1000 + 1000).
        ("resnet101", 44_549_160 - 2_049_000, 2048, 256, False, 59_344_309),
        ("resnet50", 25_557_032 - 2_049_000, 2048, 256, False, 40_352_181),
        # torchvision's mobilenet_v2 minus its classifier (1280 * 1000 + 1000); high = 1280, low = 24.
        ("mobilenet_v2", 3_504_872 - 1_281_000, 1280, 24, True, 4_392_453),
    ],
)
def test_parameter_count_at_the_paper_configuration(backbone, backbone_params, high, low, separable, total):
    model = segcore.build("deeplabv3plus", num_classes=21, backbone=backbone)
    assert backbone_params + head(high, low, separable) == total
    assert count(model) == total
    assert count(model.backbone) == backbone_params


def test_defaults_are_the_paper_configuration():
    model = segcore.build("deeplabv3plus", num_classes=21)
    assert type(model.backbone).__name__ == "Xception65" and model.backbone.output_stride == 16
    assert len(model.backbone.middle_flow) == 16
    assert [c.depthwise.dilation for c in list(model.aspp.convs)[1:4]] == [(6, 6), (12, 12), (18, 18)]
    assert all(isinstance(c, SeparableConvBNReLU) for c in list(model.aspp.convs)[1:4])
    assert all(isinstance(c, SeparableConvBNReLU) for c in model.decoder.convs)
    assert model.decoder.low_level[0].out_channels == 48 and model.decoder.convs[1].pointwise.out_channels == 256
    assert model.aspp.project[3].p == 0.1


def test_output_stride_8_doubles_the_rates_and_separable_follows_the_backbone():
    model = small("xception65", output_stride=8)
    assert [c.depthwise.dilation[0] for c in list(model.aspp.convs)[1:4]] == [12, 24, 36]
    assert model.backbone.feature_strides["exit_flow"] == 8
    resnet = small("resnet50")
    assert [c[0].dilation[0] for c in list(resnet.aspp.convs)[1:4]] == [6, 12, 18]
    assert not any(isinstance(m, SeparableConvBNReLU) for m in resnet.modules())
    assert isinstance(small("resnet50", separable=True).decoder.convs[0], SeparableConvBNReLU)
    assert not any(isinstance(m, SeparableConvBNReLU) for m in small("xception65", separable=False).aspp.modules())


@pytest.mark.parametrize("backbone", list(SMALL))
@pytest.mark.parametrize(("h", "w"), [(33, 31), (32, 40)])
def test_logits_have_the_input_size(backbone, h, w):
    model = small(backbone, num_classes=4).eval()
    x, _ = batch(2, h, w)
    assert model(x).shape == (2, 4, h, w)


@pytest.mark.parametrize("backbone", list(SMALL))
def test_decoder_reads_the_stride_4_feature_and_logits_are_its_upsampled_classification(backbone):
    model = small(backbone).eval()
    x, _ = batch(2, 33, 31)
    features = model.backbone(segcore.tensor(x))
    low = features[model.low_level_feature]
    assert low.shape[-2:] == (9, 8)  # ceil(33 / 4), ceil(31 / 4)
    decoded = model.decoder(model.aspp(features[model.high_level_feature]), low)
    assert decoded.shape == (2, model.decoder.out_channels, 9, 8)
    expected = F.interpolate(model.classifier(decoded), size=(33, 31), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(model(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_decoder_concatenates_upsampled_encoder_output_before_the_reduced_low_level_feature():
    model = small("mobilenet_v2").eval()
    rng = np.random.default_rng(3)
    enc = segcore.tensor(rng.standard_normal((2, model.aspp.out_channels, 3, 2)).astype(np.float32))
    low = segcore.tensor(rng.standard_normal((2, model.decoder.low_level_in_channels, 9, 8)).astype(np.float32))
    up = F.interpolate(enc, size=(9, 8), mode="bilinear", align_corners=False)
    reduced = model.decoder.low_level(low)
    assert reduced.shape[1] == 12  # 48 channels scaled by width 0.25
    expected = model.decoder.convs(F.cat([up, reduced], dim=1))
    np.testing.assert_allclose(model.decoder(enc, low).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backbone", list(SMALL))
def test_one_sgd_step_lowers_the_loss_and_reaches_every_parameter(backbone):
    model = small(backbone).double()
    # Learnable targets (a pixel-wise function of the image); Xception's 16 middle blocks get 65 px so its
    # stride-16 BatchNorms see more than a handful of values per channel.
    h, w = (65, 63) if backbone == "xception65" else (33, 31)
    x = np.random.default_rng(1).standard_normal((2, 3, h, w))
    y = (x[:, 0] > 0.5).astype(np.int64) + (x[:, 1] > 0.5)
    dropout = model.aspp.project[3]

    def total_loss():
        dropout.rng = np.random.default_rng(7)  # the same dropout mask before and after the step
        return sum(model.losses(x, y).values())

    before = total_loss()
    before.backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not np.any(p.grad.numpy())]
    assert silent == []
    # Gradients of a deep BatchNorm network at initialisation explode with depth (||g||^2 is ~5e3 for the
    # small ResNet-50 and ~2e7 for the small Xception), so the step is only first-order accurate when small:
    # lr is set for a predicted decrease lr * ||g||^2 of 1e-4, and at least half of it must be realised.
    squared_norm = sum(float((p.grad.numpy() ** 2).sum()) for p in model.parameters())
    SGD(model.parameters(), lr=1e-4 / squared_norm).step()
    after = total_loss()
    assert before.item() - after.item() > 0.5e-4


@pytest.mark.parametrize("backbone", list(SMALL))
def test_predict_returns_int_label_maps(backbone):
    model = small(backbone, num_classes=5)
    x, _ = batch(3, 33, 30)
    labels = model.predict(x)
    assert len(labels) == 3
    assert all(m.shape == (33, 30) and m.dtype.kind == "i" and m.min() >= 0 and m.max() < 5 for m in labels)
    assert model.training  # predict restores the mode


@pytest.mark.parametrize("backbone", list(SMALL))
def test_follows_the_semantic_segmentation_contract(backbone):
    assert_is_semantic_segmentation_model(small(backbone, num_classes=4), num_classes=4, input_size=(2, 3, 35, 32))


def test_bad_arguments_name_the_argument_and_value():
    with pytest.raises(ValueError, match=r"backbone must be one of 'xception65', .*, got 'vgg16'"):
        segcore.build("deeplabv3plus", num_classes=3, backbone="vgg16")
    with pytest.raises(ValueError, match="output_stride must be 16 or 8, got 32"):
        segcore.build("deeplabv3plus", num_classes=3, output_stride=32)
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        segcore.build("deeplabv3plus", num_classes=0)
    with pytest.raises(ValueError, match="multi_grid applies to ResNet backbones only"):
        segcore.build("deeplabv3plus", num_classes=3, multi_grid=(1, 2, 4))
    with pytest.raises(TypeError, match="separable must be a bool or None"):
        segcore.build("deeplabv3plus", num_classes=3, separable="yes")
    with pytest.raises(TypeError, match="width_mult"):
        segcore.build("deeplabv3plus", num_classes=3, width_mult=0.5)
    net = xception65(width=0.0625, middle_blocks=0)
    with pytest.raises(ValueError, match=r"low_level_feature='res2' is not produced by the backbone \(it has stem"):
        DeepLabV3Plus(net, 3, low_level_feature="res2", high_level_feature="exit_flow")
