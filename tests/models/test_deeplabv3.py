"""DeepLab v3 and the reusable ASPP: torchvision parameter counts and keys, rates, training contract."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
from segcore import functional as F
from segcore.autograd import tensor
from segcore.models.aspp import ASPP, SeparableConvBNReLU, deeplab_atrous_rates
from segcore.nn import Dropout
from segcore.optim import SGD
from segcore.testing import assert_is_semantic_segmentation_model

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
TINY = dict(backbone="resnet18", multi_grid=None, width=0.125)


def make_batch(k: int, n: int = 2, h: int = 33, w: int = 31, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, 3, h, w)).astype(np.float32)
    targets = rng.integers(0, k, size=(n, h, w))
    targets[rng.random((n, h, w)) < 0.1] = 255
    return images, targets.astype(np.int64)


def summed_losses(model, images, targets):
    # Re-seeding the dropout layers makes the loss a fixed function of the weights across calls.
    for module in model.modules():
        if isinstance(module, Dropout):
            module.rng = np.random.default_rng(0)
    losses = model.losses(images, targets)
    total = None
    for value in losses.values():
        total = value if total is None else total + value
    return losses, total


def check_sgd_step(model, images, targets, lr: float = 0.01) -> None:
    """Every parameter gets a non-zero gradient and one SGD step lowers the summed losses."""
    model.train()
    _, before = summed_losses(model, images, targets)
    model.zero_grad()
    before.backward()
    unreached = [n for n, p in model.named_parameters() if p.grad is None or not np.any(p.grad.numpy() != 0)]
    assert not unreached, f"no gradient reaches {unreached}"
    SGD(model.parameters(), lr=lr).step()
    _, after = summed_losses(model, images, targets)
    assert after.item() < before.item()


# ---------------------------------------------------------------- parameter counts (no forward at full size)

# torchvision's weights metadata (aux_loss=True, 21 classes): deeplabv3_resnet50 42,004,074 and
# deeplabv3_resnet101 60,996,202. Its FCN aux head on res4 (1024 channels) holds
# 3x3 conv 1024->256 (no bias) + BN 256 + 1x1 conv 256->21 with bias.
TV_R50_AUX = 42_004_074
TV_R101_AUX = 60_996_202
FCN_AUX_1024_21 = 1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21


def test_parameter_count_matches_torchvision_resnet50():
    # torchvision's configuration: output stride 8, no multi-grid (neither changes the count).
    with_aux = segcore.build("deeplabv3", num_classes=21, backbone="resnet50", output_stride=8, multi_grid=None,
                             aux_loss=True, rng=np.random.default_rng(0))  # fmt: skip
    assert with_aux.num_parameters() == TV_R50_AUX
    plain = segcore.build("deeplabv3", num_classes=21, backbone="resnet50", rng=np.random.default_rng(0))
    assert plain.num_parameters() == TV_R50_AUX - FCN_AUX_1024_21 == 39_638_869


def test_parameter_count_hand_sum_resnet50():
    # Independent of torchvision's metadata: ResNet-50 without fc + ASPP + head.
    backbone = 25_557_032 - (2048 * 1000 + 1000)
    aspp = 2048 * 256 + 3 * (2048 * 256 * 9) + 2048 * 256 + 5 * 256 * 256 + 6 * 2 * 256
    head = 256 * 256 * 9 + 2 * 256 + 256 * 21 + 21
    model = segcore.build("deeplabv3", num_classes=21, backbone="resnet50", rng=np.random.default_rng(0))
    assert model.num_parameters() == backbone + aspp + head


def test_paper_configuration_resnet101():
    model = segcore.build("deeplabv3", num_classes=21, aux_loss=True, rng=np.random.default_rng(0))
    assert model.num_parameters() == TV_R101_AUX
    # Paper defaults: ResNet-101, output stride 16, rates (6, 12, 18), multi-grid (1, 2, 4) -> layer4 (2, 4, 8).
    assert model.backbone.feature_strides["res5"] == 16
    assert [b.conv2.dilation[0] for b in model.backbone.layer4] == [2, 4, 8]
    assert [model.classifier[0].convs[i][0].dilation[0] for i in (1, 2, 3)] == [6, 12, 18]
    assert model.aux_classifier is not None and model.aux_loss_weights == {"aux": 0.5}


def test_head_keys_are_torchvisions():
    model = segcore.build("deeplabv3", num_classes=5, aux_loss=True, **TINY, rng=np.random.default_rng(0))
    keys = [k for k in model.state_dict() if not k.startswith("backbone.")]
    expected = []
    for i in range(4):  # 1x1 and three atrous branches: conv, BN
        expected += [f"classifier.0.convs.{i}.0.weight"] + [f"classifier.0.convs.{i}.1.{s}" for s in BN]
    expected += ["classifier.0.convs.4.1.weight"] + [f"classifier.0.convs.4.2.{s}" for s in BN]  # pooling
    expected += ["classifier.0.project.0.weight"] + [f"classifier.0.project.1.{s}" for s in BN]
    expected += ["classifier.1.weight"] + [f"classifier.2.{s}" for s in BN]
    expected += ["classifier.4.weight", "classifier.4.bias"]
    expected += ["aux_classifier.0.weight"] + [f"aux_classifier.1.{s}" for s in BN]
    expected += ["aux_classifier.4.weight", "aux_classifier.4.bias"]
    assert keys == expected
    backbone_keys = [k[len("backbone.") :] for k in model.state_dict() if k.startswith("backbone.")]
    assert backbone_keys[:2] == ["conv1.weight", "bn1.weight"] and "fc.weight" not in backbone_keys


@pytest.mark.parametrize(("output_stride", "rates"), [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_atrous_rates_follow_output_stride(output_stride, rates):
    assert deeplab_atrous_rates(output_stride) == rates
    model = segcore.build("deeplabv3", num_classes=3, output_stride=output_stride, **TINY, rng=np.random.default_rng(0))
    convs = model.classifier[0].convs
    assert tuple(convs[i][0].dilation[0] for i in (1, 2, 3)) == rates
    assert tuple(convs[i][0].padding[0] for i in (1, 2, 3)) == rates
    assert model.backbone.feature_strides["res5"] == output_stride


# ---------------------------------------------------------------- ASPP (shared with DeepLab v3+)


def test_aspp_atrous_branch_degenerates_to_1x1_when_rate_exceeds_the_map():
    # The v3 paper's motivation for image pooling: with a rate >= the map size, only the centre tap of a 3x3
    # atrous filter sees the image, so the branch equals a 1x1 conv with the centre weights.
    rng = np.random.default_rng(0)
    aspp = ASPP(4, (6,), 3, rng=rng).eval()
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    branch = aspp.convs[1](tensor(x)).numpy()
    centre = aspp.convs[1][0].weight.numpy()[:, :, 1, 1]
    expected = np.maximum(np.einsum("oc,nchw->nohw", centre, x) / np.sqrt(1 + 1e-5), 0)
    np.testing.assert_allclose(branch, expected, rtol=1e-5, atol=1e-6)


def test_aspp_image_pooling_branch_is_spatially_constant():
    rng = np.random.default_rng(0)
    aspp = ASPP(4, (1, 2), 3, rng=rng).eval()
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    pooled = aspp.convs[3](tensor(x)).numpy()
    assert pooled.shape == (2, 3, 7, 6)
    w = aspp.convs[3][1].weight.numpy()[:, :, 0, 0]
    expected = np.maximum(w @ x.mean(axis=(2, 3))[..., None] / np.sqrt(1 + 1e-5), 0)[..., 0]  # (2, 3)
    np.testing.assert_allclose(pooled, np.broadcast_to(expected[..., None, None], pooled.shape), rtol=1e-5, atol=1e-6)
    assert aspp(tensor(x)).shape == (2, 3, 7, 6)


def test_separable_aspp_counts_and_keys():
    aspp = ASPP(16, (1, 2, 3), 8, separable=True, rng=np.random.default_rng(0))
    # 1x1: 16*8 + BN; each separable branch: depthwise 16*9 + BN(16) + pointwise 16*8 + BN(8);
    # pooling: 16*8 + BN; project: (5*8)*8 + BN.
    expected = (128 + 16) + 3 * (144 + 32 + 128 + 16) + (128 + 16) + (320 + 16)
    assert aspp.num_parameters() == expected == 1584
    assert isinstance(aspp.convs[2], SeparableConvBNReLU)
    assert aspp.convs[2].depthwise.groups == 16 and aspp.convs[2].depthwise.dilation == (2, 2)
    assert "convs.2.pointwise_bn.running_var" in aspp.state_dict()
    x = tensor(np.random.default_rng(1).standard_normal((2, 16, 9, 7)).astype(np.float32))
    assert aspp(x).shape == (2, 8, 9, 7)


def test_aspp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="atrous_rates"):
        ASPP(8, (6, 0))
    with pytest.raises(ValueError, match="dropout"):
        ASPP(8, (6,), dropout=1.5)
    with pytest.raises(TypeError, match="separable"):
        ASPP(8, (6,), separable="yes")
    with pytest.raises(ValueError, match=r"\(N, 8, H, W\)"):
        ASPP(8, (6,), rng=np.random.default_rng(0))(tensor(np.zeros((1, 4, 5, 5), np.float32)))


# ---------------------------------------------------------------- small-model behaviour


@pytest.mark.parametrize(("h", "w"), [(33, 31), (32, 48)])
def test_output_shape_any_size(h, w):
    model = segcore.build("deeplabv3", num_classes=4, **TINY, rng=np.random.default_rng(0)).eval()
    images, _ = make_batch(4, n=2, h=h, w=w)
    assert model(images).shape == (2, 4, h, w)


def test_sgd_step_lowers_loss_and_reaches_every_parameter():
    # Batch 2: the image-pooling branch's BN sees one value per image, and batch_norm needs two in training.
    model = segcore.build("deeplabv3", num_classes=3, aux_loss=True, **TINY, rng=np.random.default_rng(0))
    images, targets = make_batch(3)
    check_sgd_step(model, images, targets)


def test_aux_loss_is_weighted():
    model = segcore.build(
        "deeplabv3", num_classes=3, aux_loss=True, aux_weight=0.25, **TINY, rng=np.random.default_rng(0)
    )
    images, targets = make_batch(3)
    model.train()
    losses, _ = summed_losses(model, images, targets)
    assert set(losses) == {"loss", "loss_aux"}
    for module in model.modules():
        if isinstance(module, Dropout):
            module.rng = np.random.default_rng(0)
    _, aux = model.forward_with_aux(images)
    expected = F.cross_entropy(aux["aux"], tensor(targets), ignore_index=255).item() * 0.25
    assert losses["loss_aux"].item() == pytest.approx(expected, rel=1e-5)
    plain = segcore.build("deeplabv3", num_classes=3, **TINY, rng=np.random.default_rng(0))
    assert plain.aux_classifier is None and set(plain.losses(images, targets)) == {"loss"}


def test_training_with_batch_one_is_refused_by_image_pooling_bn():
    model = segcore.build("deeplabv3", num_classes=3, **TINY, rng=np.random.default_rng(0)).train()
    images, targets = make_batch(3, n=1)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model.losses(images, targets)
    assert model.predict(images)[0].shape == (33, 31)  # eval mode uses running statistics


def test_predict_and_contract():
    model = segcore.build("deeplabv3", num_classes=5, aux_loss=True, **TINY, rng=np.random.default_rng(0))
    images, _ = make_batch(5, n=2, h=30, w=35)
    labels = model.predict(images)
    assert len(labels) == 2
    assert all(m.shape == (30, 35) and m.dtype.kind == "i" and 0 <= m.min() and m.max() < 5 for m in labels)
    assert_is_semantic_segmentation_model(model, num_classes=5, input_size=(2, 3, 33, 32))


def test_listed_as_semantic_model():
    spec = next(s for s in segcore.list_models() if s.name == "deeplabv3")
    assert spec.task == "semantic"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"num_classes": 3, "output_stride": 4}, ValueError, "output_stride"),
        ({"num_classes": 3, "backbone": "vgg16"}, ValueError, "backbone must be one of"),
        ({"num_classes": 3, "backbone": "resnet18"}, ValueError, "multi_grid"),  # 3 rates, 2 blocks
        ({"num_classes": 3, "atrous_rates": (6, -1, 18)}, ValueError, "atrous_rates"),
        ({"num_classes": 3, "aux_loss": 1}, TypeError, "aux_loss"),
        ({"num_classes": 3, "aux_weight": -0.5}, ValueError, "aux_weight"),
        ({"num_classes": 3, "width": 0}, ValueError, "width"),
        ({"num_classes": 3, "rng": 0}, TypeError, "rng"),
        ({"num_classes": 3, "grid": (1, 2)}, TypeError, "grid"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        segcore.build("deeplabv3", **kwargs)
