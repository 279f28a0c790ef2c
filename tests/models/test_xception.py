"""Aligned Xception-65: parameter count by hand, separable-conv layout, residual units, dilation, features."""

from __future__ import annotations

import numpy as np
import pytest

import segcore
import segcore.functional as F
from segcore.models.backbones.xception import SeparableConv2d, Xception65, XceptionBlock, xception65
from segcore.registry import build_backbone


def images(n=2, h=65, w=47, seed=0, c=3):
    return segcore.tensor(np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32))


def ceil_div(size: int, stride: int) -> int:
    return -(-size // stride)


# Per-layer parameter formulas (no conv biases: every conv is followed by BN with weight and bias).
def conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k


def bn(c: int) -> int:
    return 2 * c


def sep(cin: int, cout: int) -> int:
    """Depthwise 3x3 + BN + pointwise 1x1 + BN."""
    return conv(1, 1, 3) * cin + bn(cin) + conv(cin, cout, 1) + bn(cout)


def block(cin: int, c1: int, c2: int, c3: int, shortcut: bool) -> int:
    return sep(cin, c1) + sep(c1, c2) + sep(c2, c3) + (conv(cin, c3, 1) + bn(c3) if shortcut else 0)


def test_parameter_count_equals_the_hand_sum_of_fig_4():
    stem = conv(3, 32, 3) + bn(32) + conv(32, 64, 3) + bn(64)
    entry = block(64, 128, 128, 128, True) + block(128, 256, 256, 256, True) + block(256, 728, 728, 728, True)
    middle = 16 * block(728, 728, 728, 728, False)
    exit_ = block(728, 728, 1024, 1024, True) + block(1024, 1536, 1536, 2048, False)
    expected = stem + entry + middle + exit_
    assert (stem, entry, middle, exit_) == (19_488, 1_716_752, 25_893_504, 10_237_568)
    assert expected == 37_867_312  # ~37.9M without classifier; DeepLabv3+ adds its ~3.2M head on top
    assert sum(p.numel() for p in xception65().parameters()) == expected


def test_width_multiplier_rounds_channels_to_multiples_of_8():
    net = xception65(width=0.25, middle_blocks=1)
    # 32, 64, 128, 256, 728, 1024, 1536, 2048 times 0.25, rounded to the nearest multiple of 8 (182 -> 184).
    assert net.stem[0].out_channels == 8 and net.stem[3].out_channels == 16
    assert [b.out_channels for b in net.entry_flow] == [32, 64, 184]
    assert [c.out_channels for c in net.exit_flow[1].convs] == [384, 384, 512]
    assert dict(net.feature_channels) == {
        "stem": 16, "low_level": 64, "entry_flow": 184, "middle_flow": 184, "exit_flow": 512,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("output_stride", "strides"),
    [(32, (2, 4, 16, 16, 32)), (16, (2, 4, 16, 16, 16)), (8, (2, 4, 8, 8, 8))],
)
def test_features_have_the_advertised_shapes_for_odd_sizes(output_stride, strides):
    net = xception65(width=0.0625, output_stride=output_stride, middle_blocks=2, rng=np.random.default_rng(0))
    assert tuple(net.feature_strides.values()) == strides
    out = net(images(1, 65, 47))
    assert list(out) == ["stem", "low_level", "entry_flow", "middle_flow", "exit_flow"]
    for name, stride in zip(out, strides):
        # Every strided conv is 3x3 with padding 1 (or 1x1 without): H becomes ceil(H / 2).
        assert out[name].shape == (1, net.feature_channels[name], ceil_div(65, stride), ceil_div(47, stride)), name


def _dilations(blocks) -> list[int]:
    return [b.convs[0].depthwise.dilation[0] for b in blocks]


@pytest.mark.parametrize(
    ("output_stride", "entry", "middle", "exit_", "strided"),
    [
        # A block that loses its stride keeps the current dilation; later blocks use it times 2.
        (32, [1, 1, 1], 1, [1, 1], ["entry_flow.0", "entry_flow.1", "entry_flow.2", "exit_flow.0"]),
        (16, [1, 1, 1], 1, [1, 2], ["entry_flow.0", "entry_flow.1", "entry_flow.2"]),
        (8, [1, 1, 1], 2, [2, 4], ["entry_flow.0", "entry_flow.1"]),
    ],
)
def test_output_stride_replaces_strides_by_dilation(output_stride, entry, middle, exit_, strided):
    net = xception65(width=0.0625, output_stride=output_stride, middle_blocks=3)
    assert _dilations(net.entry_flow) == entry
    assert _dilations(net.middle_flow) == [middle] * 3
    assert _dilations(net.exit_flow) == exit_
    found = sorted(
        name.rsplit(".convs", 1)[0]
        for name, m in net.named_modules()
        if isinstance(m, SeparableConv2d) and m.depthwise.stride == (2, 2)
    )
    assert found == strided
    # Only the third separable conv strides, and the 1x1 shortcut strides with it.
    for name in strided:
        flow, index = name.split(".")
        blk = getattr(net, flow)[int(index)]
        assert [c.depthwise.stride for c in blk.convs] == [(1, 1), (1, 1), (2, 2)]
        assert blk.shortcut[0].stride == (2, 2)
    # Padding equals dilation in every depthwise conv, so stride-1 convs keep the size.
    assert all(
        m.depthwise.padding == m.depthwise.dilation for m in net.modules() if isinstance(m, SeparableConv2d)
    )


def _batch_norm(x: np.ndarray) -> np.ndarray:
    # Fresh BN in training mode: batch statistics (biased variance), weight 1, bias 0.
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5)


def _depthwise3x3(x: np.ndarray, w: np.ndarray, dilation: int) -> np.ndarray:
    n, c, h, wd = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (dilation, dilation), (dilation, dilation)))
    out = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            patch = padded[:, :, i * dilation : i * dilation + h, j * dilation : j * dilation + wd]
            out += patch * w[None, :, 0, i, j, None, None]
    return out


@pytest.mark.parametrize("activation", [True, False])
def test_separable_conv_is_depthwise_bn_relu_pointwise_bn(activation):
    layer = SeparableConv2d(4, 6, dilation=2, activation=activation, rng=np.random.default_rng(0))
    x = images(2, 7, 6, c=4).numpy().astype(np.float64)
    hidden = np.maximum(_batch_norm(_depthwise3x3(x, layer.depthwise.weight.numpy(), 2)), 0)
    out = _batch_norm(np.einsum("oc,nchw->nohw", layer.pointwise.weight.numpy()[:, :, 0, 0], hidden))
    expected = np.maximum(out, 0) if activation else out
    got = layer(segcore.tensor(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    assert (got.min() >= 0) == activation


def test_residual_units_are_pre_activated_with_a_clean_shortcut():
    net = xception65(width=0.0625, middle_blocks=1, rng=np.random.default_rng(0))
    x = net.stem(images(2, 33, 31))
    entry = net.entry_flow[0]
    assert [c.activation for c in entry.convs] == [True, True, False]
    branch = entry.convs(F.relu(x)).numpy()
    np.testing.assert_allclose(entry(x).numpy(), branch + entry.shortcut(x).numpy(), atol=1e-6)

    h = net.entry_flow(x)
    assert h.numpy().min() < 0  # the sum is passed on un-rectified: the next block's ReLU comes first
    middle = net.middle_flow[0]
    np.testing.assert_allclose(middle(h).numpy(), middle.convs(F.relu(h)).numpy() + h.numpy(), atol=1e-6)

    # The last exit block has no shortcut: all three separable convs end in ReLU, the input is used as is.
    last = net.exit_flow[1]
    assert last.skip == "none" and "shortcut" not in last._modules
    assert [c.activation for c in last.convs] == [True, True, True]
    g = net.exit_flow[0](net.middle_flow(h))
    np.testing.assert_allclose(last(g).numpy(), last.convs(g).numpy(), atol=1e-6)


def test_low_level_feature_is_the_second_conv_of_entry_block_2():
    net = xception65(width=0.0625, middle_blocks=1, rng=np.random.default_rng(0))
    x = images(2, 33, 31)
    block2 = net.entry_flow[1]
    expected = block2.convs[1](block2.convs[0](F.relu(net.entry_flow[0](net.stem(x)))))
    low = net(x)["low_level"].numpy()
    np.testing.assert_allclose(low, expected.numpy(), atol=1e-6)
    assert low.min() >= 0  # second conv ends in ReLU


def test_a_backward_pass_reaches_every_parameter():
    net = xception65(width=0.0625, output_stride=16, rng=np.random.default_rng(0))
    out = net(images(2, 33, 31))
    loss = F.mean(out["exit_flow"] * out["exit_flow"]) + F.mean(out["low_level"])
    loss.backward()
    silent = [n for n, p in net.named_parameters() if p.grad is None or not np.any(p.grad.numpy())]
    assert silent == []


def test_registered_and_built_by_name():
    assert "xception65" in [spec.name for spec in segcore.list_backbones()]
    net = build_backbone("xception65", width=0.0625, output_stride=8, middle_blocks=1)
    assert isinstance(net, Xception65) and net.feature_strides["exit_flow"] == 8


def test_bad_arguments_name_the_argument_and_value():
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\), got 4"):
        xception65(output_stride=4)
    with pytest.raises(ValueError, match=r"width must be a positive number .* got -1"):
        xception65(width=-1)
    with pytest.raises(ValueError, match=r"middle_blocks must be an int >= 0 \(16 in the paper\), got -1"):
        xception65(middle_blocks=-1)
    with pytest.raises(ValueError, match=r"identity shortcut needs stride 1 and in_channels == channels\[-1\]"):
        XceptionBlock(8, (16, 16, 16), skip="sum")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, H, W\), got \(1, 1, 8, 8\)"):
        xception65(width=0.0625, middle_blocks=0)(images(1, 8, 8, c=1))
