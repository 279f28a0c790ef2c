"""DeepLab v2: ResNet-101 at output stride 8 + ASPP-L (four atrous classifiers, summed)."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
from segcore.autograd import no_grad, tensor
from segcore.models.aspp import ASPPv2
from segcore.nn import Dropout, init
from segcore.optim import SGD
from segcore.testing import assert_is_semantic_segmentation_model

TINY = dict(backbone="resnet18", width=0.125)


def make_batch(k: int, n: int = 2, h: int = 33, w: int = 31, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, 3, h, w)).astype(np.float32)
    targets = rng.integers(0, k, size=(n, h, w))
    targets[rng.random((n, h, w)) < 0.1] = 255
    return images, targets.astype(np.int64)


def summed_losses(model, images, targets):
    for module in model.modules():
        if isinstance(module, Dropout):
            module.rng = np.random.default_rng(0)
    total = None
    for value in model.losses(images, targets).values():
        total = value if total is None else total + value
    return total


def test_parameter_count_paper_configuration():
    model = segcore.build("deeplabv2", num_classes=21, rng=np.random.default_rng(0))
    # ResNet-101 without its ImageNet fc (44,549,160 - 2048*1000 - 1000) + four 3x3 classifiers 2048->21 with bias.
    expected = (44_549_160 - 2_049_000) + 4 * (2048 * 21 * 9 + 21)
    assert model.num_parameters() == expected == 44_048_532


def test_paper_configuration():
    model = segcore.build("deeplabv2", num_classes=21, **TINY, rng=np.random.default_rng(0))
    assert model.backbone.feature_strides["res5"] == 8
    assert [c.dilation[0] for c in model.classifier.convs] == [6, 12, 18, 24]
    assert [c.padding[0] for c in model.classifier.convs] == [6, 12, 18, 24]
    keys = [k for k in model.state_dict() if not k.startswith("backbone.")]
    assert keys == [f"classifier.convs.{i}.{p}" for i in range(4) for p in ("weight", "bias")]
    assert model.aux_classifier is None


def test_branches_are_summed():
    # Switching off all branches but one leaves that branch's scores; the four single-branch outputs add up to
    # the full output (the fusion of ASPP-L is a sum, not a concatenation or a max).
    rng = np.random.default_rng(0)
    aspp = ASPPv2(6, 3, rng=rng)
    for conv in aspp.convs:
        init.normal_(conv.bias, 0.0, 0.1, rng=rng)
    x = tensor(rng.standard_normal((2, 6, 13, 11)).astype(np.float32))
    with no_grad():
        full = aspp(x).numpy()
        state = {k: v.numpy().copy() for k, v in aspp.state_dict().items()}
        singles = []
        for keep in range(4):
            off = {k: (v if k.startswith(f"convs.{keep}.") else np.zeros_like(v)) for k, v in state.items()}
            aspp.load_state_dict(off)
            singles.append(aspp(x).numpy())
    assert full.shape == (2, 3, 13, 11)
    np.testing.assert_allclose(sum(singles), full, rtol=1e-5, atol=1e-6)
    assert all(np.abs(s).max() > 0 for s in singles)


def test_classifier_initialisation_is_caffe_gaussian():
    aspp = ASPPv2(2048, 21, rng=np.random.default_rng(0))
    w = aspp.convs[0].weight.numpy()
    assert abs(w.std() - 0.01) < 0.0005 and np.all(aspp.convs[0].bias.numpy() == 0)


@pytest.mark.parametrize(("h", "w"), [(33, 31), (40, 24)])
def test_output_shape_any_size(h, w):
    model = segcore.build("deeplabv2", num_classes=4, **TINY, rng=np.random.default_rng(0)).eval()
    images, _ = make_batch(4, h=h, w=w)
    assert model(images).shape == (2, 4, h, w)


def test_sgd_step_lowers_loss_and_reaches_every_parameter():
    model = segcore.build("deeplabv2", num_classes=3, **TINY, rng=np.random.default_rng(0)).train()
    images, targets = make_batch(3)
    before = summed_losses(model, images, targets)
    model.zero_grad()
    before.backward()
    unreached = [n for n, p in model.named_parameters() if p.grad is None or not np.any(p.grad.numpy() != 0)]
    assert not unreached
    SGD(model.parameters(), lr=0.01).step()
    assert summed_losses(model, images, targets).item() < before.item()


def test_predict_and_contract():
    model = segcore.build("deeplabv2", num_classes=5, **TINY, rng=np.random.default_rng(0))
    images, _ = make_batch(5, n=3, h=29, w=34)
    labels = model.predict(images)
    assert len(labels) == 3
    assert all(m.shape == (29, 34) and m.dtype.kind == "i" and 0 <= m.min() and m.max() < 5 for m in labels)
    assert_is_semantic_segmentation_model(model, num_classes=5, input_size=(1, 3, 33, 32))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": -1}, ValueError, "num_classes"),
        ({"num_classes": 3, "output_stride": 12}, ValueError, "output_stride"),
        ({"num_classes": 3, "atrous_rates": ()}, ValueError, "atrous_rates"),
        ({"num_classes": 3, "backbone": "resnet"}, ValueError, "backbone"),
        ({"num_classes": 3, "width": -1.0}, ValueError, "width"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        segcore.build("deeplabv2", **kwargs)
