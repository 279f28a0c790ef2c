"""Adam / AdamW against updates worked out by hand (float64)."""

import math

import numpy as np
import pytest

import segcore
from segcore.nn import Parameter
from segcore.optim import Adam, AdamW


def param(values, dtype=np.float64) -> Parameter:
    return Parameter(segcore.tensor(np.array(values, dtype=dtype)))


def set_grad(p: Parameter, values) -> None:
    p.grad = segcore.tensor(np.array(values, dtype=p.dtype))


def close(actual, expected, rtol=1e-12) -> None:
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-15)


def test_defaults_match_torch():
    assert Adam([param([1.0])]).defaults == dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False
    )
    assert AdamW([param([1.0])]).defaults["weight_decay"] == 1e-2


def test_first_step_moves_each_element_by_lr_times_sign_of_grad():
    p0 = np.array([1.0, -1.0, 0.0])
    g = np.array([0.5, -3.0, 1e-3])
    p = param(p0)
    set_grad(p, g)
    Adam([p], lr=0.01).step()
    # m = 0.1 g, v = 0.001 g^2; bias-corrected: m / 0.1 = g, sqrt(v / 0.001) = |g|
    close(p.numpy(), p0 - 0.01 * g / (np.abs(g) + 1e-8))
    # whatever the gradient's magnitude, the step is ~lr (eps matters only relative to |g| = 1e-3)
    close(p.numpy() - p0, [-0.01, 0.01, -0.01], rtol=2e-5)


def test_constant_gradient_steps_lr_each_time_thanks_to_bias_correction():
    p0 = np.array([0.3, -0.7])
    g = np.array([2.0, -0.25])
    p = param(p0)
    opt = Adam([p], lr=0.01)
    for _ in range(3):
        set_grad(p, g)
        opt.step()
    # m_t = (1 - 0.9^t) g and v_t = (1 - 0.999^t) g^2, so every corrected step is lr * g / (|g| + eps)
    close(p.numpy(), p0 - 3 * 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-10)
    assert opt.state[p]["step"] == 3
    close(opt.state[p]["exp_avg"], (1 - 0.9**3) * g)
    close(opt.state[p]["exp_avg_sq"], (1 - 0.999**3) * g * g)


def test_two_steps_with_different_gradients():
    p0 = np.array([1.0, -2.0])
    g1 = np.array([0.5, -3.0])
    g2 = np.array([-1.0, 2.0])
    p = param(p0)
    opt = Adam([p], lr=0.01)
    set_grad(p, g1)
    opt.step()
    set_grad(p, g2)
    opt.step()
    m1, v1 = 0.1 * g1, 0.001 * g1**2
    p1 = p0 - 0.01 / 0.1 * m1 / (np.sqrt(v1) / math.sqrt(0.001) + 1e-8)
    m2 = 0.9 * m1 + 0.1 * g2
    v2 = 0.999 * v1 + 0.001 * g2**2
    # 1 - 0.9^2 = 0.19, 1 - 0.999^2 = 0.001999
    p2 = p1 - 0.01 / 0.19 * m2 / (np.sqrt(v2) / math.sqrt(0.001999) + 1e-8)
    close(p.numpy(), p2)


def test_amsgrad_divides_by_the_running_maximum():
    p0 = np.array([0.0, 0.0])
    g1 = np.array([10.0, 1.0])
    g2 = np.array([0.1, 2.0])
    results = {}
    for amsgrad in (False, True):
        p = param(p0)
        opt = Adam([p], lr=0.01, amsgrad=amsgrad)
        for g in (g1, g2):
            set_grad(p, g)
            opt.step()
        results[amsgrad] = (p.numpy(), opt.state[p])
    # v_1 = [0.1, 0.001]; v_2 = 0.999 v_1 + 0.001 g2^2 = [0.09991, 0.004999]; max = [0.1, 0.004999]
    close(results[True][1]["max_exp_avg_sq"], [0.1, 0.004999])
    assert "max_exp_avg_sq" not in results[False][1]
    p1 = p0 - 0.01 * g1 / (np.abs(g1) + 1e-8)
    m2 = np.array([0.91, 0.29])  # 0.9 * 0.1 g1 + 0.1 g2
    bc2 = math.sqrt(0.001999)
    close(results[True][0], p1 - 0.01 / 0.19 * m2 / (np.sqrt([0.1, 0.004999]) / bc2 + 1e-8))
    close(results[False][0], p1 - 0.01 / 0.19 * m2 / (np.sqrt([0.09991, 0.004999]) / bc2 + 1e-8))
    # Only the element whose second moment shrank differs.
    assert results[True][0][0] != results[False][0][0]
    close(results[True][0][1], results[False][0][1])


def test_adam_weight_decay_is_l2_and_adamw_decay_is_decoupled():
    p0 = [1.0, -2.0]
    g = [0.5, 0.1]
    adam = param(p0)
    adamw = param(p0)
    set_grad(adam, g)
    set_grad(adamw, g)
    # eps=0 makes the normalised first step exactly lr * sign(.)
    Adam([adam], lr=0.01, weight_decay=0.1, eps=0.0).step()
    AdamW([adamw], lr=0.01, weight_decay=0.1, eps=0.0).step()
    # Adam: g + 0.1 p = [0.6, -0.1] -> p - 0.01 * sign = [0.99, -1.99]
    close(adam.numpy(), [0.99, -1.99])
    # AdamW: p * (1 - 0.01 * 0.1) - 0.01 * sign(g) = [0.999 - 0.01, -1.998 - 0.01]
    close(adamw.numpy(), [0.989, -2.008])
    close(adamw.numpy() - adam.numpy(), [-0.001, -0.018])


def test_adamw_two_steps_shrink_then_step():
    p = param([1.0, -2.0])
    opt = AdamW([p], lr=0.01, weight_decay=0.1, eps=0.0)
    for _ in range(2):
        set_grad(p, [0.5, 0.1])
        opt.step()
    # p_2 = (p_1 * 0.999) - 0.01 sign(g) with p_1 = [0.989, -2.008]
    close(p.numpy(), [0.988011 - 0.01, -2.005992 - 0.01])


def test_adamw_without_decay_is_exactly_adam():
    rng = np.random.default_rng(3)
    a = param(rng.standard_normal(3), dtype=np.float32)
    b = param(a.numpy(), dtype=np.float32)
    opt_a = Adam([a], lr=0.05, amsgrad=True)
    opt_b = AdamW([b], lr=0.05, amsgrad=True, weight_decay=0.0)
    for _ in range(4):
        g = rng.standard_normal(3)
        set_grad(a, g)
        set_grad(b, g)
        opt_a.step()
        opt_b.step()
    assert np.array_equal(a.numpy(), b.numpy())


def test_maximize_ascends():
    p = param([1.0, -1.0])
    set_grad(p, [0.5, -2.0])
    Adam([p], lr=0.01, maximize=True).step()
    close(p.numpy(), [1.0 + 0.01 * 0.5 / (0.5 + 1e-8), -1.0 - 0.01 * 2.0 / (2.0 + 1e-8)])


@pytest.mark.parametrize(
    "cls, kwargs, error, message",
    [
        (Adam, dict(lr=-1e-3), ValueError, r"Adam: lr must be >= 0, got -0\.001"),
        (Adam, dict(eps=-1e-8), ValueError, r"Adam: eps must be >= 0, got -1e-08"),
        (Adam, dict(weight_decay=-0.1), ValueError, r"Adam: weight_decay must be >= 0, got -0\.1"),
        (Adam, dict(betas=(1.0, 0.999)), ValueError, r"Adam: betas\[0\] must be in \[0, 1\), got 1\.0"),
        (Adam, dict(betas=(0.9, -0.1)), ValueError, r"Adam: betas\[1\] must be in \[0, 1\), got -0\.1"),
        (Adam, dict(betas=(0.9,)), TypeError, r"Adam: betas must be a pair \(beta1, beta2\), got \(0\.9,\)"),
        (Adam, dict(betas=(0.9, "x")), TypeError, r"Adam: betas\[1\] must be a real number, got 'x'"),
        (Adam, dict(amsgrad=None), TypeError, r"Adam: amsgrad must be True or False, got None"),
        (AdamW, dict(weight_decay=-0.01), ValueError, r"AdamW: weight_decay must be >= 0, got -0\.01"),
        (AdamW, dict(betas=(0.9, 1.5)), ValueError, r"AdamW: betas\[1\] must be in \[0, 1\), got 1\.5"),
    ],
)
def test_invalid_arguments_name_the_argument(cls, kwargs, error, message):
    with pytest.raises(error, match=message):
        cls([param([1.0])], **kwargs)
