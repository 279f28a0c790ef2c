"""DeconvNet: the paper's Table 1 sizes, unpooling with the switches, input-size errors, 252M parameters by
hand, training contract at tiny width."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
from segcore import registry
from segcore.nn import BatchNorm2d, Conv2d, ConvTranspose2d
from segcore.optim import SGD
from segcore.testing import assert_is_semantic_segmentation_model


def build(seed: int = 0, **kwargs):
    kwargs = {"num_classes": 3, "width": 1 / 64, **kwargs}
    return registry.build("deconvnet", rng=np.random.default_rng(seed), **kwargs)


def batch(n: int, h: int, w: int, k: int = 3, seed: int = 1):
    g = np.random.default_rng(seed)
    labels = g.integers(0, k, size=(n, h, w))
    labels[g.random((n, h, w)) < 0.1] = 255
    return g.standard_normal((n, 3, h, w)).astype(np.float32), labels.astype(np.int64)


def total_loss(model, x, y):
    loss = None
    for value in model.losses(x, y).values():
        loss = value if loss is None else loss + value
    return loss


@pytest.mark.parametrize("size", [(224, 224), (224, 256)])
def test_output_has_input_size(size):
    model = build()
    model.eval()
    x, _ = batch(1, *size)
    assert model(x).shape == (1, 3, *size)


@pytest.mark.parametrize(
    "size, match", [((225, 224), "divisible by 32"), ((224, 250), "divisible by 32"), ((192, 224), "at least 224")]
)
def test_bad_input_sizes_are_rejected(size, match):
    model = build()
    x, _ = batch(1, *size)
    with pytest.raises(ValueError, match=match):
        model(x)


def test_table_1_sizes():
    # Noh et al. Table 1 for a 224x224 input: pool5 7x7, fc6/fc7 1x1, deconv-fc6 7x7, unpool5..1 14..224.
    model = build()
    model.eval()
    x, _ = batch(1, 224, 224)
    with segcore.no_grad():
        features, switches = model.backbone.forward_with_switches(segcore.tensor(x))
        assert features["pool5"].shape[-2:] == (7, 7)
        fc6 = model.fc6(features["pool5"])
        fc7 = model.fc7(fc6)
        deconv = model.deconv_fc6(fc7)
    assert (fc6.shape[1:], fc7.shape[1:], deconv.shape[1:]) == ((64, 1, 1), (64, 1, 1), (8, 7, 7))
    assert [size for _, size in reversed(switches)] == [(14, 14), (28, 28), (56, 56), (112, 112), (224, 224)]
    outs = [[m.out_channels for m in stage if isinstance(m, ConvTranspose2d)] for stage in model.decoder]
    # Table 1's deconv channels (512 512 512 | 512 512 256 | ... at full width) divided by 64.
    assert outs == [[8, 8, 8], [8, 8, 4], [4, 4, 2], [2, 1], [1, 1]]


def test_sgd_step_lowers_loss_and_every_parameter_gets_gradient():
    model = build()
    x, y = batch(2, 224, 224)
    loss = total_loss(model, x, y)
    loss.backward()
    # Every conv/deconv is followed by BatchNorm, which cancels a constant: those biases get exactly zero.
    convs = [name for name, m in model.named_modules() if isinstance(m, (Conv2d, ConvTranspose2d))]
    zero_by_design = {f"{name}.bias" for name in convs if name != "classifier"}
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        if name not in zero_by_design:
            assert np.any(p.grad.numpy() != 0), f"{name} got an all-zero gradient"
    # Unpooling moves values when a pooling argmax flips, so the loss jumps a little under any step; a step
    # of this size makes the descent dominate those jumps.
    SGD(model.parameters(), lr=0.1).step()
    assert total_loss(model, x, y).item() < loss.item()


def test_contract_and_predict():
    model = build()
    assert_is_semantic_segmentation_model(model, num_classes=3, input_size=(2, 3, 224, 224))
    x, _ = batch(1, 256, 224)
    labels = model.predict(x)
    assert len(labels) == 1 and labels[0].shape == (256, 224) and labels[0].dtype.kind == "i"


def conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def test_paper_parameter_count():
    model = registry.build("deconvnet", rng=np.random.default_rng(0))  # paper configuration: 21 VOC classes
    encoder = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    encoder += [(256, 512)] + [(512, 512)] * 5
    decoder = [(512, 512)] * 5 + [(512, 256), (256, 256), (256, 256), (256, 128), (128, 128), (128, 64)]
    decoder += [(64, 64), (64, 64)]
    expected = sum(conv(3, a, b) for a, b in encoder + decoder)
    expected += conv(7, 512, 4096) + conv(1, 4096, 4096) + conv(7, 4096, 512) + conv(1, 64, 21)
    # BatchNorm (weight and bias) after each of the 13 convs, fc6, fc7, deconv-fc6 and the 13 deconvs.
    expected += 2 * (sum(b for _, b in encoder + decoder) + 4096 + 4096 + 512)
    assert sum(p.numel() for p in model.parameters()) == expected == 251_805_653
    assert round(expected / 1e6) == 252  # the paper's "252M"
    assert sum(isinstance(m, BatchNorm2d) for m in model.modules()) == 13 + 2 + 1 + 13
    assert "backbone.features.40.weight" in model.state_dict()  # torchvision vgg16_bn layout


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"width": 0}, ValueError, "width"),
        ({"num_classes": -2}, ValueError, "num_classes"),
        ({"rng": np.random.RandomState(0)}, TypeError, "rng"),
        ({"dropout": 0.5}, TypeError, "dropout"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        registry.build("deconvnet", **kwargs)
