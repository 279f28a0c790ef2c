"""U-Net: the paper's 572 -> 388 sizes, overlap-tile mirroring (against np.pad), "same" padding for any size,
31,030,658 parameters by hand, training contract at tiny width."""

from __future__ import annotations

import math

import numpy as np
import pytest

import segcore
from segcore import registry
from segcore.nn import BatchNorm2d, Conv2d, ConvTranspose2d, Dropout
from segcore.optim import SGD
from segcore.testing import assert_is_semantic_segmentation_model


def build(seed: int = 0, **kwargs):
    kwargs = {"num_classes": 3, "width": 1 / 16, **kwargs}
    return registry.build("unet", rng=np.random.default_rng(seed), **kwargs)


def batch(n: int, h: int, w: int, k: int = 3, c: int = 3, seed: int = 1):
    g = np.random.default_rng(seed)
    labels = g.integers(0, k, size=(n, h, w))
    labels[g.random((n, h, w)) < 0.1] = 255
    return g.standard_normal((n, c, h, w)).astype(np.float32), labels.astype(np.int64)


def total_loss(model, x, y):
    for m in model.modules():
        if isinstance(m, Dropout):  # same masks for both evaluations
            m.rng = np.random.default_rng(7)
    loss = None
    for value in model.losses(x, y).values():
        loss = value if loss is None else loss + value
    return loss


def test_paper_parameter_count_by_hand():
    model = registry.build("unet", num_classes=2, in_channels=1, padding="valid", rng=np.random.default_rng(0))

    def conv(k, cin, cout):
        return k * k * cin * cout + cout

    down = conv(3, 1, 64) + conv(3, 64, 64)
    for c in (128, 256, 512, 1024):
        down += conv(3, c // 2, c) + conv(3, c, c)
    up = 0
    for c in (512, 256, 128, 64):
        up += conv(2, 2 * c, c) + conv(3, 2 * c, c) + conv(3, c, c)  # up-conv halves, concat doubles back
    expected = down + up + conv(1, 64, 2)
    assert sum(p.numel() for p in model.parameters()) == expected == 31_030_658
    assert [(u.in_channels, u.out_channels, u.kernel_size, u.stride) for u in model.upconvs] == [
        (c, c // 2, (2, 2), (2, 2)) for c in (1024, 512, 256, 128)
    ]
    # The paper's initialisation: N(0, 2 / N) with N = 9 * 64 inputs for a 64 -> 64 3x3 conv.
    w = model.encoder[0][2].weight.numpy()
    assert abs(w.std() / math.sqrt(2 / 576) - 1) < 0.02
    assert not np.any(model.encoder[0][2].bias.numpy())


def test_valid_padding_gives_the_papers_sizes_for_572():
    model = build(num_classes=2, in_channels=1, width=1 / 64, padding="valid")
    model.eval()
    x, _ = batch(1, 572, 572, c=1)
    features = model.forward_features(x)
    # Ronneberger et al. Fig. 1: 568, 280, 136, 64, bottom 28, then 52, 100, 196, 388.
    paper = [568, 280, 136, 64, 28, 52, 100, 196, 388, 388]
    assert [f.shape[-1] for f in features.values()] == paper
    assert [f.shape[-2] for f in features.values()] == paper
    assert list(features) == ["enc1", "enc2", "enc3", "enc4", "bottleneck", "dec4", "dec3", "dec2", "dec1", "logits"]
    assert [f.shape[1] for f in features.values()] == [1, 2, 4, 8, 16, 8, 4, 2, 1, 2]
    assert model.valid_sizes(572) == paper[:-1]
    assert model.tile_size(388) == (572, 92)


def test_invalid_tiles_are_rejected_with_nearest_sizes():
    model = build(padding="valid")
    x, _ = batch(1, 571, 30)
    with pytest.raises(ValueError, match="556 or 572"):
        model.forward_features(x)


@pytest.mark.parametrize("size", [(20, 27), (1, 5), (45, 33)])
def test_valid_forward_is_the_overlap_tile_of_the_mirrored_image(size):
    model = build(padding="valid")
    model.eval()
    x, _ = batch(1, *size)
    h, w = size
    (th, offset), (tw, _) = model.tile_size(h), model.tile_size(w)
    assert offset == 92
    # np.pad's reflect mode mirrors repeatedly when the pad exceeds the image, like the paper's extrapolation;
    # a 1-pixel axis mirrors onto itself.
    tile = np.pad(x, ((0, 0), (0, 0), (offset, th - h - offset), (0, 0)), mode="reflect" if h > 1 else "edge")
    tile = np.pad(tile, ((0, 0), (0, 0), (0, 0), (offset, tw - w - offset)), mode="reflect" if w > 1 else "edge")
    with segcore.no_grad():
        expected = model.forward_features(tile)["logits"].numpy()[:, :, :h, :w]
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("size", [(16, 16), (33, 47), (17, 64)])
def test_output_has_input_size(padding, size):
    model = build(padding=padding)
    model.eval()
    x, _ = batch(2, *size)
    assert model(x).shape == (2, 3, *size)


def test_same_padding_rejects_inputs_smaller_than_16():
    x, _ = batch(1, 15, 40)
    with pytest.raises(ValueError, match="at least 16"):
        build()(x)


@pytest.mark.parametrize("kwargs", [{"padding": "same"}, {"padding": "valid"}, {"batch_norm": True}])
def test_sgd_step_lowers_loss_and_every_parameter_gets_gradient(kwargs):
    model = build(**kwargs)
    x, y = batch(2, 33, 32)
    loss = total_loss(model, x, y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert np.any(p.grad.numpy() != 0), f"{name} got an all-zero gradient"
    SGD(model.parameters(), lr=0.01).step()
    assert total_loss(model, x, y).item() < loss.item()


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_contract_and_predict(padding):
    model = build(padding=padding)
    assert_is_semantic_segmentation_model(model, num_classes=3, input_size=(2, 3, 33, 34))
    x, _ = batch(2, 19, 40)
    labels = model.predict(x)
    assert len(labels) == 2 and all(a.shape == (19, 40) and a.dtype.kind == "i" for a in labels)


def test_batch_norm_variant_and_default_layout():
    model = build(batch_norm=True)
    convs = [m for m in model.modules() if isinstance(m, Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 18 and all(c.bias is None for c in convs)  # 2 per level: 5 down + 4 up
    assert sum(isinstance(m, BatchNorm2d) for m in model.modules()) == 18
    plain = build()
    assert not any(isinstance(m, BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, ConvTranspose2d) for m in plain.modules()) == 4
    assert plain.dropout.p == 0.5  # end of the contracting path
    x, _ = batch(1, 32, 32, c=1)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        plain(x)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"padding": "full"}, ValueError, "padding"),
        ({"depth": 0}, ValueError, "depth"),
        ({"width": 0}, ValueError, "width"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"in_channels": 0}, ValueError, "in_channels"),
        ({"batch_norm": "no"}, TypeError, "batch_norm"),
        ({"rng": 42}, TypeError, "rng"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        registry.build("unet", **kwargs)


def test_depth_is_configurable():
    model = build(depth=2, padding="valid")
    # Two levels: S -> S-4 -> /2 -> -4 -> /2 -> -4 (bottom) -> x2 -4 -> x2 -4; 60 -> 56, 24, 8, 12, 20.
    assert model.valid_sizes(60) == [56, 24, 8, 12, 20]
    model.eval()
    x, _ = batch(1, 20, 21)
    assert model(x).shape == (1, 3, 20, 21)
