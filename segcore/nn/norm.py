"""Normalisation layers: ``BatchNorm2d``, ``GroupNorm``, ``LayerNorm`` (torch names, buffers and defaults)."""

from __future__ import annotations

import numbers
from typing import Any, Mapping

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..backend import Backend
from ._utils import Factory, check_positive_int
from .module import Module

__all__ = ["BatchNorm2d", "GroupNorm", "LayerNorm"]


def _check_eps(eps: Any, layer: str) -> float:
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"{layer}: eps must be a non-negative number, got {eps!r}")
    return float(eps)


class BatchNorm2d(Module):
    """Batch normalisation of ``(N, C, H, W)`` inputs per channel.

    In training mode it normalises with the batch statistics and updates ``running_mean``/``running_var``
    (``running = (1 - momentum) * running + momentum * batch``, unbiased batch variance; ``momentum=None``
    uses the cumulative average ``1 / num_batches_tracked``). In eval mode it normalises with the running
    statistics. Buffers ``running_mean``, ``running_var`` and ``num_batches_tracked`` (int64) are in the
    ``state_dict`` under torch's names. ``weight`` starts at 1 and ``bias`` at 0.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype: Any = None,
        backend: str | Backend | None = None,
    ) -> None:
        super().__init__()
        self.num_features = check_positive_int(num_features, "num_features", "BatchNorm2d")
        self.eps = _check_eps(eps, "BatchNorm2d")
        if momentum is not None and (
            not isinstance(momentum, numbers.Real) or isinstance(momentum, bool) or not 0.0 <= momentum <= 1.0
        ):
            raise ValueError(f"BatchNorm2d: momentum must be a number in [0, 1] or None, got {momentum!r}")
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        # Nothing random here: the rng argument of other layers would be unused, so it is not accepted.
        factory = Factory(None, dtype, backend, "BatchNorm2d")
        if self.affine:
            self.weight = factory.parameter((num_features,), 1.0)
            self.bias = factory.parameter((num_features,), 0.0)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", factory.tensor(np.zeros(num_features)))
            self.register_buffer("running_var", factory.tensor(np.ones(num_features)))
            self.register_buffer("num_batches_tracked", factory.tensor(np.array(0), dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, batch count 0."""
        if self.track_running_stats:
            backend = self.running_mean.backend
            xp = backend.xp
            self.running_mean.data = xp.zeros_like(self.running_mean.data)
            self.running_var.data = xp.ones_like(self.running_var.data)
            self.num_batches_tracked.data = xp.zeros_like(self.num_batches_tracked.data)

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor) or input.ndim != 4:
            shape = input.shape if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"BatchNorm2d: expected a 4-D input (N, C, H, W), got {shape}")
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm2d: input has {input.shape[1]} channels (shape {input.shape}), "
                f"the layer was built for num_features={self.num_features}"
            )
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            counter = self.num_batches_tracked
            # Rebind rather than increment in place (the array may be shared with a state_dict snapshot);
            # xp.asarray keeps a 0-d array where NumPy's ``+`` would return a scalar.
            counter.data = counter.backend.xp.asarray(counter.data + 1, dtype=counter.data.dtype)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked.item())
        # Batch statistics in training, and also in eval when there are no running statistics (as torch).
        use_batch_stats = self.training or self.running_mean is None
        update = not self.training or self.track_running_stats
        return F.batch_norm(
            input,
            self.running_mean if update else None,
            self.running_var if update else None,
            self.weight,
            self.bias,
            use_batch_stats,
            momentum,
            self.eps,
        )

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        missing_keys: list[str],
        mismatches: list[str],
        loaded_keys: set[str],
    ) -> None:
        # Checkpoints from torch < 0.4.1 (many published torchvision weights) have no num_batches_tracked;
        # torch then keeps the counter, and so do we, instead of reporting a missing key.
        before = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, missing_keys, mismatches, loaded_keys)
        legacy = prefix + "num_batches_tracked"
        if legacy in missing_keys[before:]:
            missing_keys.remove(legacy)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class GroupNorm(Module):
    """Group normalisation: per sample, channels split into ``num_groups`` groups normalised separately.

    ``weight`` (ones) and ``bias`` (zeros) are per channel when ``affine``.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        dtype: Any = None,
        backend: str | Backend | None = None,
    ) -> None:
        super().__init__()
        self.num_groups = check_positive_int(num_groups, "num_groups", "GroupNorm")
        self.num_channels = check_positive_int(num_channels, "num_channels", "GroupNorm")
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"GroupNorm: num_channels={num_channels} must be divisible by num_groups={num_groups}"
            )
        self.eps = _check_eps(eps, "GroupNorm")
        self.affine = bool(affine)
        factory = Factory(None, dtype, backend, "GroupNorm")
        if self.affine:
            self.weight = factory.parameter((num_channels,), 1.0)
            self.bias = factory.parameter((num_channels,), 0.0)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input: Tensor) -> Tensor:
        if isinstance(input, Tensor) and input.ndim >= 2 and input.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupNorm: input has {input.shape[1]} channels (shape {input.shape}), "
                f"the layer was built for num_channels={self.num_channels}"
            )
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` dimensions.

    ``weight`` (ones) and ``bias`` (zeros, unless ``bias=False``) have shape ``normalized_shape`` when
    ``elementwise_affine``.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...] | list[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: Any = None,
        backend: str | Backend | None = None,
    ) -> None:
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
            shape: tuple[int, ...] = (int(normalized_shape),)
        elif isinstance(normalized_shape, (tuple, list)) and normalized_shape and all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in normalized_shape
        ):
            shape = tuple(int(n) for n in normalized_shape)
        else:
            raise ValueError(
                f"LayerNorm: normalized_shape must be a positive int or a non-empty sequence of them, "
                f"got {normalized_shape!r}"
            )
        self.normalized_shape = shape
        self.eps = _check_eps(eps, "LayerNorm")
        self.elementwise_affine = bool(elementwise_affine)
        factory = Factory(None, dtype, backend, "LayerNorm")
        if self.elementwise_affine:
            self.weight = factory.parameter(shape, 1.0)
            if bias:
                self.bias = factory.parameter(shape, 0.0)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
