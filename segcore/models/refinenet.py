"""RefineNet (Lin et al. 2017, "RefineNet: Multi-Path Refinement Networks for High-Resolution Semantic
Segmentation"), the 4-cascaded variant on a ResNet.

RefineNet-4 reads res5; RefineNet-3..1 each read one backbone feature (res4, res3, res2) and the output of the
block above. A block has, per input path, two residual conv units (RCU: ReLU-conv3x3-ReLU-conv3x3 + identity),
then multi-resolution fusion (a 3x3 conv per path to the smallest path width, bilinear upsampling to the largest
resolution, sum; skipped for a single path), chained residual pooling (ReLU, then a chain of 5x5 stride-1
max-pool + 3x3 conv blocks, each block's output added to the running sum) and one output RCU. Paths carry 512
channels in RefineNet-4 and 256 elsewhere; backbone features enter through a 3x3 conv to that width (the
dimension reduction of the released code). Two more RCUs and a 1x1 classifier act on RefineNet-1's output at
1/4 resolution, which is upsampled bilinearly to the input. No batch norm outside the backbone (as the paper).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..nn import Conv2d, MaxPool2d, Module, ModuleList, ReLU, Sequential
from .backbones.resnet import build_resnet, scaled
from .base import Backbone, SemanticSegmentationModel, as_image_batch
from .deeplabv3 import check_model_args

__all__ = [
    "ResidualConvUnit",
    "ChainedResidualPooling",
    "RefineNetBlock",
    "RefineNet",
    "refinenet",
    "SEMANTIC_MODELS",
]


def _conv3x3(in_channels: int, out_channels: int, rng: np.random.Generator) -> Conv2d:
    return Conv2d(in_channels, out_channels, 3, padding=1, rng=rng)


class ResidualConvUnit(Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convs (ResNet's unit without batch norm)."""

    def __init__(self, channels: int, *, rng: np.random.Generator) -> None:
        super().__init__()
        self.relu = ReLU()
        self.conv1 = _conv3x3(channels, channels, rng)
        self.conv2 = _conv3x3(channels, channels, rng)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.relu(self.conv1(self.relu(x))))


class ChainedResidualPooling(Module):
    """ReLU, then ``num_blocks`` chained (5x5 stride-1 max-pool, 3x3 conv) blocks, all outputs summed.

    Each block pools the previous block's output (not the sum), so the chain sees growing windows; the sum
    starts from the ReLU'd input. ``blocks.i`` is ``(MaxPool2d, Conv2d)``.
    """

    def __init__(self, channels: int, num_blocks: int, *, rng: np.random.Generator) -> None:
        super().__init__()
        self.relu = ReLU()
        self.blocks = ModuleList(
            [
                Sequential(MaxPool2d(5, stride=1, padding=2), _conv3x3(channels, channels, rng))
                for _ in range(num_blocks)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        out, path = x, x
        for block in self.blocks:
            path = block(path)
            out = out + path
        return out


class RefineNetBlock(Module):
    """One RefineNet block over paths of widths ``channels`` (first path = highest resolution).

    ``adapt.i`` (two RCUs per path), ``fuse.i`` (3x3 conv to ``min(channels)``, only with several paths),
    ``crp`` (:class:`ChainedResidualPooling`) and ``output`` (one RCU). ``forward`` takes the path tensors in
    the order of ``channels`` and returns ``min(channels)`` maps at the first path's resolution.
    """

    def __init__(self, channels: Sequence[int], crp_blocks: int, *, rng: np.random.Generator) -> None:
        super().__init__()
        self.channels = tuple(channels)
        out = min(self.channels)
        self.adapt = ModuleList(
            [Sequential(ResidualConvUnit(c, rng=rng), ResidualConvUnit(c, rng=rng)) for c in self.channels]
        )
        if len(self.channels) > 1:
            self.fuse = ModuleList([_conv3x3(c, out, rng) for c in self.channels])
        self.crp = ChainedResidualPooling(out, crp_blocks, rng=rng)
        self.output = ResidualConvUnit(out, rng=rng)
        self.out_channels = out

    def forward(self, *paths: Tensor) -> Tensor:
        if len(paths) != len(self.channels):
            raise ValueError(f"RefineNetBlock: expected {len(self.channels)} inputs, got {len(paths)}")
        adapted = [adapt(p) for adapt, p in zip(self.adapt, paths)]
        if len(adapted) == 1:
            x = adapted[0]
        else:
            size = adapted[0].shape[-2:]
            x = None
            for fuse, p in zip(self.fuse, adapted):
                p = fuse(p)
                if p.shape[-2:] != size:
                    p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
                x = p if x is None else x + p
        return self.output(self.crp(x))


class RefineNet(SemanticSegmentationModel):
    """4-cascaded RefineNet over ``backbone``'s res2..res5 (see the module docstring).

    Attributes: ``backbone``, ``reduce`` (``OrderedDict`` keys ``res5``..``res2``: 3x3 convs to the path
    width), ``refine4``..``refine1``, ``classifier`` (two RCUs + 1x1 conv).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        channels: int = 256,
        top_channels: int = 512,
        crp_blocks: int = 2,
        rng: np.random.Generator,
    ) -> None:
        super().__init__(num_classes)
        missing = [n for n in ("res2", "res3", "res4", "res5") if n not in backbone.feature_channels]
        if missing:
            raise ValueError(f"RefineNet: the backbone lacks features {missing} (needs res2..res5)")
        self.backbone = backbone
        widths = OrderedDict([("res5", top_channels), ("res4", channels), ("res3", channels), ("res2", channels)])
        self.reduce = Sequential(
            OrderedDict((name, _conv3x3(backbone.feature_channels[name], w, rng)) for name, w in widths.items())
        )
        self.refine4 = RefineNetBlock((top_channels,), crp_blocks, rng=rng)
        self.refine3 = RefineNetBlock((channels, self.refine4.out_channels), crp_blocks, rng=rng)
        self.refine2 = RefineNetBlock((channels, channels), crp_blocks, rng=rng)
        self.refine1 = RefineNetBlock((channels, channels), crp_blocks, rng=rng)
        self.classifier = Sequential(
            ResidualConvUnit(channels, rng=rng),
            ResidualConvUnit(channels, rng=rng),
            Conv2d(channels, num_classes, 1, rng=rng),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, K, H, W)``: scores at res2's resolution (1/4), upsampled bilinearly."""
        x = as_image_batch(x, self, "x")
        features = self.backbone(x)
        reduced = {name: conv(features[name]) for name, conv in self.reduce.named_children()}
        y = self.refine4(reduced["res5"])
        y = self.refine3(reduced["res4"], y)
        y = self.refine2(reduced["res3"], y)
        y = self.refine1(reduced["res2"], y)
        return F.interpolate(self.classifier(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


def refinenet(
    *,
    num_classes: int,
    backbone: str = "resnet101",
    output_stride: int = 32,
    crp_blocks: int = 2,
    width: float = 1.0,
    rng: np.random.Generator | None = None,
) -> RefineNet:
    """RefineNet (4-cascaded) on a ResNet (default ResNet-101, undilated: output stride 32).

    ``crp_blocks`` pooling blocks per chained residual pooling: 2, the count the CVPR paper's text uses; the
    later released code and Light-Weight RefineNet use 4. Paths are 512 channels wide in RefineNet-4 and 256
    elsewhere (times ``width``, which also scales the backbone). Any input size works (fusion upsamples
    bilinearly to the finer path's size).
    """
    model = "refinenet"
    rng = check_model_args(model, num_classes, output_stride, width, rng)
    if not isinstance(crp_blocks, (int, np.integer)) or isinstance(crp_blocks, bool) or crp_blocks < 1:
        raise ValueError(f"{model}: crp_blocks must be a positive int (pooling blocks per CRP), got {crp_blocks!r}")
    net = build_resnet(backbone, output_stride=output_stride, width=width, rng=rng)
    return RefineNet(
        net, num_classes, channels=scaled(256, width), top_channels=scaled(512, width), crp_blocks=int(crp_blocks),
        rng=rng,
    )  # fmt: skip


SEMANTIC_MODELS = {"refinenet": refinenet}
