"""GCN (Large Kernel Matters): k x 1 + 1 x k global convolution, boundary refinement, deconv decoder."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
from segcore.autograd import no_grad, tensor
from segcore.models.gcn import BoundaryRefinement, GlobalConvModule
from segcore.nn import init
from segcore.optim import SGD
from segcore.testing import assert_is_semantic_segmentation_model

TINY = dict(backbone="resnet18", width=0.125)


def make_batch(k: int, n: int = 2, h: int = 64, w: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, 3, h, w)).astype(np.float32)
    targets = rng.integers(0, k, size=(n, h, w))
    targets[rng.random((n, h, w)) < 0.1] = 255
    return images, targets.astype(np.int64)


def test_parameter_count_paper_configuration():
    k, size = 21, 15
    model = segcore.build("gcn", num_classes=k, rng=np.random.default_rng(0))
    resnet152 = 60_192_808 - (2048 * 1000 + 1000)

    def gcn(c: int) -> int:  # two branches, each (k x 1 or 1 x k) c -> K then K -> K, all with bias
        return 2 * (size * c * k + k) + 2 * (size * k * k + k)

    br = 2 * (9 * k * k + k)
    decoder = sum(gcn(c) for c in (2048, 1024, 512, 256)) + 9 * br + 5 * (16 * k * k)  # 9 BRs, 5 deconvs
    assert model.num_parameters() == resnet152 + decoder == 60_723_364


def test_global_conv_is_linear_with_a_k_by_k_footprint():
    rng = np.random.default_rng(0)
    module = GlobalConvModule(2, 3, 15, rng=rng)
    zero = np.zeros((1, 2, 31, 31), np.float32)
    impulse = zero.copy()
    impulse[0, 1, 15, 15] = 1.0
    with no_grad():
        base = module(tensor(zero)).numpy()
        response = module(tensor(impulse)).numpy() - base
        doubled = module(tensor(2 * impulse)).numpy() - base
    np.testing.assert_allclose(doubled, 2 * response, rtol=1e-5, atol=1e-6)  # no nonlinearity
    support = np.argwhere(np.abs(response[0]).max(axis=0) > 0)
    assert support.min(axis=0).tolist() == [8, 8] and support.max(axis=0).tolist() == [22, 22]  # 15 x 15 square
    assert module.left1.kernel_size == (15, 1) and module.left2.kernel_size == (1, 15)
    assert module.right1.kernel_size == (1, 15) and module.right2.kernel_size == (15, 1)


def test_boundary_refinement_is_residual():
    rng = np.random.default_rng(0)
    br = BoundaryRefinement(3, rng=rng)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    init.zeros_(br.conv2.weight)
    init.zeros_(br.conv2.bias)
    with no_grad():
        np.testing.assert_array_equal(br(tensor(x)).numpy(), x)


def test_upsamplers_start_as_bilinear_x2():
    model = segcore.build("gcn", num_classes=3, **TINY, rng=np.random.default_rng(0))
    kernel = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25])
    for up in [*model.up.values(), *model.final_up]:
        assert up.stride == (2, 2) and up.padding == (1, 1) and up.bias is None
        w = up.weight.numpy()
        for i in range(3):
            for j in range(3):
                np.testing.assert_allclose(w[i, j], kernel if i == j else 0.0)
    assert list(model.up.keys()) == ["res4", "res3", "res2"]


@pytest.mark.parametrize(("output_stride", "ups"), [(16, ["res3", "res2"]), (8, ["res2"])])
def test_dilated_backbone_drops_upsamplers_between_equal_resolutions(output_stride, ups):
    model = segcore.build("gcn", num_classes=3, output_stride=output_stride, **TINY, rng=np.random.default_rng(0))
    assert list(model.up.keys()) == ups and model.size_multiple == output_stride
    h, w = 3 * output_stride, 5 * output_stride  # odd multiples of the stride
    images, _ = make_batch(3, n=1, h=h, w=w)
    assert model.eval()(images).shape == (1, 3, h, w)


@pytest.mark.parametrize(("h", "w"), [(64, 32), (32, 96)])
def test_output_shape_multiples_of_32(h, w):
    model = segcore.build("gcn", num_classes=4, **TINY, rng=np.random.default_rng(0)).eval()
    images, _ = make_batch(4, h=h, w=w)
    assert model(images).shape == (2, 4, h, w)


@pytest.mark.parametrize(("h", "w"), [(48, 64), (33, 32)])
def test_other_sizes_are_refused_with_a_clear_error(h, w):
    model = segcore.build("gcn", num_classes=4, **TINY, rng=np.random.default_rng(0)).eval()
    images, _ = make_batch(4, n=1, h=h, w=w)
    with pytest.raises(ValueError, match=rf"divisible by 32, got {h}x{w}"):
        model(images)


def test_sgd_step_lowers_loss_and_reaches_every_parameter():
    model = segcore.build("gcn", num_classes=3, **TINY, rng=np.random.default_rng(0)).train()
    images, targets = make_batch(3)
    before = model.losses(images, targets)["loss"]
    model.zero_grad()
    before.backward()
    unreached = [n for n, p in model.named_parameters() if p.grad is None or not np.any(p.grad.numpy() != 0)]
    assert not unreached
    SGD(model.parameters(), lr=0.01).step()
    assert model.losses(images, targets)["loss"].item() < before.item()


def test_predict_and_contract():
    model = segcore.build("gcn", num_classes=5, **TINY, rng=np.random.default_rng(0))
    images, _ = make_batch(5, n=2, h=32, w=64)
    labels = model.predict(images)
    assert all(m.shape == (32, 64) and m.dtype.kind == "i" and 0 <= m.min() and m.max() < 5 for m in labels)
    assert_is_semantic_segmentation_model(model, num_classes=5, input_size=(2, 3, 64, 32))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 3, "kernel_size": 14}, ValueError, "kernel_size"),
        ({"num_classes": 3, "output_stride": 4}, ValueError, "output_stride"),
        ({"num_classes": 3, "width": float("nan")}, ValueError, "width"),
        ({"num_classes": 0}, ValueError, "num_classes"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        segcore.build("gcn", **kwargs)
