"""MobileNetV3 feature extractor (Howard et al. 2019, "Searching for MobileNetV3").

Inverted residual blocks (1x1 expand, depthwise kxk, optional squeeze-and-excite, 1x1 project) with ReLU
or hardswish, as in the paper's tables 1 and 2. Module and attribute names follow torchvision's
``mobilenet_v3_*().features`` (``0.0.weight``, ``1.block.0.0.weight``, ``4.block.2.fc1.weight``, ...), so
its weights map key for key. Only the feature extractor is built: the classification head is not part of
a segmentation backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

import segcore.nn as nn
from segcore import Tensor

__all__ = ["MobileNetV3Features", "mobilenet_v3_large", "mobilenet_v3_small", "make_divisible"]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor`` (at least ``divisor``), never losing more than 10%.

    The rounding of the reference implementation, so channel counts match it for every width multiplier.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class _Block:
    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    use_hs: bool
    stride: int
    dilation: int


# (in, kernel, expanded, out, squeeze-excite, hardswish, stride): paper table 1 (large) and table 2 (small).
# Channels of the last stage are divided by ``tail_divider`` for the "reduced tail" variant.
_LARGE = (
    (16, 3, 16, 16, False, False, 1),
    (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1),
    (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2),
    (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1),
    (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2),
    (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
)
_SMALL = (
    (16, 3, 16, 16, True, False, 2),
    (16, 3, 72, 24, False, False, 2),
    (24, 3, 88, 24, False, False, 1),
    (24, 5, 96, 40, True, True, 2),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 120, 48, True, True, 1),
    (48, 5, 144, 48, True, True, 1),
    (48, 5, 288, 96, True, True, 2),
    (96, 5, 576, 96, True, True, 1),
    (96, 5, 576, 96, True, True, 1),
)
_TAIL_BLOCKS = {"large": 3, "small": 3}


def _blocks(arch: str, width_mult: float, dilated: bool, reduced_tail: bool) -> list[_Block]:
    table = _LARGE if arch == "large" else _SMALL
    tail_start = len(table) - _TAIL_BLOCKS[arch]
    divider = 2 if reduced_tail else 1
    blocks = []
    for i, (cin, k, exp, cout, se, hs, stride) in enumerate(table):
        in_tail = i >= tail_start
        # The first tail block reads the previous stage at full width; only its output is reduced.
        if in_tail and i > tail_start:
            cin, exp = cin // divider, exp // divider
        if in_tail:
            cout //= divider
        blocks.append(
            _Block(
                make_divisible(cin * width_mult),
                k,
                make_divisible(exp * width_mult),
                make_divisible(cout * width_mult),
                se,
                hs,
                stride,
                2 if dilated and in_tail else 1,
            )
        )
    return blocks


class ConvBNActivation(nn.Sequential):
    """Conv (no bias) + BatchNorm (+ activation): children ``0``, ``1``, ``2`` like torchvision's
    ``Conv2dNormActivation``. Padding keeps the size at stride 1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        activation: type[nn.Module] | None = nn.ReLU,
        rng: np.random.Generator | None = None,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=False,
                rng=rng,
            ),
            # MobileNetV3's BatchNorm settings (reference implementation): eps 1e-3, momentum 0.01.
            nn.BatchNorm2d(out_channels, eps=0.001, momentum=0.01),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention: ``x * hardsigmoid(fc2(relu(fc1(avgpool(x)))))`` (torchvision's attribute names)."""

    def __init__(self, channels: int, squeeze_channels: int, *, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1, rng=rng)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1, rng=rng)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, input: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(input)))))
        return input * scale


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise kxk -> [squeeze-excite] -> 1x1 project, with a residual when shapes allow."""

    def __init__(self, cfg: _Block, *, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        activation = nn.Hardswish if cfg.use_hs else nn.ReLU
        layers: list[nn.Module] = []
        if cfg.expanded != cfg.in_channels:
            layers.append(ConvBNActivation(cfg.in_channels, cfg.expanded, 1, activation=activation, rng=rng))
        # A dilated block keeps the resolution: dilation replaces the stride (output stride 16, not 32).
        stride = 1 if cfg.dilation > 1 else cfg.stride
        layers.append(
            ConvBNActivation(
                cfg.expanded,
                cfg.expanded,
                cfg.kernel,
                stride=stride,
                groups=cfg.expanded,
                dilation=cfg.dilation,
                activation=activation,
                rng=rng,
            )
        )
        if cfg.use_se:
            layers.append(SqueezeExcitation(cfg.expanded, make_divisible(cfg.expanded // 4), rng=rng))
        layers.append(ConvBNActivation(cfg.expanded, cfg.out_channels, 1, activation=None, rng=rng))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = cfg.stride == 1 and cfg.in_channels == cfg.out_channels
        self.out_channels = cfg.out_channels
        # First block of a new resolution stage (torchvision's ``_is_cn``): where stage outputs are taken.
        self.starts_stage = cfg.stride > 1

    def forward(self, input: Tensor) -> Tensor:
        out = self.block(input)
        return out + input if self.use_res_connect else out


class MobileNetV3Features(nn.Sequential):
    """MobileNetV3's feature layers; ``forward`` returns the outputs named in ``return_layers``.

    Children are ``0`` (stem), ``1``..``n`` (inverted residual blocks) and ``n+1`` (the last 1x1 conv), as in
    torchvision. Layers after the last returned one are not built.

    Parameters
    ----------
    arch:
        ``"large"`` or ``"small"``.
    width_mult:
        Multiplies every channel count (rounded to multiples of 8); ``0.25`` gives a model that trains on a CPU.
    dilated:
        Dilate the last stage instead of striding it (output stride 16 instead of 32), as segmentation does.
    reduced_tail:
        Halve the channels of the last stage (the paper's segmentation variant).
    return_layers:
        ``{layer index: output name}``; default ``{low: "low", last: "high"}`` where ``low`` is the last layer
        at output stride 8, LR-ASPP's two inputs. Use ``stage_indices`` to pick other stages.
    in_channels:
        Channels of the input images.
    rng:
        Generator for the initial weights.
    """

    def __init__(
        self,
        arch: str = "large",
        *,
        width_mult: float = 1.0,
        dilated: bool = False,
        reduced_tail: bool = False,
        return_layers: Mapping[str, str] | None = None,
        in_channels: int = 3,
        rng: np.random.Generator | None = None,
    ) -> None:
        if arch not in ("large", "small"):
            raise ValueError(f"MobileNetV3: arch must be 'large' or 'small', got {arch!r}")
        if not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ValueError(f"MobileNetV3: width_mult must be a positive number, got {width_mult!r}")
        blocks = _blocks(arch, float(width_mult), dilated, reduced_tail)
        layers: list[nn.Module] = [
            ConvBNActivation(in_channels, blocks[0].in_channels, 3, stride=2, activation=nn.Hardswish, rng=rng)
        ]
        layers += [InvertedResidual(cfg, rng=rng) for cfg in blocks]
        last_in = blocks[-1].out_channels
        layers.append(ConvBNActivation(last_in, 6 * last_in, 1, activation=nn.Hardswish, rng=rng))
        # The stem, the first layer of every later stage, and the last layer (torchvision's stage_indices).
        stage_indices = [0] + [i for i, m in enumerate(layers) if getattr(m, "starts_stage", False)]
        stage_indices.append(len(layers) - 1)
        if return_layers is None:
            # torchvision's choice for LR-ASPP: the layer that brings output stride 8, and the last layer.
            return_layers = {str(stage_indices[-4]): "low", str(len(layers) - 1): "high"}
        picked = {}
        for key, name in dict(return_layers).items():
            if not str(key).isdigit() or int(key) >= len(layers):
                raise ValueError(
                    f"MobileNetV3: return_layers key {key!r} is not a layer index in [0, {len(layers)})"
                )
            picked[int(key)] = str(name)
        super().__init__(*layers[: max(picked) + 1])
        # The reference implementation's initialisation (He normal, fan-out), not the layers' default, so
        # training from scratch starts from the same weight statistics.
        init_rng = np.random.default_rng() if rng is None else rng
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", rng=init_rng)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        #: Indices of the stem, of the first layer of each later stage and of the last layer that was built.
        self.stage_indices = tuple(i for i in stage_indices if i <= max(picked))
        self.return_layers = dict(sorted(picked.items()))
        self.channels = {name: _out_channels(layers[i]) for i, name in self.return_layers.items()}

    def forward(self, input: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        x = input
        for i, layer in enumerate(self):
            x = layer(x)
            if i in self.return_layers:
                out[self.return_layers[i]] = x
        return out


def _out_channels(layer: nn.Module) -> int:
    if isinstance(layer, InvertedResidual):
        return layer.out_channels
    return layer[0].out_channels


def mobilenet_v3_large(
    *,
    width_mult: float = 1.0,
    dilated: bool = False,
    reduced_tail: bool = False,
    return_layers: Mapping[str, str] | None = None,
    in_channels: int = 3,
    rng: np.random.Generator | None = None,
) -> MobileNetV3Features:
    """MobileNetV3-Large feature extractor returning named intermediate features."""
    return MobileNetV3Features(
        "large",
        width_mult=width_mult,
        dilated=dilated,
        reduced_tail=reduced_tail,
        return_layers=return_layers,
        in_channels=in_channels,
        rng=rng,
    )


def mobilenet_v3_small(
    *,
    width_mult: float = 1.0,
    dilated: bool = False,
    reduced_tail: bool = False,
    return_layers: Mapping[str, str] | None = None,
    in_channels: int = 3,
    rng: np.random.Generator | None = None,
) -> MobileNetV3Features:
    """MobileNetV3-Small feature extractor returning named intermediate features."""
    return MobileNetV3Features(
        "small",
        width_mult=width_mult,
        dilated=dilated,
        reduced_tail=reduced_tail,
        return_layers=return_layers,
        in_channels=in_channels,
        rng=rng,
    )
