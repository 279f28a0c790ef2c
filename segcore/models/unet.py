"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015).

A contracting path of ``depth`` levels (two 3x3 conv + ReLU, then 2x2 max-pool; 64, 128, 256, 512 channels
and a 1024-channel bottom level in the paper), dropout at the end of the contracting path, and an expanding
path whose every step is a 2x2 up-convolution (stride 2, halving the channels), concatenation with the
contracting path's features at that level and two 3x3 conv + ReLU; a 1x1 conv gives the class scores.
Weights start from the paper's Gaussian with std ``sqrt(2 / N)`` (``N`` inputs per unit), biases from 0.

``padding="same"`` (default) pads the 3x3 convs by 1; odd sizes lose a row or column to pooling, so each
upsampled map is zero-padded to its skip's size and the output has the input size.
``padding="valid"`` is the paper's network: unpadded convs, skips center-cropped to the upsampled map; a
572x572 tile gives a 388x388 map (:meth:`UNet.forward_features` runs a tile as is). ``forward`` implements
the paper's overlap-tile strategy for the whole image: the input is mirror-padded (92 pixels each side for
depth 4, more at the bottom/right to reach a valid tile size) so that the valid output covers exactly the
input, and the output is cropped to it; output pixel ``(i, j)`` is the prediction for input pixel ``(i, j)``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..nn import BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, ModuleList, ReLU, Sequential, init
from .backbones.vgg import check_bool, check_positive_int, check_probability, check_rng, check_width, scaled_channels
from .base import SemanticSegmentationModel, as_image_batch

__all__ = ["UNet", "unet", "SEMANTIC_MODELS"]


def _mirror_pad(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """Mirror-extend ``x`` (reflection without repeating the edge) by any amounts.

    F.pad's reflect mode pads less than the size; reflecting the growing image repeatedly continues the
    same mirror pattern. A 1-pixel axis has nothing to reflect: its mirror image is the pixel repeated.
    """
    for axis, (before, after) in ((2, (top, bottom)), (3, (left, right))):
        while before > 0 or after > 0:
            n = x.shape[axis]
            if n == 1:
                step, mode = (before, after), "replicate"
            else:
                step = (min(before, n - 1), min(after, n - 1))
                mode = "reflect"
            pad = (0, 0, *step) if axis == 2 else (*step, 0, 0)
            x = F.pad(x, pad, mode=mode)
            before, after = before - step[0], after - step[1]
    return x


class UNet(SemanticSegmentationModel):
    """U-Net: ``encoder`` (double convs of the contracting path), ``bottleneck``, ``dropout``, ``upconvs``
    (2x2 transposed convs), ``decoder`` (double convs of the expanding path, deepest first), ``classifier``.

    Parameters
    ----------
    num_classes:
        Number of classes (2 in the paper's cell segmentation).
    in_channels:
        Image channels (the paper's microscopy images have 1).
    width:
        Multiplier of every channel count (64 at the first level).
    depth:
        Number of down-sampling steps (4 in the paper).
    padding:
        ``"same"`` or ``"valid"`` (the paper's unpadded convolutions, see the module docstring).
    batch_norm:
        BatchNorm after every 3x3 conv (not in the paper; convs then have no bias).
    dropout:
        Dropout probability at the end of the contracting path.
    rng:
        Generator for the initial weights and the dropout masks.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 3,
        width: float = 1.0,
        depth: int = 4,
        padding: str = "same",
        batch_norm: bool = False,
        dropout: float = 0.5,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(num_classes)
        if padding not in ("same", "valid"):
            raise ValueError(f"unet: padding must be 'same' or 'valid', got {padding!r}")
        rng = check_rng(rng, "unet")
        rng = np.random.default_rng() if rng is None else rng
        self.in_channels = check_positive_int(in_channels, "in_channels", "unet")
        self.depth = check_positive_int(depth, "depth", "unet")
        self.padding = padding
        self.batch_norm = check_bool(batch_norm, "batch_norm", "unet")
        width = check_width(width, "unet")
        dropout = check_probability(dropout, "dropout", "unet")
        channels = [scaled_channels(64 * 2**level, width) for level in range(self.depth + 1)]
        self.channels = channels

        inputs = [self.in_channels] + channels[:-2]
        self.encoder = ModuleList([self._double_conv(inputs[i], channels[i], rng) for i in range(self.depth)])
        self.bottleneck = self._double_conv(channels[-2], channels[-1], rng)
        self.dropout = Dropout(dropout, rng=rng)
        levels = range(self.depth - 1, -1, -1)
        self.upconvs = ModuleList([ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2, rng=rng) for i in levels])
        self.decoder = ModuleList([self._double_conv(2 * channels[i], channels[i], rng) for i in levels])
        self.classifier = Conv2d(channels[0], self.num_classes, 1, rng=rng)
        self._init_weights(rng)

    def _double_conv(self, cin: int, cout: int, rng: np.random.Generator) -> Sequential:
        pad = 1 if self.padding == "same" else 0
        layers = []
        for c in (cin, cout):
            layers.append(Conv2d(c, cout, 3, padding=pad, bias=not self.batch_norm, rng=rng))
            if self.batch_norm:
                layers.append(BatchNorm2d(cout))
            layers.append(ReLU(inplace=True))
        return Sequential(*layers)

    def _init_weights(self, rng: np.random.Generator) -> None:
        for module in self.modules():
            if isinstance(module, Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            elif isinstance(module, ConvTranspose2d):
                # A 2x2 stride-2 up-conv output unit sees one kernel tap of each input channel.
                fan_in = module.in_channels
            else:
                continue
            init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_in), rng=rng)
            if module.bias is not None:
                init.zeros_(module.bias)

    # -- sizes --------------------------------------------------------------------------------------------
    def valid_sizes(self, size: int) -> list[int] | None:
        """For ``padding="valid"``: the output size (one axis) of each level for a tile of ``size`` --
        encoder levels, bottleneck, decoder levels -- or ``None`` when the tile is not valid (a level with an
        odd size before pooling, or a size below 1)."""
        sizes, skips = [], []
        for _ in range(self.depth):
            size -= 4
            if size < 2 or size % 2:
                return None
            sizes.append(size)
            skips.append(size)
            size //= 2
        size -= 4
        if size < 1:
            return None
        sizes.append(size)
        for skip in reversed(skips):
            size = 2 * size
            if (skip - size) % 2 or size > skip:
                return None
            size -= 4
            sizes.append(size)
        return sizes

    def tile_size(self, size: int) -> tuple[int, int]:
        """For ``padding="valid"``: the smallest valid tile whose output covers ``size`` pixels, and the
        offset of the output in the tile (92 for depth 4)."""
        tile = size
        while True:
            sizes = self.valid_sizes(tile)
            if sizes is not None and sizes[-1] >= size:
                return tile, (tile - sizes[-1]) // 2
            tile += 1

    # -- forward ------------------------------------------------------------------------------------------
    def forward_features(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """Run the network on ``x`` as is: ``"enc1"``.. ``"enc{depth}"``, ``"bottleneck"``,
        ``"dec{depth}"``.. ``"dec1"`` and ``"logits"``. With ``padding="valid"`` ``x`` must be a valid tile and
        the logits are smaller than it (388x388 for 572x572)."""
        x = as_image_batch(x, self)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"unet: images must have shape (N, {self.in_channels}, H, W), got {x.shape}")
        h, w = x.shape[-2:]
        if self.padding == "valid":
            for n in (h, w):
                if self.valid_sizes(n) is None:
                    below = next((m for m in range(n - 1, 0, -1) if self.valid_sizes(m) is not None), None)
                    above = next(m for m in range(n + 1, n + 2 ** (self.depth + 2)) if self.valid_sizes(m) is not None)
                    nearest = f"{below} or {above}" if below is not None else f"{above} (the smallest)"
                    raise ValueError(
                        f"unet (padding='valid'): forward_features needs a valid tile (every level even-sized "
                        f"before pooling), got {h}x{w}; the nearest valid size to {n} is {nearest}. "
                        "forward() mirror-pads any image to a valid tile"
                    )
        elif min(h, w) < 2**self.depth:
            raise ValueError(
                f"unet needs input height and width of at least {2**self.depth} ({self.depth} poolings), got {h}x{w}"
            )
        features: OrderedDict[str, Tensor] = OrderedDict()
        skips = []
        for level, block in enumerate(self.encoder, start=1):
            x = block(x)
            features[f"enc{level}"] = x
            skips.append(x)
            x = F.max_pool2d(x, 2, 2)
        x = self.dropout(self.bottleneck(x))
        features["bottleneck"] = x
        for i, (upconv, block, skip) in enumerate(zip(self.upconvs, self.decoder, reversed(skips))):
            x = upconv(x)
            dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            if self.padding == "valid":
                # The paper crops the skip to the (smaller) upsampled map, centred.
                skip = skip[:, :, dh // 2 : dh // 2 + x.shape[-2], dw // 2 : dw // 2 + x.shape[-1]]
            elif dh or dw:
                x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
            x = block(F.cat([skip, x], dim=1))
            features[f"dec{self.depth - i}"] = x
        features["logits"] = self.classifier(x)
        return features

    def forward(self, x: Tensor) -> Tensor:
        x = as_image_batch(x, self)
        if self.padding == "same":
            return self.forward_features(x)["logits"]
        h, w = x.shape[-2:]
        (tile_h, offset), (tile_w, _) = self.tile_size(h), self.tile_size(w)
        tile = _mirror_pad(x, offset, tile_h - h - offset, offset, tile_w - w - offset)
        logits = self.forward_features(tile)["logits"]
        return logits[:, :, :h, :w]


def unet(
    *,
    num_classes: int = 2,
    in_channels: int = 3,
    width: float = 1.0,
    depth: int = 4,
    padding: str = "same",
    batch_norm: bool = False,
    dropout: float = 0.5,
    rng: np.random.Generator | None = None,
) -> UNet:
    """U-Net: 64..1024 channels, 4 down-steps, 2x2 up-convolutions and skip concatenation.

    ``padding="valid", in_channels=1`` is the paper's network (31,030,658 parameters for 2 classes).
    """
    return UNet(
        num_classes, in_channels=in_channels, width=width, depth=depth, padding=padding, batch_norm=batch_norm,
        dropout=dropout, rng=rng,
    )  # fmt: skip


SEMANTIC_MODELS = {"unet": unet}
