"""Learning-rate schedules, ``torch.optim.lr_scheduler`` semantics.

Build a scheduler after its optimizer; it records each group's starting rate as ``initial_lr`` and sets
``lr`` for epoch 0 at once. Call ``scheduler.step()`` after each ``optimizer.step()``: ``last_epoch`` counts
the calls and every group's ``lr`` becomes the schedule's value at that count.

Every built-in schedule is evaluated in closed form from ``initial_lr`` and ``last_epoch`` (torch's
``_get_closed_form_lr``), never by multiplying the previous rate: rates do not drift over long runs, and
resuming or composing schedules cannot compound rounding. A rate edited by hand between two ``step()``
calls is therefore overwritten by the next one.

"Linear warm-up, then poly" is ``SequentialLR(opt, [LinearLR(opt, ...), PolyLR(opt, ...)], milestones=[w])``.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from bisect import bisect_right
from typing import Any, Sequence

from .optimizer import Optimizer, _check_int, _check_non_negative, _check_real

__all__ = [
    "LRScheduler",
    "StepLR",
    "MultiStepLR",
    "CosineAnnealingLR",
    "PolyLR",
    "LinearLR",
    "SequentialLR",
]


class LRScheduler(ABC):
    """Base class of the schedulers.

    Subclasses set their hyper-parameters, call ``super().__init__`` and define :meth:`get_lr`.

    Parameters
    ----------
    optimizer:
        The optimizer whose groups' ``lr`` is scheduled.
    last_epoch:
        ``-1`` to start a schedule; a larger value resumes one, which needs ``initial_lr`` in every group
        (load the optimizer's ``state_dict`` first). The constructor steps once, so ``last_epoch`` ends one
        higher.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        owner = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{owner}: optimizer must be a segcore.optim.Optimizer, got {type(optimizer).__name__}")
        last_epoch = _check_int(owner, "last_epoch", last_epoch, -1)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise ValueError(
                        f"{owner}: last_epoch={last_epoch} resumes a schedule, but param group {i} has no "
                        "'initial_lr'; load the optimizer's state_dict first or pass last_epoch=-1"
                    )
        self.base_lrs: list[float] = [
            _check_non_negative(owner, "initial_lr", group["initial_lr"], f"param group {i}")
            for i, group in enumerate(optimizer.param_groups)
        ]
        self.last_epoch = last_epoch
        self._last_lr: list[float] = []
        self.step()

    @abstractmethod
    def get_lr(self) -> list[float]:
        """The learning rate of each group at ``last_epoch``."""

    def step(self) -> None:
        """Advance the schedule by one epoch (or iteration) and write the new rates into the groups."""
        groups = self.optimizer.param_groups
        if len(groups) != len(self.base_lrs):
            raise ValueError(
                f"{type(self).__name__}: the optimizer has {len(groups)} param groups, but the scheduler was built "
                f"for {len(self.base_lrs)}; build the scheduler after the last add_param_group"
            )
        self.last_epoch += 1
        rates = [float(rate) for rate in self.get_lr()]
        for group, rate in zip(groups, rates):
            group["lr"] = rate
        self._last_lr = rates

    def get_last_lr(self) -> list[float]:
        """The rates set by the latest :meth:`step` (one per group)."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer (``last_epoch``, ``base_lrs``, hyper-parameters), copied."""
        return {key: copy.deepcopy(value) for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`state_dict` of the same scheduler class.

        The groups' ``lr`` is not touched: load the optimizer's own ``state_dict`` for that (as in torch).
        """
        owner = type(self).__name__
        if not isinstance(state_dict, dict):
            raise TypeError(f"{owner}.load_state_dict: state_dict must be a dict, got {type(state_dict).__name__}")
        expected = set(self.state_dict())
        if set(state_dict) != expected:
            missing = sorted(expected - set(state_dict))
            unexpected = sorted(set(state_dict) - expected)
            raise ValueError(
                f"{owner}.load_state_dict: keys do not match a {owner} state_dict "
                f"(missing {missing}, unexpected {unexpected})"
            )
        if len(state_dict["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"{owner}.load_state_dict: state_dict has {len(state_dict['base_lrs'])} base_lrs, "
                f"the optimizer has {len(self.optimizer.param_groups)} param groups"
            )
        self.__dict__.update(copy.deepcopy(state_dict))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, last_lr={self._last_lr})"


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs: ``lr = base_lr * gamma ** (epoch // step_size)``.

    Parameters
    ----------
    optimizer:
        The optimizer to schedule.
    step_size:
        Epochs between two decays (>= 1).
    gamma:
        Decay factor (>= 0).
    last_epoch:
        See :class:`LRScheduler`.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.step_size = _check_int("StepLR", "step_size", step_size, 1)
        self.gamma = _check_non_negative("StepLR", "gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the rate by ``gamma`` at each milestone: ``lr = base_lr * gamma ** (#milestones <= epoch)``.

    Parameters
    ----------
    optimizer:
        The optimizer to schedule.
    milestones:
        Strictly increasing epoch indices (>= 0).
    gamma:
        Decay factor (>= 0).
    last_epoch:
        See :class:`LRScheduler`.
    """

    def __init__(
        self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        self.milestones = _check_milestones("MultiStepLR", milestones, minimum=0)
        self.gamma = _check_non_negative("MultiStepLR", "gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        decays = bisect_right(self.milestones, self.last_epoch)
        return [base * self.gamma**decays for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing: ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.

    As in torch the curve is not clamped: past ``T_max`` it rises again (period ``2 * T_max``).

    Parameters
    ----------
    optimizer:
        The optimizer to schedule.
    T_max:
        Epochs from ``base_lr`` down to ``eta_min`` (>= 1).
    eta_min:
        Lowest rate (>= 0).
    last_epoch:
        See :class:`LRScheduler`.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        self.T_max = _check_int("CosineAnnealingLR", "T_max", T_max, 1)
        self.eta_min = _check_non_negative("CosineAnnealingLR", "eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        cosine = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * cosine for base in self.base_lrs]


class PolyLR(LRScheduler):
    """DeepLab's "poly" policy: ``lr = min_lr + (base_lr - min_lr) * (1 - t / total_iters) ** power``.

    ``t = min(epoch, total_iters)``, so the rate stays at ``min_lr`` once ``total_iters`` is reached. With
    ``min_lr=0`` this is ``torch.optim.lr_scheduler.PolynomialLR``; a non-zero ``min_lr`` is interpolated as
    in mmsegmentation's ``PolyLR``.

    Parameters
    ----------
    optimizer:
        The optimizer to schedule.
    total_iters:
        Steps until the rate reaches ``min_lr`` (>= 1).
    power:
        Exponent of the decay (>= 0); DeepLab uses 0.9.
    min_lr:
        Final rate (>= 0).
    last_epoch:
        See :class:`LRScheduler`.
    """

    def __init__(
        self, optimizer: Optimizer, total_iters: int, power: float = 0.9, min_lr: float = 0.0, last_epoch: int = -1
    ) -> None:
        self.total_iters = _check_int("PolyLR", "total_iters", total_iters, 1)
        self.power = _check_non_negative("PolyLR", "power", power)
        self.min_lr = _check_non_negative("PolyLR", "min_lr", min_lr)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        factor = (1 - min(self.last_epoch, self.total_iters) / self.total_iters) ** self.power
        return [self.min_lr + (base - self.min_lr) * factor for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the rate by a factor moving linearly from ``start_factor`` to ``end_factor`` (a linear warm-up).

    ``lr = base_lr * (start_factor + (end_factor - start_factor) * min(epoch, total_iters) / total_iters)``.

    Parameters
    ----------
    optimizer:
        The optimizer to schedule.
    start_factor:
        Factor at epoch 0, in ``(0, 1]``.
    end_factor:
        Factor from ``total_iters`` on, in ``[0, 1]``.
    total_iters:
        Steps of the ramp (>= 1).
    last_epoch:
        See :class:`LRScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        start = _check_real("LinearLR", "start_factor", start_factor)
        if not 0 < start <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1], got {start_factor!r}")
        end = _check_real("LinearLR", "end_factor", end_factor)
        if not 0 <= end <= 1:
            raise ValueError(f"LinearLR: end_factor must be in [0, 1], got {end_factor!r}")
        self.start_factor = start
        self.end_factor = end
        self.total_iters = _check_int("LinearLR", "total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        progress = min(self.last_epoch, self.total_iters) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * progress
        return [base * factor for base in self.base_lrs]


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another, switching at ``milestones`` (``torch`` semantics).

    Scheduler ``i`` is active from ``milestones[i - 1]`` on and sees its own epoch count restarted at 0
    there. Example, 5 warm-up iterations then poly decay over the remaining 995::

        warmup = LinearLR(opt, start_factor=0.1, total_iters=5)
        poly = PolyLR(opt, total_iters=995, power=0.9)
        sched = SequentialLR(opt, [warmup, poly], milestones=[5])

    Parameters
    ----------
    optimizer:
        The optimizer all ``schedulers`` were built on.
    schedulers:
        At least one scheduler.
    milestones:
        Strictly increasing epochs (>= 1) at which the next scheduler takes over; one fewer than schedulers.
    last_epoch:
        See :class:`LRScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedulers: Sequence[LRScheduler],
        milestones: Sequence[int],
        last_epoch: int = -1,
    ) -> None:
        owner = "SequentialLR"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{owner}: optimizer must be a segcore.optim.Optimizer, got {type(optimizer).__name__}")
        schedulers = list(schedulers)
        if not schedulers:
            raise ValueError(f"{owner}: schedulers is empty; expected at least one scheduler")
        for i, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(f"{owner}: schedulers[{i}] must be an LRScheduler, got {type(scheduler).__name__}")
            if scheduler.optimizer is not optimizer:
                raise ValueError(
                    f"{owner}: schedulers[{i}] ({type(scheduler).__name__}) was built on another optimizer; "
                    "all schedulers must share the optimizer given to SequentialLR"
                )
        milestones = _check_milestones(owner, milestones, minimum=1)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"{owner}: milestones must have one entry fewer than schedulers ({len(schedulers) - 1}), "
                f"got {len(milestones)}: {milestones}"
            )
        self._schedulers = schedulers
        self._milestones = milestones
        # Each scheduler set the rate for its own epoch 0 when it was built; start again from initial_lr.
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        super().__init__(optimizer, last_epoch)

    def _active(self) -> tuple[LRScheduler, int]:
        """The scheduler in charge at ``last_epoch`` and its own epoch count."""
        index = bisect_right(self._milestones, self.last_epoch)
        start = self._milestones[index - 1] if index else 0
        return self._schedulers[index], self.last_epoch - start

    def step(self) -> None:
        """Advance one epoch; at a milestone the next scheduler starts from its epoch 0."""
        self.last_epoch += 1
        scheduler, local_epoch = self._active()
        scheduler.last_epoch = local_epoch - 1
        scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def get_lr(self) -> list[float]:
        # step() keeps the active scheduler's own last_epoch in line with ours.
        return self._active()[0].get_lr()

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`LRScheduler.state_dict`, with each scheduler's state under ``"_schedulers"``."""
        state = {
            key: copy.deepcopy(value) for key, value in self.__dict__.items() if key not in ("optimizer", "_schedulers")
        }
        state["_schedulers"] = [scheduler.state_dict() for scheduler in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`state_dict` (this scheduler and each of its schedulers)."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"SequentialLR.load_state_dict: state_dict must be a dict, got {type(state_dict).__name__}")
        children = state_dict.get("_schedulers")
        if not isinstance(children, list) or len(children) != len(self._schedulers):
            found = len(children) if isinstance(children, list) else repr(children)
            raise ValueError(
                f"SequentialLR.load_state_dict: state_dict['_schedulers'] must list {len(self._schedulers)} "
                f"scheduler states, got {found}"
            )
        own = {key: value for key, value in state_dict.items() if key != "_schedulers"}
        expected = set(self.state_dict()) - {"_schedulers"}
        if set(own) != expected:
            raise ValueError(
                f"SequentialLR.load_state_dict: keys do not match a SequentialLR state_dict "
                f"(missing {sorted(expected - set(own))}, unexpected {sorted(set(own) - expected)})"
            )
        backups = [scheduler.state_dict() for scheduler in self._schedulers]
        try:
            for scheduler, child in zip(self._schedulers, children):
                scheduler.load_state_dict(child)
        except (TypeError, ValueError):
            # Leave every scheduler as it was rather than half loaded.
            for scheduler, backup in zip(self._schedulers, backups):
                scheduler.load_state_dict(backup)
            raise
        self.__dict__.update(copy.deepcopy(own))


def _check_milestones(owner: str, milestones: Sequence[int], minimum: int) -> list[int]:
    try:
        values = list(milestones)
    except TypeError:
        raise TypeError(
            f"{owner}: milestones must be a sequence of integers, got {type(milestones).__name__}"
        ) from None
    checked = [_check_int(owner, f"milestones[{i}]", value, minimum) for i, value in enumerate(values)]
    if any(b <= a for a, b in zip(checked, checked[1:])):
        raise ValueError(f"{owner}: milestones must be strictly increasing, got {values}")
    return checked
