"""SGD against updates worked out by hand for 2- and 3-element parameters (float64, so rounding is ~1e-16)."""

import numpy as np
import pytest

import segcore
from segcore.nn import Parameter
from segcore.optim import SGD


def param(values, dtype=np.float64) -> Parameter:
    return Parameter(segcore.tensor(np.array(values, dtype=dtype)))


def set_grad(p: Parameter, values) -> None:
    p.grad = segcore.tensor(np.array(values, dtype=p.dtype))


def close(actual, expected) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-14)


def test_defaults_match_torch():
    opt = SGD([param([1.0])])
    assert opt.defaults == dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)


def test_one_plain_step_is_p_minus_lr_g():
    p = param([1.0, -2.0, 3.0])
    set_grad(p, [0.5, 0.25, -1.0])
    SGD([p], lr=0.1).step()
    # 1 - 0.1*0.5, -2 - 0.1*0.25, 3 - 0.1*(-1)
    close(p.numpy(), [0.95, -2.025, 3.1])


def test_plain_sgd_keeps_no_state():
    p = param([1.0, 2.0])
    set_grad(p, [1.0, 1.0])
    opt = SGD([p], lr=0.1)
    opt.step()
    assert p not in opt.state


def test_momentum_three_steps_with_fixed_gradient():
    p = param([0.5, 0.5])
    opt = SGD([p], lr=0.1, momentum=0.9)
    g = np.array([1.0, -2.0])
    # buf_1 = g, buf_2 = 0.9 g + g = 1.9 g, buf_3 = 0.9 * 1.9 g + g = 2.71 g; each step subtracts 0.1 * buf.
    expected = [[0.5 - 0.1 * 1.0, 0.5 + 0.1 * 2.0], [0.21, 1.08], [0.21 - 0.271, 1.08 + 0.542]]
    for step in range(3):
        set_grad(p, g)
        opt.step()
        close(p.numpy(), expected[step])
    close(p.numpy(), [-0.061, 1.622])  # p_0 - 0.1 * (1 + 1.9 + 2.71) * g
    close(opt.state[p]["momentum_buffer"], [2.71, -5.42])


def test_dampening_is_not_applied_on_the_first_step():
    p = param([0.5, 0.5])
    opt = SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    for _ in range(3):
        set_grad(p, [1.0, -2.0])
        opt.step()
    # buf: g, 0.9 g + 0.5 g = 1.4 g, 0.9 * 1.4 g + 0.5 g = 1.76 g  ->  p_0 - 0.1 * 4.16 g
    close(p.numpy(), [0.5 - 0.416, 0.5 + 0.832])


def test_nesterov_two_steps():
    p = param([0.5, 0.5])
    opt = SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(2):
        set_grad(p, [1.0, -2.0])
        opt.step()
    # step 1: buf = g, update g + 0.9 g = 1.9 g; step 2: buf = 1.9 g, update g + 0.9 * 1.9 g = 2.71 g
    close(p.numpy(), [0.5 - 0.461, 0.5 + 0.922])
    close(opt.state[p]["momentum_buffer"], [1.9, -3.8])


def test_weight_decay_two_steps():
    p = param([1.0, -2.0])
    opt = SGD([p], lr=0.1, weight_decay=0.1)
    set_grad(p, [0.5, 0.5])
    opt.step()
    # g + 0.1 p = [0.6, 0.3]
    close(p.numpy(), [0.94, -2.03])
    set_grad(p, [0.5, 0.5])
    opt.step()
    # g + 0.1 p = [0.594, 0.297]
    close(p.numpy(), [0.8806, -2.0597])


def test_weight_decay_enters_the_momentum_buffer():
    p = param([1.0, -2.0])
    opt = SGD([p], lr=0.1, momentum=0.5, weight_decay=0.1)
    for _ in range(2):
        set_grad(p, [0.5, 0.5])
        opt.step()
    # buf_1 = [0.6, 0.3]; buf_2 = 0.5 * buf_1 + [0.594, 0.297] = [0.894, 0.447]
    close(opt.state[p]["momentum_buffer"], [0.894, 0.447])
    close(p.numpy(), [0.94 - 0.0894, -2.03 - 0.0447])


def test_maximize_negates_the_gradient_before_weight_decay():
    p = param([1.0, -2.0])
    set_grad(p, [0.5, 0.25])
    SGD([p], lr=0.1, weight_decay=0.1, maximize=True).step()
    # -g + 0.1 p = [-0.4, -0.45]
    close(p.numpy(), [1.04, -1.955])


def test_step_after_backward_uses_autograd_gradient():
    p = param([1.0, 2.0, 3.0])
    (p * p).sum().backward()  # d/dp sum(p^2) = 2p
    SGD([p], lr=0.1).step()
    close(p.numpy(), [0.8, 1.6, 2.4])


def test_gradient_array_is_not_modified():
    p = param([1.0, -2.0])
    set_grad(p, [0.5, 0.25])
    grad = p.grad
    SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1, maximize=True).step()
    assert p.grad is grad
    close(p.grad.numpy(), [0.5, 0.25])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(lr=-0.1), ValueError, r"SGD: lr must be >= 0, got -0\.1"),
        (dict(lr="0.1"), TypeError, r"SGD: lr must be a real number, got '0\.1' \(str\)"),
        (dict(lr=float("nan")), ValueError, r"SGD: lr must be finite, got nan"),
        (dict(momentum=-0.5), ValueError, r"SGD: momentum must be >= 0, got -0\.5"),
        (dict(weight_decay=-1e-4), ValueError, r"SGD: weight_decay must be >= 0, got -0\.0001"),
        (dict(nesterov=True), ValueError, r"nesterov=True needs momentum > 0 and dampening == 0, got momentum=0"),
        (
            dict(nesterov=True, momentum=0.9, dampening=0.1),
            ValueError,
            r"nesterov=True needs momentum > 0 and dampening == 0, got momentum=0\.9, dampening=0\.1",
        ),
        (dict(nesterov=1, momentum=0.9), TypeError, r"SGD: nesterov must be True or False, got 1 \(int\)"),
        (dict(maximize="yes"), TypeError, r"SGD: maximize must be True or False, got 'yes'"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        SGD([param([1.0])], **kwargs)
