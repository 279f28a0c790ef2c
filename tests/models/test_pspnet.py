"""PSPNet: dilated ResNet (output stride 8) + pyramid pooling (bins 1, 2, 3, 6) + auxiliary loss 0.4."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
from segcore import functional as F
from segcore.autograd import no_grad, tensor
from segcore.models.pspnet import PyramidPoolingModule
from segcore.nn import Dropout
from segcore.optim import SGD
from segcore.testing import assert_is_semantic_segmentation_model

TINY = dict(backbone="resnet18", width=0.125)
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def make_batch(k: int, n: int = 2, h: int = 33, w: int = 31, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, 3, h, w)).astype(np.float32)
    targets = rng.integers(0, k, size=(n, h, w))
    targets[rng.random((n, h, w)) < 0.1] = 255
    return images, targets.astype(np.int64)


def reseed_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, Dropout):
            module.rng = np.random.default_rng(0)


def summed_losses(model, images, targets):
    reseed_dropout(model)
    losses = model.losses(images, targets)
    total = None
    for value in losses.values():
        total = value if total is None else total + value
    return losses, total


def test_parameter_count_paper_configuration():
    model = segcore.build("pspnet", num_classes=21, rng=np.random.default_rng(0))
    backbone = 44_549_160 - (2048 * 1000 + 1000)  # ResNet-101, plain stem, no fc
    ppm = 4 * (2048 * 512 + 2 * 512)  # four 1x1 convs 2048 -> 2048/4 (no bias) + BN
    head = (4096 * 512 * 9 + 2 * 512) + (512 * 21 + 21)  # 3x3 conv on the 2C concat + BN, 1x1 classifier
    aux = 1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21  # on res4
    assert model.num_parameters() == backbone + ppm + head + aux == 67_949_930


def test_paper_configuration():
    model = segcore.build("pspnet", num_classes=21, **TINY, rng=np.random.default_rng(0))
    assert model.backbone.feature_strides["res5"] == 8 and model.backbone.feature_strides["res4"] == 8
    assert model.aux_loss_weights == {"aux": 0.4}
    ppm = model.classifier[0]
    assert [stage[0].output_size for stage in ppm.stages] == [1, 2, 3, 6]
    c = model.backbone.feature_channels["res5"]  # 64 at width 1/8
    assert [stage[1].out_channels for stage in ppm.stages] == [c // 4] * 4 and ppm.out_channels == 2 * c
    assert model.classifier[1].out_channels == 64  # 512 * width
    assert model.classifier[4].p == 0.1
    keys = [k for k in model.state_dict() if not k.startswith("backbone.")]
    expected = []
    for i in range(4):
        expected += [f"classifier.0.stages.{i}.1.weight"] + [f"classifier.0.stages.{i}.2.{s}" for s in BN]
    expected += ["classifier.1.weight"] + [f"classifier.2.{s}" for s in BN]
    expected += ["classifier.5.weight", "classifier.5.bias"]
    expected += ["aux_classifier.0.weight"] + [f"aux_classifier.1.{s}" for s in BN]
    expected += ["aux_classifier.4.weight", "aux_classifier.4.bias"]
    assert keys == expected


def test_pyramid_pooling_values():
    rng = np.random.default_rng(0)
    ppm = PyramidPoolingModule(8, (1, 2, 3, 6), rng=rng).eval()
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    with no_grad():
        out = ppm(tensor(x)).numpy()
    assert out.shape == (2, 16, 12, 12)
    np.testing.assert_array_equal(out[:, :8], x)  # the input comes first, unchanged
    # Bin 1: global mean, 1x1 conv, BN (eval: 1/sqrt(1 + eps)), ReLU, broadcast over the map.
    w1 = ppm.stages[0][1].weight.numpy()[:, :, 0, 0]
    global_branch = np.maximum(x.mean(axis=(2, 3)) @ w1.T / np.sqrt(1 + 1e-5), 0)
    expected1 = np.broadcast_to(global_branch[..., None, None], (2, 2, 12, 12))
    np.testing.assert_allclose(out[:, 8:10], expected1, rtol=1e-5, atol=1e-6)
    # Bin 6 on a 12x12 map averages 2x2 blocks (compared before the bilinear upsampling).
    w6 = ppm.stages[3][1].weight.numpy()[:, :, 0, 0]
    blocks = x.reshape(2, 8, 6, 2, 6, 2).mean(axis=(3, 5))
    expected6 = np.maximum(np.einsum("oc,nchw->nohw", w6, blocks) / np.sqrt(1 + 1e-5), 0)
    with no_grad():
        pooled6 = ppm.stages[3](tensor(x)).numpy()
    np.testing.assert_allclose(pooled6, expected6, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("h", "w"), [(33, 31), (32, 40)])
def test_output_shape_any_size(h, w):
    model = segcore.build("pspnet", num_classes=4, **TINY, rng=np.random.default_rng(0)).eval()
    images, _ = make_batch(4, h=h, w=w)
    assert model(images).shape == (2, 4, h, w)


def test_sgd_step_lowers_loss_and_reaches_every_parameter():
    # Batch 2: the 1x1-bin branch's BN sees one value per image and needs two in training.
    model = segcore.build("pspnet", num_classes=3, **TINY, rng=np.random.default_rng(0)).train()
    images, targets = make_batch(3)
    _, before = summed_losses(model, images, targets)
    model.zero_grad()
    before.backward()
    unreached = [n for n, p in model.named_parameters() if p.grad is None or not np.any(p.grad.numpy() != 0)]
    assert not unreached
    SGD(model.parameters(), lr=0.01).step()
    assert summed_losses(model, images, targets)[1].item() < before.item()


def test_aux_loss_weight_is_0_4():
    model = segcore.build("pspnet", num_classes=3, **TINY, rng=np.random.default_rng(0)).train()
    images, targets = make_batch(3)
    losses, _ = summed_losses(model, images, targets)
    assert set(losses) == {"loss", "loss_aux"}
    reseed_dropout(model)
    _, aux = model.forward_with_aux(images)
    expected = 0.4 * F.cross_entropy(aux["aux"], tensor(targets), ignore_index=255).item()
    assert losses["loss_aux"].item() == pytest.approx(expected, rel=1e-5)
    off = segcore.build("pspnet", num_classes=3, aux_loss=False, **TINY, rng=np.random.default_rng(0))
    assert set(off.losses(images, targets)) == {"loss"}


def test_predict_and_contract():
    model = segcore.build("pspnet", num_classes=5, **TINY, rng=np.random.default_rng(0))
    images, _ = make_batch(5, n=2, h=27, w=36)
    labels = model.predict(images)
    assert all(m.shape == (27, 36) and m.dtype.kind == "i" and 0 <= m.min() and m.max() < 5 for m in labels)
    assert_is_semantic_segmentation_model(model, num_classes=5, input_size=(2, 3, 33, 32))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 3, "bins": (1, 0)}, ValueError, "bins"),
        ({"num_classes": 3, "dropout": 1.0}, ValueError, "dropout"),
        ({"num_classes": 3, "aux_weight": "0.4"}, ValueError, "aux_weight"),
        ({"num_classes": 3, "output_stride": 2}, ValueError, "output_stride"),
        ({"num_classes": 2.5}, ValueError, "num_classes"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        segcore.build("pspnet", **kwargs)
