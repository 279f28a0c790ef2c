"""DeepLab v1 LargeFOV: output stride 8, aligned bilinear upsampling, paper parameter count, training contract."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
from segcore import registry
from segcore.nn import Dropout
from segcore.optim import SGD
from segcore.testing import assert_is_semantic_segmentation_model


def build(seed: int = 0, **kwargs):
    kwargs = {"num_classes": 3, "width": 1 / 16, **kwargs}
    return registry.build("deeplabv1", rng=np.random.default_rng(seed), **kwargs)


def batch(n: int, h: int, w: int, k: int = 3, seed: int = 1):
    g = np.random.default_rng(seed)
    labels = g.integers(0, k, size=(n, h, w))
    labels[g.random((n, h, w)) < 0.1] = 255
    return g.standard_normal((n, 3, h, w)).astype(np.float32), labels.astype(np.int64)


def total_loss(model, x, y):
    for m in model.modules():
        if isinstance(m, Dropout):  # same masks for both evaluations
            m.rng = np.random.default_rng(7)
    terms = model.losses(x, y)
    loss = None
    for value in terms.values():
        loss = value if loss is None else loss + value
    return loss


@pytest.mark.parametrize("size", [(1, 1), (32, 32), (33, 47), (41, 30)])
def test_output_has_input_size(size):
    model = build()
    model.eval()
    x, _ = batch(2, *size)
    assert model(x).shape == (2, 3, *size)


def test_logits_are_stride_8_and_aligned_with_the_input_grid():
    model = build(width=1 / 32)
    model.eval()
    x, _ = batch(1, 321, 81)
    with segcore.no_grad():
        coarse = model.classifier(model.backbone(segcore.tensor(x))["fc7"]).numpy()
        full = model(x).numpy()
    # DeepLab's 8k + 1 sizes: (321 - 1) / 8 + 1 = 41 logits, and pixel 8i of the output is logit i exactly.
    assert coarse.shape[-2:] == (41, 11)
    np.testing.assert_allclose(full[:, :, ::8, ::8], coarse, rtol=1e-5, atol=1e-5)
    # Half-way between two logits is their mean (bilinear).
    midpoints = (coarse[:, :, :-1] + coarse[:, :, 1:]) / 2
    np.testing.assert_allclose(full[:, :, 4:-4:8, ::8], midpoints, rtol=1e-4, atol=1e-5)


def test_sgd_step_lowers_loss_and_every_parameter_gets_gradient():
    model = build()
    x, y = batch(2, 33, 30)
    loss = total_loss(model, x, y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert np.any(p.grad.numpy() != 0), f"{name} got an all-zero gradient"
    SGD(model.parameters(), lr=0.1).step()
    assert total_loss(model, x, y).item() < loss.item()


def test_contract_and_predict():
    model = build()
    assert_is_semantic_segmentation_model(model, num_classes=3, input_size=(2, 3, 31, 34))
    x, _ = batch(2, 30, 27)
    labels = model.predict(x)
    assert len(labels) == 2 and all(a.shape == (30, 27) and a.dtype.kind == "i" for a in labels)


def test_dropout_after_fc6_and_fc7_only_in_training():
    model = build()
    drops = [m for m in model.modules() if isinstance(m, Dropout)]
    assert [d.p for d in drops] == [0.5, 0.5]
    assert model.backbone.classifier[2] is drops[0] and model.backbone.classifier[5] is drops[1]
    x, _ = batch(1, 24, 24)
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())
    model.train()
    assert not np.allclose(model(x).numpy(), model(x).numpy())


def test_paper_parameter_count():
    model = registry.build("deeplabv1", rng=np.random.default_rng(0))  # paper configuration: 21 VOC classes
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    convs += [(256, 512)] + [(512, 512)] * 5
    expected = sum(9 * a * b + b for a, b in convs)
    expected += 9 * 512 * 1024 + 1024  # fc6: 3x3, dilation 12
    expected += 1024 * 1024 + 1024  # fc7: 1x1
    expected += 1024 * 21 + 21  # fc8
    assert sum(p.numel() for p in model.parameters()) == expected == 20_505_429
    assert round(expected / 1e6, 1) == 20.5  # the paper's Table 2 ("DeepLab-LargeFOV ... 20.5M")
    assert model.backbone.classifier[0].dilation == (12, 12)
    assert model.backbone.feature_strides["fc7"] == 8


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"width": -1}, ValueError, "width"),
        ({"num_classes": 1.5}, ValueError, "num_classes"),
        ({"fc6_dilation": 0}, ValueError, "fc6_dilation"),
        ({"dropout": 2}, ValueError, "dropout"),
        ({"rng": "seed"}, TypeError, "rng"),
        ({"output_stride": 16}, TypeError, "output_stride"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        registry.build("deeplabv1", **kwargs)
