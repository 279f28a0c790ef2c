"""Learning-rate schedules: sequences against their closed forms evaluated by hand, resuming, validation."""

import math

import numpy as np
import pytest

import segcore
from segcore.nn import Parameter
from segcore.optim import SGD
from segcore.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    MultiStepLR,
    PolyLR,
    SequentialLR,
    StepLR,
)


def make_optimizer(*lrs: float) -> SGD:
    groups = [{"params": [Parameter(segcore.tensor([1.0, 2.0]))], "lr": lr} for lr in lrs]
    return SGD(groups, lr=lrs[0])


def run(optimizer, scheduler, steps: int) -> list[list[float]]:
    """Rates at epoch 0 (set by the constructor) and after each of ``steps`` scheduler steps."""
    rates = [scheduler.get_last_lr()]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr())
        assert [g["lr"] for g in optimizer.param_groups] == rates[-1]
    return rates


def first_group(rates):
    return [r[0] for r in rates]


def test_construction_records_initial_lr_and_sets_epoch_zero():
    opt = make_optimizer(0.5, 0.05)
    sched = StepLR(opt, step_size=3)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.5, 0.05]
    assert sched.base_lrs == [0.5, 0.05] and sched.last_epoch == 0


def test_step_lr():
    opt = make_optimizer(0.5, 0.05)
    rates = run(opt, StepLR(opt, step_size=3, gamma=0.1), 9)
    expected = [0.5] * 3 + [0.05] * 3 + [0.005] * 3 + [0.0005]
    assert first_group(rates) == pytest.approx(expected, rel=1e-12)
    assert [r[1] for r in rates] == pytest.approx([e / 10 for e in expected], rel=1e-12)


def test_multi_step_lr():
    opt = make_optimizer(1.0)
    rates = run(opt, MultiStepLR(opt, milestones=[2, 5], gamma=0.5), 7)
    assert first_group(rates) == pytest.approx([1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25], rel=1e-12)


def test_cosine_annealing_closed_form_including_past_t_max():
    opt = make_optimizer(1.0)
    rates = run(opt, CosineAnnealingLR(opt, T_max=4, eta_min=0.1), 6)
    r = math.sqrt(2) / 2  # cos(pi/4)
    # eta_min + (1 - eta_min) * (1 + cos(pi t / 4)) / 2; torch does not clamp, so it rises again after T_max
    expected = [1.0, 0.1 + 0.45 * (1 + r), 0.55, 0.1 + 0.45 * (1 - r), 0.1, 0.1 + 0.45 * (1 - r), 0.55]
    assert first_group(rates) == pytest.approx(expected, rel=1e-12)


def test_poly_lr_is_deeplab_poly_and_stays_at_zero():
    opt = make_optimizer(0.01)
    rates = run(opt, PolyLR(opt, total_iters=4), 6)
    expected = [0.01, 0.01 * 0.75**0.9, 0.01 * 0.5**0.9, 0.01 * 0.25**0.9, 0.0, 0.0, 0.0]
    assert first_group(rates) == pytest.approx(expected, rel=1e-12, abs=0)
    assert rates[2][0] == pytest.approx(0.01 * 0.535886731, rel=1e-8)  # 2 ** -0.9


def test_poly_lr_min_lr_interpolates():
    opt = make_optimizer(0.011)
    rates = run(opt, PolyLR(opt, total_iters=2, power=1.0, min_lr=0.001), 3)
    assert first_group(rates) == pytest.approx([0.011, 0.006, 0.001, 0.001], rel=1e-12)


def test_linear_lr_default_warmup():
    opt = make_optimizer(0.3)
    rates = run(opt, LinearLR(opt), 6)
    # factor 1/3 -> 1 over 5 steps: 0.3 * (1/3 + (2/3) t / 5)
    assert first_group(rates) == pytest.approx([0.1, 0.14, 0.18, 0.22, 0.26, 0.3, 0.3], rel=1e-12)


def test_sequential_linear_warmup_then_poly():
    opt = make_optimizer(1.0, 0.1)
    warmup = LinearLR(opt, start_factor=0.25, total_iters=2)
    poly = PolyLR(opt, total_iters=4, power=1.0)
    sched = SequentialLR(opt, [warmup, poly], milestones=[2])
    rates = run(opt, sched, 7)
    # warm-up epochs 0, 1: 0.25, 0.25 + 0.75 / 2; poly restarts at its epoch 0 on epoch 2: 1 - t / 4
    expected = [0.25, 0.625, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert first_group(rates) == pytest.approx(expected, rel=1e-12)
    assert [r[1] for r in rates] == pytest.approx([e / 10 for e in expected], rel=1e-12)
    assert poly.last_epoch == 5 and sched.last_epoch == 7


def test_scheduled_rate_is_used_by_the_optimizer():
    p = Parameter(segcore.tensor(np.array([0.0])))
    opt = SGD([p], lr=1.0)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        p.grad = segcore.tensor(np.array([1.0]))
        opt.step()
        sched.step()
    assert p.numpy()[0] == pytest.approx(-(1.0 + 0.5 + 0.25), rel=1e-15)


FACTORIES = {
    "step": lambda opt: StepLR(opt, step_size=2, gamma=0.5),
    "cosine": lambda opt: CosineAnnealingLR(opt, T_max=5, eta_min=0.01),
    "warmup-poly": lambda opt: SequentialLR(
        opt, [LinearLR(opt, start_factor=0.1, total_iters=3), PolyLR(opt, total_iters=6)], milestones=[3]
    ),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_state_dict_round_trip_resumes_the_sequence(name):
    factory = FACTORIES[name]
    opt = make_optimizer(1.0, 0.1)
    straight = run(opt, factory(opt), 8)

    opt = make_optimizer(1.0, 0.1)
    sched = factory(opt)
    run(opt, sched, 3)
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()

    fresh_opt = make_optimizer(1.0, 0.1)
    fresh = factory(fresh_opt)
    fresh_opt.load_state_dict(saved_opt)
    fresh.load_state_dict(saved_sched)
    assert fresh.last_epoch == 3 and fresh.get_last_lr() == straight[3]
    assert run(fresh_opt, fresh, 5)[1:] == straight[4:]


def test_last_epoch_resumes_from_initial_lr():
    opt = make_optimizer(1.0)
    StepLR(opt, step_size=2)
    opt.param_groups[0]["lr"] = 123.0  # the resumed schedule recomputes from initial_lr, not from lr
    sched = StepLR(opt, step_size=2, gamma=0.1, last_epoch=4)
    assert sched.last_epoch == 5
    assert sched.get_last_lr() == pytest.approx([0.01], rel=1e-12)


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda o: StepLR(o, step_size=0), ValueError, r"StepLR: step_size must be >= 1, got 0"),
        (lambda o: StepLR(o, step_size=1.5), TypeError, r"StepLR: step_size must be an integer, got 1\.5"),
        (lambda o: StepLR(o, 2, gamma=-0.1), ValueError, r"StepLR: gamma must be >= 0, got -0\.1"),
        (
            lambda o: MultiStepLR(o, [5, 2]),
            ValueError,
            r"MultiStepLR: milestones must be strictly increasing, got \[5, 2\]",
        ),
        (lambda o: MultiStepLR(o, [1, -2]), ValueError, r"MultiStepLR: milestones\[1\] must be >= 0, got -2"),
        (lambda o: CosineAnnealingLR(o, T_max=0), ValueError, r"CosineAnnealingLR: T_max must be >= 1, got 0"),
        (lambda o: CosineAnnealingLR(o, 4, eta_min=-1.0), ValueError, r"eta_min must be >= 0, got -1\.0"),
        (lambda o: PolyLR(o, total_iters=0), ValueError, r"PolyLR: total_iters must be >= 1, got 0"),
        (lambda o: PolyLR(o, 10, power=-0.9), ValueError, r"PolyLR: power must be >= 0, got -0\.9"),
        (lambda o: PolyLR(o, 10, min_lr=-1e-4), ValueError, r"PolyLR: min_lr must be >= 0, got -0\.0001"),
        (lambda o: LinearLR(o, start_factor=0), ValueError, r"LinearLR: start_factor must be in \(0, 1\], got 0"),
        (lambda o: LinearLR(o, end_factor=1.5), ValueError, r"LinearLR: end_factor must be in \[0, 1\], got 1\.5"),
        (lambda o: LinearLR(o, total_iters=0), ValueError, r"LinearLR: total_iters must be >= 1, got 0"),
        (lambda o: StepLR([o], 2), TypeError, r"StepLR: optimizer must be a segcore\.optim\.Optimizer, got list"),
        (lambda o: StepLR(o, 2, last_epoch=-2), ValueError, r"StepLR: last_epoch must be >= -1, got -2"),
        (
            lambda o: StepLR(o, 2, last_epoch=3),
            ValueError,
            r"last_epoch=3 resumes a schedule, but param group 0 has no 'initial_lr'",
        ),
        (lambda o: SequentialLR(o, [], []), ValueError, r"SequentialLR: schedulers is empty"),
        (
            lambda o: SequentialLR(o, [LinearLR(o), StepLR(o, 2)], milestones=[]),
            ValueError,
            r"milestones must have one entry fewer than schedulers \(1\), got 0",
        ),
        (
            lambda o: SequentialLR(o, [LinearLR(o), StepLR(make_optimizer(1.0), 2)], milestones=[5]),
            ValueError,
            r"schedulers\[1\] \(StepLR\) was built on another optimizer",
        ),
        (
            lambda o: SequentialLR(o, [LinearLR(o), StepLR(o, 2)], milestones=[0]),
            ValueError,
            r"SequentialLR: milestones\[0\] must be >= 1, got 0",
        ),
    ],
)
def test_invalid_arguments_name_the_argument(build, error, message):
    with pytest.raises(error, match=message):
        build(make_optimizer(1.0))


def test_load_state_dict_of_another_scheduler_class_is_rejected():
    opt = make_optimizer(1.0)
    saved = StepLR(opt, 2).state_dict()
    cosine = CosineAnnealingLR(opt, T_max=4)
    with pytest.raises(ValueError, match=r"missing \['T_max', 'eta_min'\], unexpected \['gamma', 'step_size'\]"):
        cosine.load_state_dict(saved)
    assert cosine.T_max == 4 and cosine.last_epoch == 0


def test_group_added_after_the_scheduler_is_reported_at_step():
    opt = make_optimizer(1.0)
    sched = StepLR(opt, 2)
    opt.add_param_group({"params": [Parameter(segcore.tensor([0.0]))]})
    with pytest.raises(ValueError, match=r"the optimizer has 2 param groups, but the scheduler was built for 1"):
        sched.step()


def test_sequential_load_failure_leaves_every_scheduler_unchanged():
    opt = make_optimizer(1.0)
    sched = SequentialLR(opt, [LinearLR(opt, total_iters=2), PolyLR(opt, total_iters=4)], milestones=[2])
    run(opt, sched, 3)
    saved = sched.state_dict()
    saved["_schedulers"][1] = StepLR(make_optimizer(1.0), 2).state_dict()  # wrong class for the second one
    other_opt = make_optimizer(1.0)
    warmup, poly = LinearLR(other_opt, total_iters=2), PolyLR(other_opt, total_iters=4)
    target = SequentialLR(other_opt, [warmup, poly], milestones=[2])
    with pytest.raises(ValueError, match=r"PolyLR\.load_state_dict: keys do not match"):
        target.load_state_dict(saved)
    assert warmup.last_epoch == 0 and poly.last_epoch == 0 and target.last_epoch == 0
