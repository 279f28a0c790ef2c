"""GCN (Peng et al. 2017, "Large Kernel Matters — Improve Semantic Segmentation by Global Convolutional Network").

Each of res2..res5 goes through a Global Convolutional Network module — two branches, ``k x 1`` then ``1 x k``
and ``1 x k`` then ``k x 1``, summed, no nonlinearity — producing ``num_classes`` score maps, and a boundary
refinement block (BR: ``x + conv3x3(relu(conv3x3(x)))``). Starting from res5, the score map is upsampled x2 by
a transposed conv, added to the next finer level's and refined by a BR; after the fusion with res2 (1/4), two
more transposed conv + BR stages bring the scores to full resolution (the pipeline of the paper's Fig. 2).

Upsampling is learned (``ConvTranspose2d`` kernel 4, stride 2, padding 1, initialised to bilinear
interpolation), which doubles sizes exactly: input height and width must be multiples of the output stride
(32 by default) so that every level is exactly twice the one below; other sizes raise a ValueError.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..nn import Conv2d, ConvTranspose2d, Module, ModuleDict, ModuleList, ReLU, init
from .backbones.resnet import build_resnet
from .base import Backbone, SemanticSegmentationModel, as_image_batch, check_divisible
from .deeplabv3 import check_model_args

__all__ = ["GlobalConvModule", "BoundaryRefinement", "GCN", "gcn", "SEMANTIC_MODELS"]

_LEVELS = ("res5", "res4", "res3", "res2")


class GlobalConvModule(Module):
    """``left2(left1(x)) + right2(right1(x))``: ``k x 1`` then ``1 x k``, plus ``1 x k`` then ``k x 1``.

    A separable stand-in for a dense ``k x k`` conv with ``O(k)`` instead of ``O(k^2)`` weights; no activation
    between or after the convs (the paper's design). Spatial size is kept.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, rng: np.random.Generator) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.left1 = Conv2d(in_channels, out_channels, (kernel_size, 1), padding=(pad, 0), rng=rng)
        self.left2 = Conv2d(out_channels, out_channels, (1, kernel_size), padding=(0, pad), rng=rng)
        self.right1 = Conv2d(in_channels, out_channels, (1, kernel_size), padding=(0, pad), rng=rng)
        self.right2 = Conv2d(out_channels, out_channels, (kernel_size, 1), padding=(pad, 0), rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        return self.left2(self.left1(x)) + self.right2(self.right1(x))


class BoundaryRefinement(Module):
    """Residual boundary refinement: ``x + conv2(relu(conv1(x)))`` with 3x3 convs."""

    def __init__(self, channels: int, *, rng: np.random.Generator) -> None:
        super().__init__()
        self.conv1 = Conv2d(channels, channels, 3, padding=1, rng=rng)
        self.relu = ReLU()
        self.conv2 = Conv2d(channels, channels, 3, padding=1, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


def _upsample(channels: int, rng: np.random.Generator) -> ConvTranspose2d:
    deconv = ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False, rng=rng)
    init.bilinear_upsampling_(deconv.weight)
    return deconv


class GCN(SemanticSegmentationModel):
    """Global Convolutional Network over ``backbone``'s res2..res5 (see the module docstring).

    Attributes: ``backbone``; ``gcn`` and ``br`` (``ModuleDict`` keyed ``res5``..``res2``: GCN and BR per
    level); ``up`` (``ModuleDict`` keyed by the level each upsampler feeds: a transposed conv where the
    backbone halves the resolution between levels — absent where dilation keeps it); ``fuse_br`` (BR after
    the fusions with res4, res3, res2); ``final_up`` and ``final_br`` (1/4 -> 1/2 -> 1).
    """

    def __init__(
        self, backbone: Backbone, num_classes: int, *, kernel_size: int = 15, rng: np.random.Generator
    ) -> None:
        super().__init__(num_classes)
        missing = [n for n in _LEVELS if n not in backbone.feature_channels]
        if missing:
            raise ValueError(f"GCN: the backbone lacks features {missing} (needs res2..res5)")
        if backbone.feature_strides["res2"] != 4:
            raise ValueError(f"GCN: res2 must have stride 4, the backbone's has {backbone.feature_strides['res2']}")
        self.backbone = backbone
        self.kernel_size = kernel_size
        k = num_classes
        self.gcn = ModuleDict(
            {n: GlobalConvModule(backbone.feature_channels[n], k, kernel_size, rng=rng) for n in _LEVELS}
        )
        self.br = ModuleDict({n: BoundaryRefinement(k, rng=rng) for n in _LEVELS})
        self.up = ModuleDict(
            {
                finer: _upsample(k, rng)
                for coarser, finer in zip(_LEVELS, _LEVELS[1:])
                if backbone.feature_strides[coarser] != backbone.feature_strides[finer]
            }
        )
        self.fuse_br = ModuleDict({n: BoundaryRefinement(k, rng=rng) for n in _LEVELS[1:]})
        self.final_up = ModuleList([_upsample(k, rng), _upsample(k, rng)])
        self.final_br = ModuleList([BoundaryRefinement(k, rng=rng), BoundaryRefinement(k, rng=rng)])
        # Every level must be exactly twice the next coarser one for the x2 transposed convs.
        self.size_multiple = max(backbone.feature_strides[n] for n in _LEVELS)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, K, H, W)``; ``H`` and ``W`` must be multiples of :attr:`size_multiple`."""
        x = as_image_batch(x, self, "x")
        check_divisible(x, self.size_multiple, "gcn")
        features = self.backbone(x)
        score = self.br["res5"](self.gcn["res5"](features["res5"]))
        for level in _LEVELS[1:]:
            if level in self.up:
                score = self.up[level](score)
            skip = self.br[level](self.gcn[level](features[level]))
            score = self.fuse_br[level](score + skip)
        for up, br in zip(self.final_up, self.final_br):
            score = br(up(score))
        return score


def gcn(
    *,
    num_classes: int,
    backbone: str = "resnet152",
    output_stride: int = 32,
    kernel_size: int = 15,
    width: float = 1.0,
    rng: np.random.Generator | None = None,
) -> GCN:
    """GCN with boundary refinement on a ResNet (default ResNet-152, output stride 32, k = 15: the paper's).

    GCN modules output ``num_classes`` maps, so ``width`` scales only the backbone. Upsampling is by learned
    transposed convs initialised to bilinear interpolation; input sizes must be multiples of the output stride
    (32 by default). ``output_stride`` 16/8 dilates the backbone and drops the upsamplers between levels of
    equal resolution.
    """
    model = "gcn"
    rng = check_model_args(model, num_classes, output_stride, width, rng)
    if (
        not isinstance(kernel_size, (int, np.integer))
        or isinstance(kernel_size, bool)
        or kernel_size < 1
        or kernel_size % 2 == 0
    ):
        raise ValueError(f"{model}: kernel_size must be an odd positive int (the large kernel k), got {kernel_size!r}")
    net = build_resnet(backbone, output_stride=output_stride, width=width, rng=rng)
    return GCN(net, num_classes, kernel_size=int(kernel_size), rng=rng)


SEMANTIC_MODELS = {"gcn": gcn}
