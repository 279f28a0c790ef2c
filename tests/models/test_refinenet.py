"""RefineNet (4-cascaded): RCUs, multi-resolution fusion, chained residual pooling, 1/4-resolution scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import segcore
from segcore.autograd import no_grad, tensor
from segcore.models.refinenet import ChainedResidualPooling, RefineNetBlock, ResidualConvUnit
from segcore.nn import init
from segcore.optim import SGD
from segcore.testing import assert_is_semantic_segmentation_model

TINY = dict(backbone="resnet18", width=0.125)


def make_batch(k: int, n: int = 2, h: int = 33, w: int = 31, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, 3, h, w)).astype(np.float32)
    targets = rng.integers(0, k, size=(n, h, w))
    targets[rng.random((n, h, w)) < 0.1] = 255
    return images, targets.astype(np.int64)


def conv3(i: int, o: int) -> int:
    return 9 * i * o + o  # 3x3 conv with bias (no batch norm in RefineNet)


def rcu(c: int) -> int:
    return 2 * conv3(c, c)


def block(widths: list[int], crp_blocks: int) -> int:
    out = min(widths)
    fuse = sum(conv3(c, out) for c in widths) if len(widths) > 1 else 0
    return sum(2 * rcu(c) for c in widths) + fuse + crp_blocks * conv3(out, out) + rcu(out)


def refinenet_head(k: int, crp_blocks: int) -> int:
    reduce = conv3(2048, 512) + conv3(1024, 256) + conv3(512, 256) + conv3(256, 256)
    blocks = block([512], crp_blocks) + block([256, 512], crp_blocks) + 2 * block([256, 256], crp_blocks)
    return reduce + blocks + 2 * rcu(256) + (256 * k + k)


def test_parameter_count_paper_configuration():
    model = segcore.build("refinenet", num_classes=21, rng=np.random.default_rng(0))
    resnet101 = 44_549_160 - (2048 * 1000 + 1000)
    assert model.num_parameters() == resnet101 + refinenet_head(21, 2) == 109_763_669


def test_crp_block_count_is_configurable():
    two = segcore.build("refinenet", num_classes=3, **TINY, rng=np.random.default_rng(0))
    four = segcore.build("refinenet", num_classes=3, crp_blocks=4, **TINY, rng=np.random.default_rng(0))
    assert [len(getattr(two, f"refine{i}").crp.blocks) for i in (4, 3, 2, 1)] == [2] * 4
    # Two more 3x3 convs per CRP: 64 channels in RefineNet-4, 32 in the others (width 1/8).
    assert four.num_parameters() - two.num_parameters() == 2 * conv3(64, 64) + 3 * 2 * conv3(32, 32)


def test_paper_widths_and_cascade():
    model = segcore.build("refinenet", num_classes=21, **TINY, rng=np.random.default_rng(0))
    assert model.backbone.feature_strides["res5"] == 32  # no dilation: RefineNet refines instead
    assert model.refine4.channels == (64,) and model.refine3.channels == (32, 64)  # 512 and 256 times 1/8
    assert model.refine2.channels == (32, 32) and model.refine1.channels == (32, 32)
    assert "fuse" not in model.refine4._modules  # a single path goes through unchanged
    x = tensor(make_batch(21, h=64, w=96)[0])
    with no_grad():
        feats = model.backbone(x)
        reduced = {name: conv(feats[name]) for name, conv in model.reduce.named_children()}
        y4 = model.refine4(reduced["res5"])
        y3 = model.refine3(reduced["res4"], y4)
        y2 = model.refine2(reduced["res3"], y3)
        y1 = model.refine1(reduced["res2"], y2)
    assert [t.shape for t in (y4, y3, y2, y1)] == [(2, 64, 2, 3), (2, 32, 4, 6), (2, 32, 8, 12), (2, 32, 16, 24)]


def test_residual_conv_unit_is_relu_conv_relu_conv_plus_identity():
    rng = np.random.default_rng(0)
    unit = ResidualConvUnit(3, rng=rng)
    x = rng.standard_normal((1, 3, 6, 5)).astype(np.float32)
    init.zeros_(unit.conv2.weight)
    init.constant_(unit.conv2.bias, 0.5)
    with no_grad():
        np.testing.assert_allclose(unit(tensor(x)).numpy(), x + 0.5, rtol=1e-6)


def test_chained_residual_pooling_with_identity_convs():
    # With each conv the identity (centre tap 1), block k max-pools the previous block's output, so the sum is
    # relu(x) + max over 5x5 + max over 9x9 windows (windows clipped at the border, as -inf padding does).
    rng = np.random.default_rng(0)
    crp = ChainedResidualPooling(2, 2, rng=rng)
    for blk in crp.blocks:
        weight = np.zeros((2, 2, 3, 3))
        weight[0, 0, 1, 1] = weight[1, 1, 1, 1] = 1.0
        blk[1].weight.data = blk[1].weight.backend.asarray(weight.astype(np.float32))
        init.zeros_(blk[1].bias)
    x = rng.standard_normal((1, 2, 11, 12)).astype(np.float32)
    r = np.maximum(x, 0)
    expected = r + ndimage.maximum_filter(r, size=(1, 1, 5, 5), mode="nearest")
    expected += ndimage.maximum_filter(r, size=(1, 1, 9, 9), mode="nearest")
    with no_grad():
        np.testing.assert_allclose(crp(tensor(x)).numpy(), expected, rtol=1e-6)


def test_fusion_upsamples_to_the_finest_path_and_sums():
    rng = np.random.default_rng(0)
    blk = RefineNetBlock((4, 6), 1, rng=rng)
    fine = tensor(rng.standard_normal((1, 4, 9, 7)).astype(np.float32))
    coarse = tensor(rng.standard_normal((1, 6, 5, 4)).astype(np.float32))
    with no_grad():
        assert blk(fine, coarse).shape == (1, 4, 9, 7)
    with pytest.raises(ValueError, match="expected 2 inputs"):
        blk(fine)


@pytest.mark.parametrize(("h", "w"), [(33, 31), (32, 48)])
def test_output_shape_any_size(h, w):
    model = segcore.build("refinenet", num_classes=4, **TINY, rng=np.random.default_rng(0)).eval()
    images, _ = make_batch(4, h=h, w=w)
    assert model(images).shape == (2, 4, h, w)


def test_sgd_step_lowers_loss_and_reaches_every_parameter():
    model = segcore.build("refinenet", num_classes=3, **TINY, rng=np.random.default_rng(0)).train()
    images, targets = make_batch(3)
    before = model.losses(images, targets)["loss"]
    model.zero_grad()
    before.backward()
    unreached = [n for n, p in model.named_parameters() if p.grad is None or not np.any(p.grad.numpy() != 0)]
    assert not unreached
    SGD(model.parameters(), lr=0.01).step()
    assert model.losses(images, targets)["loss"].item() < before.item()


def test_predict_and_contract():
    model = segcore.build("refinenet", num_classes=5, **TINY, rng=np.random.default_rng(0))
    images, _ = make_batch(5, n=2, h=37, w=30)
    labels = model.predict(images)
    assert all(m.shape == (37, 30) and m.dtype.kind == "i" and 0 <= m.min() and m.max() < 5 for m in labels)
    assert_is_semantic_segmentation_model(model, num_classes=5, input_size=(1, 3, 33, 32))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 3, "crp_blocks": 0}, ValueError, "crp_blocks"),
        ({"num_classes": 3, "output_stride": 64}, ValueError, "output_stride"),
        ({"num_classes": 3, "backbone": "resnet200"}, ValueError, "backbone"),
        ({"num_classes": None}, ValueError, "num_classes"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        segcore.build("refinenet", **kwargs)
