"""Initialisers: distributions against their formulas, torch's default layer init, the bilinear kernel."""

import math

import numpy as np
import pytest
from scipy import stats

import segcore
from segcore import nn
from segcore.nn import init


def empty(*shape, dtype=np.float32):
    return nn.Parameter(segcore.tensor(np.zeros(shape, dtype=dtype)))


def rel_err(a, b):
    return abs(a - b) / abs(b)


# A (256, 128, 3, 3) tensor has n = 294912 draws: the standard error of a sample std is about
# std * sqrt(1 / (2n)) = 0.13% for a normal (less for a uniform), so 1% is more than 7 standard errors.
BIG = (256, 128, 3, 3)
FAN_IN, FAN_OUT = 128 * 9, 256 * 9


def test_calculate_gain_table():
    assert init.calculate_gain("linear") == 1.0
    assert init.calculate_gain("conv2d") == 1.0
    assert init.calculate_gain("sigmoid") == 1.0
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")


def test_fan_in_and_fan_out():
    assert init._calculate_fan_in_and_fan_out(empty(8, 4, 3, 5)) == (60, 120)
    assert init._calculate_fan_in_and_fan_out(empty(10, 20)) == (20, 10)
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got shape \(7,\)"):
        init._calculate_fan_in_and_fan_out(empty(7))


def test_kaiming_normal_std_matches_formula():
    w = empty(*BIG)
    out = init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", rng=np.random.default_rng(0))
    assert out is w and w.dtype == np.float32
    values = w.numpy().astype(np.float64)
    expected = math.sqrt(2.0 / FAN_IN)
    assert rel_err(values.std(), expected) < 0.01
    assert abs(values.mean()) < 5 * expected / math.sqrt(values.size)
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", rng=np.random.default_rng(1))
    assert rel_err(w.numpy().std(), math.sqrt(2.0 / FAN_OUT)) < 0.01


def test_kaiming_uniform_bound_and_std():
    w = empty(*BIG)
    init.kaiming_uniform_(w, a=0.2, rng=np.random.default_rng(0))
    gain = math.sqrt(2.0 / (1 + 0.2**2))
    bound = gain * math.sqrt(3.0 / FAN_IN)
    values = w.numpy()
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.999 * bound
    assert rel_err(values.std(), bound / math.sqrt(3)) < 0.01


def test_xavier_uniform_and_normal():
    w = empty(*BIG)
    init.xavier_uniform_(w, gain=2.0, rng=np.random.default_rng(0))
    bound = 2.0 * math.sqrt(6.0 / (FAN_IN + FAN_OUT))
    assert np.abs(w.numpy()).max() <= bound and np.abs(w.numpy()).max() > 0.999 * bound
    init.xavier_normal_(w, rng=np.random.default_rng(0))
    assert rel_err(w.numpy().std(), math.sqrt(2.0 / (FAN_IN + FAN_OUT))) < 0.01


def test_normal_uniform_and_constants():
    w = empty(400, 500)
    init.normal_(w, mean=3.0, std=0.5, rng=np.random.default_rng(0))
    assert abs(w.numpy().mean() - 3.0) < 5 * 0.5 / math.sqrt(w.numel())
    assert rel_err(w.numpy().std(), 0.5) < 0.01
    init.uniform_(w, -2.0, 1.0, rng=np.random.default_rng(0))
    assert w.numpy().min() >= -2.0 and w.numpy().max() <= 1.0
    assert abs(w.numpy().mean() + 0.5) < 0.01
    init.constant_(w, 0.25)
    assert np.all(w.numpy() == 0.25)
    init.zeros_(w)
    assert not w.numpy().any()
    init.ones_(w)
    assert np.all(w.numpy() == 1.0)


def test_trunc_normal_matches_scipy_truncnorm():
    w = empty(500, 600)
    mean, std, a, b = 0.5, 1.0, -1.0, 2.0
    init.trunc_normal_(w, mean, std, a, b, rng=np.random.default_rng(0))
    values = w.numpy().astype(np.float64)
    assert values.min() >= a and values.max() <= b
    reference = stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    assert abs(values.mean() - reference.mean()) < 5 * reference.std() / math.sqrt(values.size)
    assert rel_err(values.std(), reference.std()) < 0.01


def test_init_is_seeded_and_keeps_parameter_a_leaf():
    a, b = empty(5, 6), empty(5, 6)
    init.kaiming_normal_(a, rng=np.random.default_rng(42))
    init.kaiming_normal_(b, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.is_leaf and a.requires_grad and a.grad is None
    # Same numbers as drawing directly: std = gain(leaky_relu, 0) / sqrt(fan_in) = sqrt(2 / 6).
    expected = np.random.default_rng(42).normal(0.0, math.sqrt(2.0 / 6), size=(5, 6)).astype(np.float32)
    np.testing.assert_array_equal(a.numpy(), expected)


def test_init_float64_tensor_stays_float64():
    w = empty(3, 4, dtype=np.float64)
    init.xavier_uniform_(w, rng=np.random.default_rng(0))
    assert w.dtype == np.float64


def test_init_argument_errors():
    w = empty(3, 4)
    with pytest.raises(TypeError, match="kaiming_normal_: rng must be a numpy.random.Generator.*got int"):
        init.kaiming_normal_(w, rng=0)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'rng'"):
        init.normal_(w)
    with pytest.raises(TypeError, match="tensor must be floating point, got dtype int64"):
        init.zeros_(segcore.tensor([1, 2]))
    with pytest.raises(TypeError, match="tensor must be a segcore Tensor, got ndarray"):
        init.ones_(np.zeros(3))
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out', got 'fan_avg'"):
        init.kaiming_uniform_(w, mode="fan_avg", rng=np.random.default_rng())
    with pytest.raises(ValueError, match="std must be >= 0, got -1"):
        init.normal_(w, std=-1, rng=np.random.default_rng())


# -- torch's default layer initialisation ------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, fan_in",
    [
        (lambda rng: nn.Linear(50, 20, rng=rng), 50),
        (lambda rng: nn.Conv2d(16, 32, 3, rng=rng), 16 * 9),
        (lambda rng: nn.Conv2d(16, 32, (3, 5), groups=4, rng=rng), 4 * 15),
        # ConvTranspose2d weight is (C_in, C_out, k, k): torch's fan_in is C_out * k * k.
        (lambda rng: nn.ConvTranspose2d(16, 8, 4, rng=rng), 8 * 16),
    ],
)
def test_default_layer_init_follows_torch(make, fan_in):
    layer = make(np.random.default_rng(0))
    bound = 1.0 / math.sqrt(fan_in)
    weight, bias = layer.weight.numpy(), layer.bias.numpy()
    # kaiming_uniform(a=sqrt(5)) has bound gain * sqrt(3 / fan_in) with gain = sqrt(1/3): exactly 1/sqrt(fan_in).
    shape = weight.shape
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(weight, rng.uniform(-bound, bound, size=shape).astype(np.float32))
    np.testing.assert_array_equal(bias, rng.uniform(-bound, bound, size=bias.shape).astype(np.float32))
    assert weight.dtype == np.float32


def test_layer_construction_is_reproducible_with_a_seed():
    a = nn.Conv2d(3, 4, 3, rng=np.random.default_rng(7))
    b = nn.Conv2d(3, 4, 3, rng=np.random.default_rng(7))
    c = nn.Conv2d(3, 4, 3, rng=np.random.default_rng(8))
    d, e = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)  # rng=None: fresh unseeded generators
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    assert not np.array_equal(a.weight.numpy(), c.weight.numpy())
    assert not np.array_equal(d.weight.numpy(), e.weight.numpy())
    f = nn.Linear(3, 4, dtype=np.float64, rng=np.random.default_rng(7))
    assert f.weight.dtype == np.float64 and f.bias.dtype == np.float64


def test_layer_factory_argument_errors():
    with pytest.raises(TypeError, match="Linear: rng must be a numpy.random.Generator or None, got int"):
        nn.Linear(2, 2, rng=3)
    with pytest.raises(TypeError, match="Conv2d: dtype must be floating point.*got int32"):
        nn.Conv2d(2, 2, 1, dtype=np.int32)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        nn.Linear(2, 2, backend="gpu")


# -- bilinear upsampling (FCN) ------------------------------------------------------------------------------
def test_bilinear_kernel_by_hand():
    # k=4: factor 2, center 1.5, 1 - |[0,1,2,3] - 1.5| / 2 = [0.25, 0.75, 0.75, 0.25].
    f = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_array_equal(init.bilinear_kernel(4), np.outer(f, f))
    assert init.bilinear_kernel(4)[1, 2] == 0.5625
    # k=3: factor 2, center 1 -> [0.5, 1, 0.5].
    np.testing.assert_array_equal(init.bilinear_kernel(3), np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]))


def test_bilinear_upsampling_fills_the_channel_diagonal():
    w = empty(3, 3, 4, 4)
    init.bilinear_upsampling_(w)
    values = w.numpy()
    for i in range(3):
        for j in range(3):
            expected = init.bilinear_kernel(4) if i == j else np.zeros((4, 4))
            np.testing.assert_array_equal(values[i, j], expected)
    depthwise = empty(5, 1, 4, 4)
    init.bilinear_upsampling_(depthwise)
    np.testing.assert_array_equal(depthwise.numpy(), np.broadcast_to(init.bilinear_kernel(4), (5, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"C_in == C_out, or C_out == 1.*\(3, 2, 4, 4\)"):
        init.bilinear_upsampling_(empty(3, 2, 4, 4))
    with pytest.raises(ValueError, match=r"square kernel, got shape \(3, 3, 4, 2\)"):
        init.bilinear_upsampling_(empty(3, 3, 4, 2))
