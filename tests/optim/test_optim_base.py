"""Optimizer machinery shared by all optimizers: groups, skipped parameters, zero_grad, checkpoints, dtypes."""

import numpy as np
import pytest

import segcore
from segcore.nn import Parameter
from segcore.optim import SGD, Adam, AdamW


def param(values, dtype=np.float64) -> Parameter:
    return Parameter(segcore.tensor(np.array(values, dtype=dtype)))


def set_grad(p: Parameter, values) -> None:
    p.grad = segcore.tensor(np.array(values, dtype=p.dtype))


def close(actual, expected) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-15)


# -- param groups ---------------------------------------------------------------------------------------------
def test_groups_override_defaults_and_inherit_the_rest():
    a, b = param([1.0, 1.0]), param([1.0, 1.0])
    opt = SGD([{"params": [a], "lr": 0.1}, {"params": [b], "momentum": 0.9}], lr=0.01)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["momentum"] == 0.0
    assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[1]["momentum"] == 0.9
    for _ in range(2):
        set_grad(a, [1.0, -1.0])
        set_grad(b, [1.0, -1.0])
        opt.step()
    close(a.numpy(), [1.0 - 2 * 0.1, 1.0 + 2 * 0.1])
    # momentum 0.9 in group 1 only: buffers g then 1.9 g
    close(b.numpy(), [1.0 - 0.01 * 2.9, 1.0 + 0.01 * 2.9])


def test_group_keeps_extra_keys_and_does_not_mutate_the_callers_dict():
    a = param([1.0])
    group = {"params": [a], "name": "head"}
    opt = SGD([group], lr=0.1)
    assert opt.param_groups[0]["name"] == "head"
    assert group == {"params": [a], "name": "head"}


def test_add_param_group_after_construction():
    a, b = param([1.0]), param([2.0])
    opt = SGD([a], lr=0.1)
    opt.add_param_group({"params": b, "lr": 0.5})
    set_grad(a, [1.0])
    set_grad(b, [1.0])
    opt.step()
    close(a.numpy(), [0.9])
    close(b.numpy(), [1.5])
    assert len(opt.param_groups[1]["params"]) == 1 and opt.param_groups[1]["params"][0] is b
    with pytest.raises(ValueError, match=r"param group 2: params\[0\] is already in param group 0"):
        opt.add_param_group({"params": [a]})


def test_parameters_without_grad_are_skipped_and_get_no_state():
    a, b = param([1.0, -1.0]), param([5.0, 5.0])
    opt = Adam([a, b], lr=0.01)
    set_grad(a, [2.0, -2.0])
    opt.step()
    close(b.numpy(), [5.0, 5.0])
    assert b not in opt.state and opt.state[a]["step"] == 1
    set_grad(b, [1.0, 1.0])
    opt.step()
    # b's first step: bias correction makes it exactly lr * g / (|g| + eps)
    assert opt.state[b]["step"] == 1 and opt.state[a]["step"] == 2
    close(b.numpy(), [5.0 - 0.01 / (1 + 1e-8), 5.0 - 0.01 / (1 + 1e-8)])


def test_zero_grad_sets_none_by_default():
    a, b = param([1.0]), param([2.0])
    set_grad(a, [3.0])
    opt = SGD([a, b])
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_zero_grad_without_set_to_none_zeros_in_the_same_grad_tensor():
    a, b = param([1.0, 2.0], dtype=np.float32), param([2.0])
    set_grad(a, [3.0, 4.0])
    grad = a.grad
    SGD([a, b]).zero_grad(set_to_none=False)
    assert a.grad is grad
    assert a.grad.dtype == np.float32 and a.grad.shape == (2,)
    assert np.array_equal(a.grad.numpy(), [0.0, 0.0])
    assert b.grad is None


def test_closure_is_called_and_its_loss_returned():
    p = param([1.0, -3.0])
    opt = SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 10.0
    close(p.numpy(), [0.5, -1.5])  # p - 0.25 * 2p


# -- checkpoints ----------------------------------------------------------------------------------------------
def test_state_dict_layout_indexes_parameters_across_groups():
    a, b, c = param([1.0, 2.0]), param([3.0]), param([4.0, 5.0])
    opt = SGD([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1, momentum=0.9)
    set_grad(a, [1.0, 1.0])
    set_grad(c, [2.0, 2.0])
    opt.step()
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][1]["lr"] == 0.5 and sd["param_groups"][0]["momentum"] == 0.9
    assert sorted(sd["state"]) == [0, 2]
    close(sd["state"][2]["momentum_buffer"], [2.0, 2.0])


def test_state_dict_is_a_snapshot():
    p = param([1.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    set_grad(p, [1.0])
    opt.step()
    sd = opt.state_dict()
    opt.step()
    opt.param_groups[0]["lr"] = 0.5
    close(sd["state"][0]["momentum_buffer"], [1.0])
    assert sd["param_groups"][0]["lr"] == 0.1
    # and editing the snapshot does not reach the optimizer
    opt.state_dict()["state"][0]["momentum_buffer"][:] = 100.0
    close(opt.state[p]["momentum_buffer"], [1.9])


FACTORIES = {
    "sgd": lambda params: SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "sgd-dampening": lambda params: SGD(params, lr=0.1, momentum=0.5, dampening=0.3),
    "adam-amsgrad": lambda params: Adam(params, lr=0.05, amsgrad=True, weight_decay=1e-2),
    "adamw": lambda params: AdamW(params, lr=0.05, weight_decay=0.1),
}


def _groups(values):
    return [{"params": values[:2]}, {"params": values[2:], "lr": 0.02}]


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_round_trip_resumes_bit_identically(name):
    factory = FACTORIES[name]
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(s).astype(np.float32) for s in ((3,), (2, 2), (4,))]
    grads = [[rng.standard_normal(x.shape).astype(np.float32) for x in start] for _ in range(5)]

    def run(params, opt, steps):
        for step_grads in steps:
            for p, g in zip(params, step_grads):
                set_grad(p, g)
            opt.step()

    straight = [param(x, np.float32) for x in start]
    run(straight, factory(_groups(straight)), grads)

    first = [param(x, np.float32) for x in start]
    opt = factory(_groups(first))
    run(first, opt, grads[:3])
    saved = opt.state_dict()
    resumed = [param(p.numpy(), np.float32) for p in first]
    fresh = factory(_groups(resumed))
    fresh.load_state_dict(saved)
    run(resumed, fresh, grads[3:])

    for a, b in zip(straight, resumed):
        assert np.array_equal(a.numpy(), b.numpy())
    # Without the loaded state the continuation differs: the comparison above can fail.
    control = [param(p.numpy(), np.float32) for p in first]
    run(control, factory(_groups(control)), grads[3:])
    assert not all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(straight, control))


def test_load_takes_hyperparameters_from_the_snapshot():
    p = param([1.0])
    opt = SGD([p], lr=0.3, momentum=0.5)
    fresh = SGD([param([1.0])], lr=0.1)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.param_groups[0]["lr"] == 0.3 and fresh.param_groups[0]["momentum"] == 0.5


def test_load_casts_floating_state_to_the_parameter_dtype_and_copies():
    p32 = param([1.0, 2.0], dtype=np.float32)
    opt = SGD([p32], lr=0.1, momentum=0.9)
    set_grad(p32, [0.5, 0.25])
    opt.step()
    saved = opt.state_dict()
    p64 = param([1.0, 2.0])
    fresh = SGD([p64], lr=0.1, momentum=0.9)
    fresh.load_state_dict(saved)
    buf = fresh.state[p64]["momentum_buffer"]
    assert buf.dtype == np.float64
    close(buf, [0.5, 0.25])
    saved["state"][0]["momentum_buffer"][:] = 7.0
    close(fresh.state[p64]["momentum_buffer"], [0.5, 0.25])


def test_load_accepts_a_torch_style_array_step_counter():
    p = param([1.0])
    opt = Adam([p])
    set_grad(p, [1.0])
    opt.step()
    saved = opt.state_dict()
    saved["state"][0]["step"] = np.array(1.0, dtype=np.float32)
    fresh_p = param([1.0])
    fresh = Adam([fresh_p])
    fresh.load_state_dict(saved)
    assert fresh.state[fresh_p]["step"] == 1 and isinstance(fresh.state[fresh_p]["step"], int)


def _sgd_with_state(shapes, groups_of):
    params = [param(np.ones(s)) for s in shapes]
    opt = SGD(groups_of(params), lr=0.1, momentum=0.9)
    for p in params:
        set_grad(p, np.ones(p.shape))
    opt.step()
    return opt


def test_load_rejects_a_different_number_of_groups():
    saved = _sgd_with_state([(2,), (2,)], lambda ps: [{"params": [ps[0]]}, {"params": [ps[1]]}]).state_dict()
    target = SGD([param([1.0, 1.0]), param([1.0, 1.0])])
    with pytest.raises(ValueError, match=r"state_dict has 2 param groups, this optimizer has 1"):
        target.load_state_dict(saved)


def test_load_rejects_a_group_of_another_size():
    saved = _sgd_with_state([(2,), (2,)], lambda ps: ps).state_dict()
    target = SGD([param([1.0, 1.0])])
    message = r"param group 0 of state_dict has 2 parameters, this optimizer's group 0 has 1"
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(saved)


def test_load_rejects_state_of_another_shape_and_leaves_the_optimizer_unchanged():
    saved = _sgd_with_state([(3,)], lambda ps: ps).state_dict()
    saved["param_groups"][0]["lr"] = 0.7
    p = param([1.0, 1.0])
    target = SGD([p], lr=0.2)
    message = r"state\[0\]\['momentum_buffer'\] has shape \(3,\), its parameter has shape \(2,\)"
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(saved)
    assert target.param_groups[0]["lr"] == 0.2 and not target.state


def test_load_rejects_state_for_an_unlisted_index():
    saved = _sgd_with_state([(2,)], lambda ps: ps).state_dict()
    saved["state"][5] = saved["state"].pop(0)
    with pytest.raises(ValueError, match=r"entry for parameter index 5, which no param group lists"):
        SGD([param([1.0, 1.0])]).load_state_dict(saved)


def test_load_rejects_invalid_loaded_hyperparameters_and_missing_keys():
    saved = _sgd_with_state([(2,)], lambda ps: ps).state_dict()
    saved["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"param group 0 of the loaded state_dict: lr must be >= 0, got -1\.0"):
        SGD([param([1.0, 1.0])]).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"lacks the key\(s\) \['state'\]"):
        SGD([param([1.0, 1.0])]).load_state_dict({"param_groups": saved["param_groups"]})


# -- dtypes ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_parameters_and_state_keep_their_dtype(name, dtype):
    params = [param([1.0, -2.0, 0.5], dtype=dtype)]
    opt = FACTORIES[name](params)
    # A NumPy float64 learning rate must not promote float32 arrays (NEP 50 promotion rules).
    opt.param_groups[0]["lr"] = np.float64(0.01)
    for _ in range(3):
        set_grad(params[0], [0.3, -0.1, 2.0])
        opt.step()
    assert params[0].dtype == dtype
    arrays = [v for v in opt.state[params[0]].values() if hasattr(v, "dtype")]
    assert arrays and all(v.dtype == dtype for v in arrays)


# -- invalid input --------------------------------------------------------------------------------------------
def test_invalid_params_are_rejected_with_what_was_expected():
    a, b = param([1.0]), param([2.0])
    with pytest.raises(ValueError, match=r"SGD: params is an empty parameter list"):
        SGD([])
    with pytest.raises(ValueError, match=r"Adam: params is an empty parameter list"):
        Adam([{"params": []}])
    with pytest.raises(TypeError, match=r"got a single Parameter; wrap it in a list"):
        SGD(a)
    with pytest.raises(TypeError, match=r"params must be an iterable of Tensors or of param-group dicts, got int"):
        SGD(3)
    with pytest.raises(ValueError, match=r"param group 0: params\[1\] is the same tensor as params\[0\]"):
        SGD([a, a])
    with pytest.raises(ValueError, match=r"param group 1: params\[0\] is already in param group 0"):
        SGD([{"params": [a]}, {"params": [a]}])
    with pytest.raises(TypeError, match=r"param group 0: params\[1\] must be a segcore Tensor, got ndarray"):
        SGD([a, np.zeros(2)])
    with pytest.raises(ValueError, match=r"params\[0\] is not a leaf tensor"):
        SGD([a * 2.0])
    with pytest.raises(TypeError, match=r"'params' must be an ordered collection"):
        SGD([{"params": {a, b}}])
    with pytest.raises(TypeError, match=r"mixes Tensors and param-group dicts"):
        SGD([a, {"params": [b]}])
    with pytest.raises(ValueError, match=r"param group 0: missing the 'params' key"):
        SGD([{"lr": 0.1}])
    with pytest.raises(ValueError, match=r"SGD param group 1: lr must be >= 0, got -1"):
        SGD([{"params": [a]}, {"params": [b], "lr": -1}], lr=0.1)
    with pytest.raises(ValueError, match=r"Adam param group 0: betas\[0\] must be in \[0, 1\), got 1"):
        Adam([{"params": [a], "betas": (1, 0.5)}])


def test_gradient_of_wrong_shape_or_dtype_is_rejected_at_step():
    p = param([1.0, 2.0])
    opt = SGD([p], lr=0.1)
    p.grad = segcore.tensor(np.ones(3))
    with pytest.raises(ValueError, match=r"param group 0, params\[0\]: grad has shape \(3,\) and dtype float64, "
                                         r"expected the parameter's shape \(2,\) and dtype float64"):
        opt.step()
    p.grad = segcore.tensor(np.ones(2, dtype=np.float32))
    with pytest.raises(ValueError, match=r"grad has shape \(2,\) and dtype float32"):
        opt.step()
    close(p.numpy(), [1.0, 2.0])


def test_a_bad_gradient_anywhere_stops_the_step_before_any_update():
    a, b = param([1.0, 2.0]), param([3.0])
    opt = SGD([{"params": [a]}, {"params": [b]}], lr=0.1, momentum=0.9)
    set_grad(a, [1.0, 1.0])
    b.grad = segcore.tensor(np.ones((1, 1)))
    with pytest.raises(ValueError, match=r"param group 1, params\[0\]: grad has shape \(1, 1\)"):
        opt.step()
    close(a.numpy(), [1.0, 2.0])
    assert not opt.state


def test_load_accepts_state_given_as_tensors():
    p = param([1.0, 2.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    saved = opt.state_dict()
    saved["state"][0] = {"momentum_buffer": segcore.tensor(np.array([0.5, -0.5], dtype=np.float32))}
    opt.load_state_dict(saved)
    buf = opt.state[p]["momentum_buffer"]
    assert isinstance(buf, np.ndarray) and buf.dtype == np.float64
    set_grad(p, [1.0, 1.0])
    opt.step()
    # buf = 0.9 * [0.5, -0.5] + g = [1.45, 0.55]
    close(p.numpy(), [1.0 - 0.145, 2.0 - 0.055])
