"""SegNet and SegNet-Basic: unpooling with the encoder's switches (checked against a NumPy re-implementation),
no learned upsampling, odd sizes, parameter counts by hand, training contract at tiny width."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
from segcore import registry
from segcore.nn import BatchNorm2d, Conv2d, ConvTranspose2d, ReLU, Upsample
from segcore.optim import SGD
from segcore.testing import assert_is_semantic_segmentation_model


def build(name: str, seed: int = 0, **kwargs):
    kwargs = {"num_classes": 3, "width": 1 / 16 if name == "segnet" else 1 / 8, **kwargs}
    return registry.build(name, rng=np.random.default_rng(seed), **kwargs)


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


def biases_before_batchnorm(model) -> set[str]:
    """Conv biases directly followed by BatchNorm: BN removes any constant, so their gradient is exactly 0."""
    names = set()
    for prefix, module in model.named_modules():
        children = list(module.named_children()) if hasattr(module, "named_children") else []
        for (name, a), (_, b) in zip(children, children[1:]):
            if isinstance(a, (Conv2d, ConvTranspose2d)) and isinstance(b, BatchNorm2d) and a.bias is not None:
                names.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return names


def unpool_reference(pre_pool: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """Max-unpooling written out: each value goes to the argmax (first in row-major order) of its 2x2 window."""
    n, c, h, w = pooled.shape
    windows = pre_pool[:, :, : 2 * h, : 2 * w].reshape(n, c, h, 2, w, 2).transpose(0, 1, 2, 4, 3, 5)
    arg = windows.reshape(n, c, h, w, 4).argmax(-1)
    out = np.zeros(pre_pool.shape, pooled.dtype)
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for b in range(n):
        for ch in range(c):
            out[b, ch, 2 * ii + arg[b, ch] // 2, 2 * jj + arg[b, ch] % 2] = pooled[b, ch]
    return out


@pytest.mark.parametrize("name", ["segnet", "segnet_basic"])
@pytest.mark.parametrize("size", [(32, 32), (33, 47), (35, 64)])
def test_output_has_input_size(name, size):
    model = build(name)
    model.eval()
    x, _ = batch(2, *size)
    assert model(x).shape == (2, 3, *size)


@pytest.mark.parametrize("name, smallest", [("segnet", 32), ("segnet_basic", 16)])
def test_too_small_inputs_are_rejected(name, smallest):
    model = build(name)
    x, _ = batch(1, smallest - 1, 40)
    with pytest.raises(ValueError, match=f"at least {smallest}x{smallest}"):
        model(x)


@pytest.mark.parametrize("name", ["segnet", "segnet_basic"])
def test_sgd_step_lowers_loss_and_every_parameter_gets_gradient(name):
    model = build(name)
    x, y = batch(2, 33, 32)
    loss = total_loss(model, x, y)
    loss.backward()
    zero_by_design = biases_before_batchnorm(model)
    if name == "segnet":
        assert "backbone.features.0.bias" in zero_by_design and "decoder.0.0.bias" in zero_by_design
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        if pname not in zero_by_design:
            assert np.any(p.grad.numpy() != 0), f"{pname} got an all-zero gradient"
    # Unpooling moves values when a pooling argmax flips, so the loss jumps a little under any step; a step
    # of this size makes the descent dominate those jumps.
    SGD(model.parameters(), lr=0.1).step()
    assert total_loss(model, x, y).item() < loss.item()


@pytest.mark.parametrize("name", ["segnet", "segnet_basic"])
def test_contract_and_predict(name):
    model = build(name)
    assert_is_semantic_segmentation_model(model, num_classes=3, input_size=(2, 3, 33, 34))
    x, _ = batch(2, 37, 32)
    labels = model.predict(x)
    assert len(labels) == 2 and all(a.shape == (37, 32) and a.dtype.kind == "i" for a in labels)


def test_segnet_decoder_unpools_with_the_encoder_switches():
    model = build("segnet")
    model.eval()
    x, _ = batch(1, 37, 45)
    assert not any(isinstance(m, (ConvTranspose2d, Upsample)) for m in model.modules())  # nothing learned
    with segcore.no_grad():
        features = model.backbone(segcore.tensor(x))
        y = features["pool5"].numpy()
        for stage, decoder in zip(range(5, 0, -1), model.decoder):
            sparse = unpool_reference(features[f"conv{stage}"].numpy(), y)
            y = decoder(segcore.tensor(sparse)).numpy()
        expected = model.classifier(segcore.tensor(y)).numpy()
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_segnet_basic_decoder_unpools_with_the_encoder_switches():
    model = build("segnet_basic")
    model.eval()
    x, _ = batch(1, 19, 33)
    with segcore.no_grad():
        h, pre = segcore.tensor(x), []
        for encoder in model.encoder:
            h = encoder(h)
            pre.append(h.numpy())
            h = segcore.functional.max_pool2d(h, 2)
        y = h.numpy()
        for decoder, before in zip(model.decoder, reversed(pre)):
            y = decoder(segcore.tensor(unpool_reference(before, y))).numpy()
        expected = model.classifier(segcore.tensor(y)).numpy()
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-4, atol=1e-5)


def conv(k: int, cin: int, cout: int, bias: bool = True) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def test_segnet_paper_parameter_count_and_layout():
    model = registry.build("segnet", rng=np.random.default_rng(0))  # paper configuration: 11 CamVid classes
    encoder = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    encoder += [(256, 512)] + [(512, 512)] * 5
    # The decoder mirrors it: 512x3 | 512, 512, 256 | 256, 256, 128 | 128, 64 | 64, then conv1_1_D -> classes.
    decoder = [(512, 512)] * 5 + [(512, 256), (256, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64)]
    bn = 2 * sum(b for _, b in encoder + decoder)
    expected = sum(conv(3, a, b) for a, b in encoder + decoder) + bn + conv(3, 64, 11)
    assert sum(p.numel() for p in model.parameters()) == expected == 29_449_355
    # The paper quotes 29.5M (its rounding is not stated); within 0.5% rules out a missing or extra layer.
    assert abs(expected - 29.5e6) < 0.005 * 29.5e6
    assert list(model.state_dict())[:7] == [
        "backbone.features.0.weight", "backbone.features.0.bias", "backbone.features.1.weight",
        "backbone.features.1.bias", "backbone.features.1.running_mean", "backbone.features.1.running_var",
        "backbone.features.1.num_batches_tracked",
    ]  # fmt: skip
    assert "backbone.features.40.weight" in model.state_dict()  # torchvision vgg16_bn's conv5_3


def test_segnet_basic_paper_parameter_count_and_layout():
    model = registry.build("segnet_basic", rng=np.random.default_rng(0))
    # 4 + 4 7x7 convs without bias (64 channels), 8 BNs, 1x1 classifier to 11 classes.
    expected = conv(7, 3, 64, False) + 7 * conv(7, 64, 64, False) + 8 * 2 * 64 + conv(1, 64, 11)
    assert sum(p.numel() for p in model.parameters()) == expected == 1_416_075
    for block in model.encoder:
        assert [type(m) for m in block] == [Conv2d, BatchNorm2d, ReLU]
    for block in model.decoder:
        assert [type(m) for m in block] == [Conv2d, BatchNorm2d]  # no ReLU in the decoder
    convs = [m for block in (*model.encoder, *model.decoder) for m in block if isinstance(m, Conv2d)]
    assert len(convs) == 8 and all(m.bias is None and m.kernel_size == (7, 7) for m in convs)


@pytest.mark.parametrize(
    "name, kwargs, error, match",
    [
        ("segnet", {"width": 0}, ValueError, "width"),
        ("segnet", {"num_classes": 0}, ValueError, "num_classes"),
        ("segnet", {"rng": 1}, TypeError, "rng"),
        ("segnet", {"channels": 32}, TypeError, "channels"),
        ("segnet_basic", {"channels": 0}, ValueError, "channels"),
        ("segnet_basic", {"in_channels": -1}, ValueError, "in_channels"),
        ("segnet_basic", {"width": float("nan")}, ValueError, "width"),
    ],
)
def test_bad_arguments(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        registry.build(name, **kwargs)
