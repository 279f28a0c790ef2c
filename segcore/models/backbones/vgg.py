"""VGG-16 backbones (Simonyan & Zisserman, 2015) with torchvision's layout, and DeepLab's LargeFOV variant.

``features`` is a ``Sequential`` with torchvision's indices (``features.0`` = conv1_1, ``features.4`` = pool1,
...; with batch norm ``features.1`` = bn1_1, ``features.6`` = pool1, ...), so ``vgg16`` / ``vgg16_bn``
state dicts from torchvision load key for key. fc6/fc7 (and the optional ImageNet fc8) are *convolutions*
in ``classifier.0`` / ``classifier.3`` / ``classifier.6`` (torchvision's classifier indices): fc6 a 7x7
conv, fc7 and fc8 1x1 convs, as in FCN. :meth:`VGG.load_torchvision_state_dict` reshapes torchvision's
``Linear`` weights into them (exact: torchvision flattens the 512x7x7 pool5 map channel-major).
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np

from ... import functional as F
from ...autograd import Tensor
from ...nn import BatchNorm2d, Conv2d, Dropout, IncompatibleKeys, MaxPool2d, ReLU, Sequential
from ..base import Backbone, check_width, scaled_channels  # check_width re-exported

__all__ = [
    "VGG",
    "vgg16",
    "vgg16_bn",
    "vgg16_largefov",
    "scaled_channels",
    "check_width",
    "check_rng",
    "check_probability",
    "check_positive_int",
    "check_bool",
    "BACKBONES",
]

#: Output channels of the 13 convolutions of VGG-16 (configuration "D"), grouped by stage.
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

#: (kernel, stride, padding) of each of the five max-pools; VGG's are 2x2 with stride 2.
PoolSpec = tuple[int, int, int]
VGG_POOLS: tuple[PoolSpec, ...] = ((2, 2, 0),) * 5


def check_rng(rng: Any, where: str) -> np.random.Generator | None:
    """``rng`` if it is a ``numpy.random.Generator`` or ``None``, else TypeError."""
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"{where}: rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng


def check_probability(p: Any, name: str, where: str) -> float:
    """A dropout probability in ``[0, 1)``, else ValueError."""
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p < 1.0:
        raise ValueError(f"{where}: {name} must be a probability in [0, 1), got {p!r}")
    return float(p)


def check_positive_int(value: Any, name: str, where: str) -> int:
    """``value`` as an int >= 1, else ValueError."""
    if not isinstance(value, (numbers.Integral, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    return int(value)


def check_bool(value: Any, name: str, where: str) -> bool:
    """``value`` if it is a bool, else TypeError."""
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be a bool, got {value!r}")
    return value



def _conv_size(n: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _pool_size(n: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    # torch's rule (also Caffe's): ceil mode may not start a window in the right padding.
    out = (n + 2 * padding - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= n + padding:
        out -= 1
    return out


class VGG(Backbone):
    """VGG-16 feature extractor returning named features.

    ``forward(x)`` returns an ``OrderedDict`` with ``"conv1"``..``"conv5"`` (last ReLU of each stage, before its
    pool), ``"pool1"``..``"pool5"`` and, when the classifier is built, ``"fc6"``, ``"fc7"`` (after ReLU and
    dropout) and ``"fc8"`` (ImageNet scores, only with ``num_classes``).

    Parameters
    ----------
    batch_norm:
        BatchNorm after every convolution of ``features`` (torchvision's ``vgg16_bn``).
    width:
        Multiplier of every channel count (fc6/fc7 included).
    first_padding:
        Padding of conv1_1 (FCN uses 100 so that any input survives the valid 7x7 fc6).
    pools:
        ``(kernel, stride, padding)`` of the five max-pools.
    ceil_mode:
        Ceil instead of floor for the pool output sizes (Caffe's rounding, used by FCN and DeepLab).
    stage_dilations:
        Dilation of the 3x3 convolutions of each stage (padding equals the dilation).
    fc_channels:
        Channels of fc6 and fc7 before ``width`` scaling; ``None`` builds no classifier.
    fc6_kernel, fc6_dilation, fc6_padding:
        Geometry of fc6 (7, 1, 0 for VGG's convolutionalised fc6; 3, 12, 12 for DeepLab-LargeFOV).
    dropout:
        Dropout probability after fc6 and after fc7.
    num_classes:
        Adds fc8, a 1x1 conv to this many classes (1000 for ImageNet); ``None`` leaves it out.
    in_channels:
        Channels of the input images.
    rng:
        Generator for the initial weights and the dropout masks.
    name:
        Used in error messages.
    """

    def __init__(
        self,
        *,
        batch_norm: bool = False,
        width: float = 1.0,
        first_padding: int = 1,
        pools: Sequence[PoolSpec] = VGG_POOLS,
        ceil_mode: bool = False,
        stage_dilations: Sequence[int] = (1, 1, 1, 1, 1),
        fc_channels: int | None = 4096,
        fc6_kernel: int = 7,
        fc6_dilation: int = 1,
        fc6_padding: int = 0,
        dropout: float = 0.5,
        num_classes: int | None = None,
        in_channels: int = 3,
        rng: np.random.Generator | None = None,
        name: str = "vgg16",
    ) -> None:
        super().__init__()
        self.name = name
        width = check_width(width, name)
        rng = check_rng(rng, name)
        if len(pools) != 5 or len(stage_dilations) != 5:
            raise ValueError(
                f"{name}: pools and stage_dilations need one entry per stage (5), got {pools!r}, {stage_dilations!r}"
            )
        if num_classes is not None and fc_channels is None:
            raise ValueError(f"{name}: num_classes={num_classes!r} needs the classifier (fc6/fc7), which is disabled")
        # Validated before any weight is drawn: a paper-size VGG takes seconds to build.
        if fc_channels is not None:
            p = check_probability(dropout, "dropout", name)
            fc = scaled_channels(check_positive_int(fc_channels, "fc_channels", name), width)
            if num_classes is not None:
                check_positive_int(num_classes, "num_classes", name)
        if rng is None:
            # One generator for all layers: an unseeded model still gets independent draws per layer.
            rng = np.random.default_rng()
        self.in_channels = check_positive_int(in_channels, "in_channels", name)
        self.batch_norm = bool(batch_norm)
        self.ceil_mode = bool(ceil_mode)

        layers = []
        # (kind, kernel, stride, padding, dilation) per size-changing layer, for size arithmetic without tensors.
        self._geometry: list[tuple[str, int, int, int, int]] = []
        self._stage_of_pool: dict[int, int] = {}
        channels, stride = self.in_channels, 1
        for stage, (outs, (pk, ps, pp), dilation) in enumerate(zip(VGG16_STAGES, pools, stage_dilations), start=1):
            for j, out in enumerate(outs):
                out = scaled_channels(out, width)
                padding = first_padding if (stage, j) == (1, 0) else dilation
                layers.append(Conv2d(channels, out, 3, padding=padding, dilation=dilation, rng=rng))
                self._geometry.append(("conv", 3, 1, padding, dilation))
                if self.batch_norm:
                    layers.append(BatchNorm2d(out))
                layers.append(ReLU(inplace=True))
                channels = out
            self.feature_channels[f"conv{stage}"] = channels
            self.feature_strides[f"conv{stage}"] = stride
            self._stage_of_pool[len(layers)] = stage
            layers.append(MaxPool2d(pk, ps, pp, ceil_mode=self.ceil_mode))
            self._geometry.append(("pool", pk, ps, pp, 1))
            stride *= ps
            self.feature_channels[f"pool{stage}"] = channels
            self.feature_strides[f"pool{stage}"] = stride
        self.features = Sequential(*layers)

        if fc_channels is None:
            self.classifier = None
        else:
            head = [
                Conv2d(channels, fc, fc6_kernel, padding=fc6_padding, dilation=fc6_dilation, rng=rng),
                ReLU(inplace=True),
                Dropout(p, rng=rng),
                Conv2d(fc, fc, 1, rng=rng),
                ReLU(inplace=True),
                Dropout(p, rng=rng),
            ]
            self._geometry.append(("conv", fc6_kernel, 1, fc6_padding, fc6_dilation))
            for feature in ("fc6", "fc7"):
                self.feature_channels[feature] = fc
                self.feature_strides[feature] = stride
            if num_classes is not None:
                head.append(Conv2d(fc, int(num_classes), 1, rng=rng))
                self.feature_channels["fc8"] = int(num_classes)
                self.feature_strides["fc8"] = stride
            self.classifier = Sequential(*head)
        self.min_input_size = self._smallest_input()

    # -- sizes --------------------------------------------------------------------------------------------
    def output_sizes(self, size: int) -> list[int]:
        """Spatial size (one axis) after each conv/pool of ``features`` and fc6, for an input of ``size``."""
        sizes = []
        for kind, k, s, p, d in self._geometry:
            size = _conv_size(size, k, s, p, d) if kind == "conv" else _pool_size(size, k, s, p, self.ceil_mode)
            sizes.append(size)
        return sizes

    def _smallest_input(self) -> int:
        n = 1
        while min(self.output_sizes(n)) < 1:
            n += 1
        return n

    def check_input(self, x: Any, name: str = "images") -> Tensor:
        """Raise a clear error unless ``x`` is an ``(N, C, H, W)`` Tensor this backbone can take."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{self.name}: {name} must be a segcore Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.name}: {name} must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if min(h, w) < self.min_input_size:
            fc6 = f" and the {self.classifier[0].kernel_size[0]}-pixel fc6" if self.classifier is not None else ""
            raise ValueError(
                f"{self.name}: {name} must be at least {self.min_input_size}x{self.min_input_size} pixels "
                f"(five poolings{fc6}), got {h}x{w}"
            )
        return x

    # -- forward ------------------------------------------------------------------------------------------
    def forward_with_switches(self, x: Tensor) -> tuple[OrderedDict[str, Tensor], list[tuple[Tensor, tuple[int, int]]]]:
        """Named features plus, per pool (pool1 first), its argmax indices and the size of its input.

        The switches are what SegNet and DeconvNet unpool with (:func:`segcore.functional.max_unpool2d`).
        """
        return self._run(x, switches=True)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self._run(x, switches=False)[0]

    def _run(self, x: Tensor, switches: bool) -> tuple[OrderedDict[str, Tensor], list[tuple[Tensor, tuple[int, int]]]]:
        self.check_input(x)
        features: OrderedDict[str, Tensor] = OrderedDict()
        recorded: list[tuple[Tensor, tuple[int, int]]] = []
        for i, layer in enumerate(self.features):
            stage = self._stage_of_pool.get(i)
            if stage is None:
                x = layer(x)
                continue
            features[f"conv{stage}"] = x
            if switches:
                size = (x.shape[-2], x.shape[-1])
                x, indices = F.max_pool2d(
                    x, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                    ceil_mode=layer.ceil_mode, return_indices=True,
                )  # fmt: skip
                recorded.append((indices, size))
            else:
                x = layer(x)
            features[f"pool{stage}"] = x
        if self.classifier is not None:
            for i, layer in enumerate(self.classifier):
                x = layer(x)
                if i in (2, 5, 6):
                    features[{2: "fc6", 5: "fc7", 6: "fc8"}[i]] = x
        return features, recorded

    # -- weights ------------------------------------------------------------------------------------------
    def load_torchvision_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Load a torchvision ``vgg16`` / ``vgg16_bn`` state dict (Tensors or NumPy arrays).

        ``classifier.{0,3,6}.weight`` of torchvision's ``Linear`` layers ``(out, in)`` are reshaped to this
        backbone's conv weights ``(out, C, k, k)``; everything else is loaded as is (see
        :meth:`segcore.nn.Module.load_state_dict` for ``strict``).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{self.name}: state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}"
            )
        own = dict(self.named_parameters())
        converted: dict[str, Any] = {}
        for key, value in state_dict.items():
            target = own.get(key)
            linear = key.startswith("classifier.") and key.endswith(".weight") and getattr(value, "ndim", None) == 2
            if linear and target is not None:
                array = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
                if array.size != int(np.prod(target.shape)) or array.shape[0] != target.shape[0]:
                    raise ValueError(
                        f"{self.name}: {key} has shape {array.shape}, which cannot be reshaped to the conv weight "
                        f"{target.shape}"
                    )
                value = array.reshape(target.shape)
            converted[key] = value
        return self.load_state_dict(converted, strict=strict)


def vgg16(
    *,
    width: float = 1.0,
    include_fc: bool = True,
    num_classes: int | None = None,
    dropout: float = 0.5,
    in_channels: int = 3,
    rng: np.random.Generator | None = None,
) -> VGG:
    """VGG-16 with fc6/fc7 as 7x7 and 1x1 convolutions (``include_fc``) and optional fc8 (``num_classes``).

    Needs inputs of at least 224x224 with ``include_fc`` (fc6 is a valid 7x7 conv on pool5), 32x32 without.
    ``num_classes=1000`` gives torchvision's ``vgg16`` parameters (138,357,544) in convolutional form.
    """
    return VGG(
        width=width, fc_channels=4096 if check_bool(include_fc, "include_fc", "vgg16") else None,
        dropout=dropout, num_classes=num_classes,
        in_channels=in_channels, rng=rng, name="vgg16",
    )  # fmt: skip


def vgg16_bn(
    *,
    width: float = 1.0,
    include_fc: bool = True,
    num_classes: int | None = None,
    dropout: float = 0.5,
    in_channels: int = 3,
    rng: np.random.Generator | None = None,
) -> VGG:
    """VGG-16 with BatchNorm after every conv (torchvision's ``vgg16_bn`` layout), fc6/fc7 as convolutions."""
    return VGG(
        batch_norm=True, width=width, fc_channels=4096 if check_bool(include_fc, "include_fc", "vgg16_bn") else None,
        dropout=dropout,
        num_classes=num_classes, in_channels=in_channels, rng=rng, name="vgg16_bn",
    )  # fmt: skip


def vgg16_largefov(
    *,
    width: float = 1.0,
    fc_channels: int = 1024,
    fc6_dilation: int = 12,
    dropout: float = 0.5,
    in_channels: int = 3,
    rng: np.random.Generator | None = None,
) -> VGG:
    """DeepLab-LargeFOV VGG-16 (Chen et al. 2015): output stride 8, atrous conv5 and fc6.

    As in DeepLab's Caffe model: pool1-3 are 3x3 with stride 2 and padding 1, pool4/pool5 3x3 with stride 1
    and padding 1 (Caffe's ceil rounding), conv5 has dilation 2, fc6 is a 3x3 conv with dilation 12 and 1024
    channels, fc7 a 1x1 conv with 1024 channels; dropout after both.
    """
    fc6_dilation = check_positive_int(fc6_dilation, "fc6_dilation", "vgg16_largefov")
    return VGG(
        width=width,
        pools=((3, 2, 1),) * 3 + ((3, 1, 1),) * 2,
        ceil_mode=True,
        stage_dilations=(1, 1, 1, 1, 2),
        fc_channels=fc_channels,
        fc6_kernel=3,
        fc6_dilation=fc6_dilation,
        fc6_padding=fc6_dilation,
        dropout=dropout,
        in_channels=in_channels,
        rng=rng,
        name="vgg16_largefov",
    )


BACKBONES = {"vgg16": vgg16, "vgg16_bn": vgg16_bn, "vgg16_largefov": vgg16_largefov}
