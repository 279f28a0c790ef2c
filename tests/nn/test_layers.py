"""Layers: outputs against independent NumPy computations and the functional ops, state updates, training."""

import math

import numpy as np
import pytest
from scipy.special import erf

import segcore
import segcore.functional as F
from segcore import nn
from segcore.nn import init
from segcore.testing import gradcheck


def rng(seed=0):
    return np.random.default_rng(seed)


def randn(*shape, seed=0, dtype=np.float32):
    return rng(seed).standard_normal(shape).astype(dtype)


def T(array):
    return segcore.tensor(array)


# -- independent reference computations ---------------------------------------------------------------------
def ref_conv2d(x, w, b, stride, padding, dilation, groups):
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, o, ho, wo))
    for g in range(groups):
        xs, ws = x[:, g * cg : (g + 1) * cg], w[g * og : (g + 1) * og].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]
                out[:, g * og : (g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return out if b is None else out + b.reshape(1, -1, 1, 1)


def ref_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    cg = c // groups
    full = np.zeros((n, og * groups, (h - 1) * sh + dh * (kh - 1) + 1 + oph, (wd - 1) * sw + dw * (kw - 1) + 1 + opw))
    for g in range(groups):
        xs, ws = x[:, g * cg : (g + 1) * cg].astype(np.float64), w[g * cg : (g + 1) * cg].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                # Each input pixel scatters x * w[:, :, i, j] to output position (h * s + i * d, w * s + j * d).
                rows = slice(i * dh, i * dh + sh * (h - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (wd - 1) + 1, sw)
                full[:, g * og : (g + 1) * og, rows, cols] += np.einsum("nchw,co->nohw", xs, ws[:, :, i, j])
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    out = full[:, :, ph : ph + ho, pw : pw + wo]
    return out if b is None else out + b.reshape(1, -1, 1, 1)


# -- Linear, Conv2d, ConvTranspose2d ------------------------------------------------------------------------
def test_linear_matches_numpy_and_functional():
    layer = nn.Linear(5, 3, rng=rng(1))
    x = randn(4, 2, 5)
    expected = x @ layer.weight.numpy().T + layer.bias.numpy()
    np.testing.assert_allclose(layer(T(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(layer(T(x)).numpy(), F.linear(T(x), layer.weight, layer.bias).numpy())
    no_bias = nn.Linear(5, 3, bias=False, rng=rng(1))
    assert no_bias.bias is None and list(no_bias.state_dict()) == ["weight"]
    np.testing.assert_allclose(no_bias(T(x)).numpy(), x @ no_bias.weight.numpy().T, rtol=1e-5, atol=1e-6)
    assert repr(layer) == "Linear(in_features=5, out_features=3, bias=True)"


CONV_CASES = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=2, dilation=2, groups=4, bias=False),
]


@pytest.mark.parametrize("kwargs", CONV_CASES)
def test_conv2d_matches_reference_and_functional(kwargs):
    layer = nn.Conv2d(**kwargs, rng=rng(2))
    x = randn(2, kwargs["in_channels"], 7, 6, seed=3)
    out = layer(T(x)).numpy()
    bias = None if layer.bias is None else layer.bias.numpy()
    expected = ref_conv2d(x, layer.weight.numpy(), bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    functional = F.conv2d(T(x), layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    np.testing.assert_array_equal(out, functional.numpy())


@pytest.mark.parametrize("mode, numpy_mode", [("reflect", "reflect"), ("replicate", "edge"), ("circular", "wrap")])
def test_conv2d_padding_modes(mode, numpy_mode):
    layer = nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode=mode, rng=rng(4))
    x = randn(1, 2, 5, 6, seed=5)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)), mode=numpy_mode)
    expected = ref_conv2d(padded, layer.weight.numpy(), layer.bias.numpy(), (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(layer(T(x)).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert f"padding_mode={mode}" in repr(layer)


def test_conv2d_same_and_valid_padding():
    x = randn(1, 2, 5, 6, seed=6)
    even = nn.Conv2d(2, 3, (4, 3), padding="same", dilation=(1, 2), rng=rng(7))
    # Total padding dilation * (k - 1): rows 3 -> (1 top, 2 bottom), columns 4 -> (2, 2), as torch.
    padded = np.pad(x, ((0, 0), (0, 0), (1, 2), (2, 2)))
    expected = ref_conv2d(padded, even.weight.numpy(), even.bias.numpy(), (1, 1), (0, 0), (1, 2), 1)
    out = even(T(x)).numpy()
    assert out.shape == (1, 3, 5, 6)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    valid = nn.Conv2d(2, 3, 3, padding="valid", rng=rng(7))
    assert valid(T(x)).shape == (1, 3, 3, 4)
    with pytest.raises(ValueError, match=r"padding='same' is not supported for strided convolutions \(stride=2\)"):
        nn.Conv2d(2, 3, 3, stride=2, padding="same")


CONV_T_CASES = [
    dict(in_channels=3, out_channels=2, kernel_size=3),
    dict(in_channels=3, out_channels=4, kernel_size=4, stride=2, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2),
         groups=2, dilation=(1, 1)),
    dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, dilation=2, output_padding=1, bias=False),
]  # fmt: skip


@pytest.mark.parametrize("kwargs", CONV_T_CASES)
def test_conv_transpose2d_matches_reference_and_functional(kwargs):
    layer = nn.ConvTranspose2d(**kwargs, rng=rng(8))
    x = randn(2, kwargs["in_channels"], 4, 5, seed=9)
    out = layer(T(x)).numpy()
    bias = None if layer.bias is None else layer.bias.numpy()
    expected = ref_conv_transpose2d(
        x, layer.weight.numpy(), bias, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation
    )
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    functional = F.conv_transpose2d(
        T(x), layer.weight, layer.bias, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation
    )
    np.testing.assert_array_equal(out, functional.numpy())


def test_conv_transpose2d_output_size():
    layer = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, rng=rng(0))
    x = T(randn(1, 2, 4, 4))
    # Reachable sizes: (4 - 1) * 2 - 2 + 2 + 1 = 7 up to 7 + stride - 1 = 8.
    assert layer(x).shape == (1, 2, 7, 7)
    out = layer(x, output_size=(1, 2, 8, 7))
    assert out.shape == (1, 2, 8, 7)
    expected = F.conv_transpose2d(x, layer.weight, layer.bias, 2, 1, (1, 0))
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    with pytest.raises(ValueError, match=r"dimension 0 must be in \[7, 8\], got 9"):
        layer(x, output_size=(9, 8))


def test_conv_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="Conv2d: in_channels=3 must be divisible by groups=2"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="Conv2d: out_channels=3 must be divisible by groups=2"):
        nn.Conv2d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match=r"Conv2d: kernel_size must be >= 1, got 0"):
        nn.Conv2d(4, 3, 0)
    with pytest.raises(ValueError, match="padding_mode must be one of .* got 'mirror'"):
        nn.Conv2d(4, 3, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="padding must be 'same', 'valid', an int or a pair of ints, got 'full'"):
        nn.Conv2d(4, 3, 3, padding="full")
    with pytest.raises(ValueError, match=r"output_padding=\(2, 2\) must be smaller than stride \(2, 2\)"):
        nn.ConvTranspose2d(4, 3, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="in_channels must be an int >= 1, got 2.5"):
        nn.ConvTranspose2d(2.5, 3, 3)


def test_conv_repr_matches_torch():
    assert repr(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)) == (
        "Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)"
    )
    assert repr(nn.Conv2d(8, 8, (1, 3), dilation=2, groups=4)) == (
        "Conv2d(8, 8, kernel_size=(1, 3), stride=(1, 1), dilation=(2, 2), groups=4)"
    )
    assert repr(nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1, output_padding=1)) == (
        "ConvTranspose2d(4, 2, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), output_padding=(1, 1))"
    )


def test_bilinear_transposed_conv_upsamples_like_bilinear_interpolation():
    up = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False)
    init.bilinear_upsampling_(up.weight)
    constant = T(np.full((1, 2, 5, 5), 3.0, dtype=np.float32))
    out = up(constant).numpy()
    assert out.shape == (1, 2, 10, 10)
    np.testing.assert_allclose(out[:, :, 1:-1, 1:-1], 3.0, rtol=1e-6)
    # Only the two taps 0.75 (from k = [0.25, 0.75, 0.75, 0.25]) reach the first row and column.
    assert out[0, 0, 0, 5] == pytest.approx(0.75 * 3.0) and out[0, 0, 0, 0] == pytest.approx(0.5625 * 3.0)
    # In the interior it is exactly bilinear interpolation with half-pixel centres (align_corners=False).
    x = T(randn(1, 2, 5, 6, seed=11))
    bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(up(x).numpy()[:, :, 1:-1, 1:-1], bilinear[:, :, 1:-1, 1:-1], rtol=1e-5, atol=1e-6)


# -- normalisation ------------------------------------------------------------------------------------------
def bn_reference(x, mean, var, weight, bias, eps=1e-5):
    shape = (1, -1, 1, 1)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * weight.reshape(shape) + bias.reshape(shape)


def test_batchnorm2d_training_updates_running_stats():
    bn = nn.BatchNorm2d(3)
    bn.weight.data = np.array([1.0, 2.0, 0.5], dtype=np.float32)
    bn.bias.data = np.array([0.0, -1.0, 3.0], dtype=np.float32)
    x1, x2 = randn(4, 3, 5, 5, seed=1) * 2 + 1, randn(4, 3, 5, 5, seed=2) - 3
    out = bn(T(x1)).numpy()
    m1, v1 = x1.mean(axis=(0, 2, 3)), x1.var(axis=(0, 2, 3))
    np.testing.assert_allclose(out, bn_reference(x1, m1, v1, bn.weight.numpy(), bn.bias.numpy()), rtol=1e-4, atol=1e-5)
    bn(T(x2))
    m2 = x2.mean(axis=(0, 2, 3))
    # The running variance tracks the unbiased batch variance (n = 4 * 5 * 5 values per channel).
    u1, u2 = x1.var(axis=(0, 2, 3), ddof=1), x2.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.9 * (0.1 * m1) + 0.1 * m2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 * (0.9 + 0.1 * u1) + 0.1 * u2, rtol=1e-5)
    assert bn.num_batches_tracked.item() == 2 and bn.num_batches_tracked.dtype == np.int64
    assert isinstance(bn.num_batches_tracked.data, np.ndarray) and bn.num_batches_tracked.shape == ()


def test_batchnorm2d_eval_uses_running_stats_and_does_not_update():
    bn = nn.BatchNorm2d(2, eps=1e-3)
    bn.running_mean.data = np.array([0.5, -1.0], dtype=np.float32)
    bn.running_var.data = np.array([4.0, 0.25], dtype=np.float32)
    bn.eval()
    x = randn(3, 2, 4, 4, seed=3)
    out = bn(T(x)).numpy()
    expected = bn_reference(x, np.array([0.5, -1.0]), np.array([4.0, 0.25]), np.ones(2), np.zeros(2), eps=1e-3)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bn.running_mean.numpy(), [0.5, -1.0])
    np.testing.assert_array_equal(bn.running_var.numpy(), [4.0, 0.25])
    assert bn.num_batches_tracked.item() == 0


def test_batchnorm2d_cumulative_average_when_momentum_is_none():
    bn = nn.BatchNorm2d(2, momentum=None)
    xs = [randn(2, 2, 3, 3, seed=s) + s for s in range(3)]
    for x in xs:
        bn(T(x))
    expected_mean = np.mean([x.mean(axis=(0, 2, 3)) for x in xs], axis=0)
    np.testing.assert_allclose(bn.running_mean.numpy(), expected_mean, rtol=1e-5)
    np.testing.assert_allclose(
        bn.running_var.numpy(), np.mean([x.var(axis=(0, 2, 3), ddof=1) for x in xs], axis=0), rtol=1e-5
    )


def test_batchnorm2d_without_running_stats_or_affine():
    bn = nn.BatchNorm2d(2, affine=False, track_running_stats=False).eval()
    assert bn.running_mean is None and list(bn.state_dict()) == [] and list(bn.parameters()) == []
    x = randn(3, 2, 4, 4, seed=4)
    expected = bn_reference(x, x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)), np.ones(2), np.zeros(2))
    np.testing.assert_allclose(bn(T(x)).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_batchnorm2d_state_dict_and_legacy_checkpoint_without_counter():
    bn = nn.BatchNorm2d(3)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    sd = {k: v for k, v in nn.BatchNorm2d(3).state_dict().items() if k != "num_batches_tracked"}
    sd["running_mean"] = T(np.array([1.0, 2.0, 3.0], dtype=np.float32))
    assert bn.load_state_dict(sd) == ([], [])
    assert bn.running_mean.tolist() == [1.0, 2.0, 3.0]
    del sd["running_var"]
    with pytest.raises(ValueError, match='Missing key\\(s\\) in state_dict: "running_var"\\.'):
        bn.load_state_dict(sd)


def test_batchnorm2d_gradients_reach_weight_and_bias():
    bn = nn.BatchNorm2d(2)
    x = randn(2, 2, 3, 3, seed=5)
    r = randn(2, 2, 3, 3, seed=6)
    (bn(T(x)) * T(r)).sum().backward()
    # d/d bias = sum of upstream gradient per channel; d/d weight = sum(r * x_hat).
    np.testing.assert_allclose(bn.bias.grad.numpy(), r.sum(axis=(0, 2, 3)), rtol=1e-5)
    x_hat = bn_reference(x, x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)), np.ones(2), np.zeros(2))
    np.testing.assert_allclose(bn.weight.grad.numpy(), (r * x_hat).sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_batchnorm2d_input_errors():
    bn = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match=r"expected a 4-D input \(N, C, H, W\), got \(2, 3\)"):
        bn(T(randn(2, 3)))
    with pytest.raises(ValueError, match="input has 4 channels .* built for num_features=3"):
        bn(T(randn(2, 4, 2, 2)))
    with pytest.raises(ValueError, match="momentum must be a number in \\[0, 1\\] or None, got 2"):
        nn.BatchNorm2d(3, momentum=2)


def test_group_norm_matches_numpy():
    gn = nn.GroupNorm(2, 6, eps=1e-4)
    gn.weight.data = randn(6, seed=1)
    gn.bias.data = randn(6, seed=2)
    x = randn(3, 6, 4, 5, seed=3)
    groups = x.reshape(3, 2, -1)
    normed = (groups - groups.mean(-1, keepdims=True)) / np.sqrt(groups.var(-1, keepdims=True) + 1e-4)
    normed = normed.reshape(x.shape)
    expected = normed * gn.weight.numpy().reshape(1, -1, 1, 1) + gn.bias.numpy().reshape(1, -1, 1, 1)
    np.testing.assert_allclose(gn(T(x)).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert repr(gn) == "GroupNorm(2, 6, eps=0.0001, affine=True)"
    with pytest.raises(ValueError, match="num_channels=6 must be divisible by num_groups=4"):
        nn.GroupNorm(4, 6)


def test_layer_norm_matches_numpy():
    ln = nn.LayerNorm((4, 5))
    ln.weight.data = randn(4, 5, seed=1)
    ln.bias.data = randn(4, 5, seed=2)
    x = randn(2, 3, 4, 5, seed=3)
    mean, var = x.mean(axis=(-2, -1), keepdims=True), x.var(axis=(-2, -1), keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-5) * ln.weight.numpy() + ln.bias.numpy()
    np.testing.assert_allclose(ln(T(x)).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert repr(ln) == "LayerNorm((4, 5), eps=1e-05, elementwise_affine=True)"
    assert list(nn.LayerNorm(3, bias=False).state_dict()) == ["weight"]
    assert list(nn.LayerNorm(3, elementwise_affine=False).state_dict()) == []
    with pytest.raises(ValueError, match=r"normalized_shape must be a positive int .* got \(\)"):
        nn.LayerNorm(())


# -- activations --------------------------------------------------------------------------------------------
def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


ACTIVATIONS = [
    (nn.ReLU(), lambda x: np.maximum(x, 0), "ReLU()"),
    (nn.ReLU(inplace=True), lambda x: np.maximum(x, 0), "ReLU(inplace=True)"),
    (nn.ReLU6(), lambda x: np.clip(x, 0, 6), "ReLU6()"),
    (nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x), "LeakyReLU(negative_slope=0.2)"),
    (nn.ELU(0.5), lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1)), "ELU(alpha=0.5)"),
    (nn.GELU(), lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))), "GELU(approximate='none')"),
    (
        nn.GELU(approximate="tanh"),
        lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        "GELU(approximate='tanh')",
    ),
    (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x)), "Sigmoid()"),
    (nn.Tanh(), np.tanh, "Tanh()"),
    (nn.SiLU(), lambda x: x / (1 + np.exp(-x)), "SiLU()"),
    (nn.Hardsigmoid(), lambda x: np.clip(x + 3, 0, 6) / 6, "Hardsigmoid()"),
    (nn.Hardswish(), lambda x: x * np.clip(x + 3, 0, 6) / 6, "Hardswish()"),
    (nn.Softmax(dim=1), lambda x: _softmax(x, 1), "Softmax(dim=1)"),
    (nn.LogSoftmax(dim=-1), lambda x: np.log(_softmax(x, -1)), "LogSoftmax(dim=-1)"),
]


@pytest.mark.parametrize("layer, reference, text", ACTIVATIONS, ids=[a[2] for a in ACTIVATIONS])
def test_activation_matches_numpy(layer, reference, text):
    x = randn(2, 3, 4, 5, seed=1) * 4
    np.testing.assert_allclose(layer(T(x)).numpy(), reference(x.astype(np.float64)), rtol=1e-5, atol=1e-6)
    assert repr(layer) == text


def test_activation_argument_errors():
    with pytest.raises(TypeError, match="Softmax: dim must be an int .* got None"):
        nn.Softmax(None)
    with pytest.raises(ValueError, match="GELU: approximate must be 'none' or 'tanh', got 'fast'"):
        nn.GELU("fast")
    with pytest.raises(TypeError, match="ReLU: inplace must be a bool, got 1"):
        nn.ReLU(1)


# -- dropout ------------------------------------------------------------------------------------------------
def test_dropout_is_identity_in_eval_and_seeded_in_training():
    x = T(np.ones((100, 200), dtype=np.float32))
    drop = nn.Dropout(p=0.3, seed=5)
    assert repr(drop) == "Dropout(p=0.3, inplace=False)"
    out = drop(x).numpy()
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)  # survivors scaled by 1 / (1 - p)
    # Fraction dropped: standard error sqrt(0.3 * 0.7 / 20000) = 0.0032, so 0.02 is over 6 of them.
    assert abs((out == 0).mean() - 0.3) < 0.02
    np.testing.assert_array_equal(nn.Dropout(p=0.3, seed=5)(x).numpy(), out)
    np.testing.assert_array_equal(nn.Dropout(p=0.3, rng=np.random.default_rng(5))(x).numpy(), out)
    assert not np.array_equal(drop(x).numpy(), out)  # the generator advances
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())


def test_dropout2d_drops_whole_channels():
    x = T(randn(4, 50, 3, 3, seed=2))
    drop = nn.Dropout2d(p=0.5, seed=1)
    out = drop(x).numpy()
    per_channel_zero = (out == 0).all(axis=(2, 3))
    kept = ~per_channel_zero
    np.testing.assert_allclose(out[kept], 2 * x.numpy()[kept], rtol=1e-6)
    assert 0.3 < per_channel_zero.mean() < 0.7
    np.testing.assert_array_equal(drop.eval()(x).numpy(), x.numpy())


def test_dropout_argument_errors():
    with pytest.raises(ValueError, match=r"Dropout: dropout probability p must be a number in \[0, 1\], got 1.5"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="pass either rng or seed, not both"):
        nn.Dropout2d(0.1, rng=np.random.default_rng(), seed=3)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator or None, got int"):
        nn.Dropout(0.1, rng=3)


# -- pooling and resizing -----------------------------------------------------------------------------------
def test_max_pool_matches_numpy_and_unpool_inverts_it():
    x = randn(2, 3, 7, 6, seed=1)
    pool = nn.MaxPool2d(3, stride=2, padding=1)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    expected = np.array(
        [[[[padded[n, c, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max() for j in range(3)] for i in range(4)]
          for c in range(3)] for n in range(2)]
    )  # fmt: skip
    np.testing.assert_array_equal(pool(T(x)).numpy(), expected)
    assert repr(pool) == "MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)"

    down = nn.MaxPool2d(2, return_indices=True)
    out, indices = down(T(x[:, :, :6, :6]))
    restored = nn.MaxUnpool2d(2)(out, indices).numpy()
    block = x[:, :, :6, :6].reshape(2, 3, 3, 2, 3, 2)
    is_max = block == block.max(axis=(3, 5), keepdims=True)
    np.testing.assert_array_equal(restored, np.where(is_max, block, 0).reshape(2, 3, 6, 6))
    assert repr(nn.MaxUnpool2d(2)) == "MaxUnpool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))"
    with pytest.raises(ValueError, match="padding 2 must be at most half of kernel_size 3"):
        nn.MaxPool2d(3, padding=2)


def test_avg_and_adaptive_pools_match_numpy():
    x = randn(2, 3, 6, 4, seed=2)
    np.testing.assert_allclose(
        nn.AvgPool2d(2)(T(x)).numpy(), x.reshape(2, 3, 3, 2, 2, 2).mean(axis=(3, 5)), rtol=1e-6
    )
    avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    np.testing.assert_array_equal(
        avg(T(x)).numpy(), F.avg_pool2d(T(x), 3, 1, 1, count_include_pad=False).numpy()
    )
    # Corner window covers 2x2 real pixels: divided by 4, not 9, without padding in the count.
    assert avg(T(x)).numpy()[0, 0, 0, 0] == pytest.approx(x[0, 0, :2, :2].mean(), rel=1e-5)
    np.testing.assert_allclose(nn.AdaptiveAvgPool2d(1)(T(x)).numpy(), x.mean(axis=(2, 3), keepdims=True), rtol=1e-5)
    np.testing.assert_array_equal(nn.AdaptiveMaxPool2d((1, 1))(T(x)).numpy(), x.max(axis=(2, 3), keepdims=True))
    np.testing.assert_allclose(
        nn.AdaptiveAvgPool2d((3, 2))(T(x)).numpy(), x.reshape(2, 3, 3, 2, 2, 2).mean(axis=(3, 5)), rtol=1e-6
    )
    values, indices = nn.AdaptiveMaxPool2d(1, return_indices=True)(T(x))
    np.testing.assert_array_equal(indices.numpy().reshape(2, 3), x.reshape(2, 3, -1).argmax(-1))
    assert repr(nn.AdaptiveAvgPool2d((3, None))) == "AdaptiveAvgPool2d(output_size=(3, None))"
    with pytest.raises(ValueError, match="output_size must be a positive int or a pair of ints/None, got 0"):
        nn.AdaptiveAvgPool2d(0)


def test_upsample_nearest_and_bilinear():
    x = randn(1, 2, 3, 4, seed=3)
    up = nn.Upsample(scale_factor=2)
    np.testing.assert_array_equal(up(T(x)).numpy(), x.repeat(2, axis=2).repeat(2, axis=3))
    assert repr(up) == "Upsample(scale_factor=2.0, mode='nearest')"
    corners = nn.Upsample(size=(3, 3), mode="bilinear", align_corners=True)
    grid = T(np.array([[[[0.0, 1.0], [2.0, 3.0]]]], dtype=np.float32))
    np.testing.assert_allclose(corners(grid).numpy()[0, 0], [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]], rtol=1e-6)
    assert repr(corners) == "Upsample(size=(3, 3), mode='bilinear')"
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        nn.Upsample()
    with pytest.raises(ValueError, match="mode must be one of .* got 'trilinear'"):
        nn.Upsample(scale_factor=2, mode="trilinear")
    with pytest.raises(ValueError, match="align_corners only applies to mode 'bilinear'"):
        nn.Upsample(scale_factor=2, align_corners=True)


def test_flatten():
    x = randn(2, 3, 4, 5)
    np.testing.assert_array_equal(nn.Flatten()(T(x)).numpy(), x.reshape(2, -1))
    np.testing.assert_array_equal(nn.Flatten(1, 2)(T(x)).numpy(), x.reshape(2, 12, 5))
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"


# -- whole models -------------------------------------------------------------------------------------------
def small_convnet(seed):
    r = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=r),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 1, 1, rng=r),
    )


def test_module_gradients_match_central_differences():
    model = small_convnet(0).double().eval()
    x = segcore.tensor(rng(1).standard_normal((2, 1, 5, 5)), requires_grad=True)
    gradcheck(model, [x], rng=rng(2))


def test_model_moves_to_another_backend(alt_backend):
    model = small_convnet(3)
    x = randn(2, 1, 6, 6, seed=4)
    reference = small_convnet(3)
    expected = reference(T(x)).numpy()
    model.to("numpy-nn-alt")
    out = model(segcore.tensor(x, backend="numpy-nn-alt"))
    assert out.backend is alt_backend
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    assert model[1].running_mean.backend is alt_backend
    np.testing.assert_array_equal(model[1].running_mean.numpy(), reference[1].running_mean.numpy())


def gd_step(model, lr):
    for p in model.parameters():
        p.data = p.data - lr * p.grad.data
    model.zero_grad()


def test_tiny_convnet_learns_a_segmentation_mask_with_plain_gradient_descent():
    images = np.zeros((4, 1, 8, 8), dtype=np.float32)
    for i, (r, c) in enumerate([(1, 1), (2, 4), (4, 2), (3, 3)]):
        images[i, 0, r : r + 3, c : c + 3] = 1.0
    noise = 0.1 * randn(4, 1, 8, 8, seed=5)
    x, target = T(images + noise), T(images)
    model = small_convnet(6)
    losses = []
    for _ in range(40):
        loss = ((model(x) - target) ** 2).mean()
        losses.append(loss.item())
        loss.backward()
        gd_step(model, 0.1)
    assert losses[-1] < 0.2 * losses[0]


def test_tiny_mlp_loss_decreases_with_plain_gradient_descent():
    r = rng(7)
    x = r.uniform(-1, 1, size=(64, 2)).astype(np.float32)
    y = (x[:, :1] * x[:, 1:]).astype(np.float32)  # XOR-like sign pattern, not linearly solvable
    model = nn.Sequential(nn.Linear(2, 16, rng=r), nn.Tanh(), nn.Linear(16, 1, rng=r))
    losses = []
    for _ in range(150):
        loss = ((model(T(x)) - T(y)) ** 2).mean()
        losses.append(loss.item())
        loss.backward()
        gd_step(model, 0.5)
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is None for p in model.parameters())
