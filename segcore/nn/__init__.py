"""Layers that hold parameters and call :mod:`segcore.functional`, with ``torch.nn`` names and signatures.

Layers with random initial weights take ``rng`` (a ``numpy.random.Generator``; ``None`` means a fresh
unseeded one), and all parameterised layers take ``dtype`` (float32 by default) and ``backend`` keywords.
"""

from . import init
from .activation import (
    ELU,
    GELU,
    Hardsigmoid,
    Hardswish,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from .container import ModuleDict, ModuleList, Sequential
from .conv import Conv2d, ConvTranspose2d
from .crf import DenseCRF
from .dropout import Dropout, Dropout2d
from .linear import Flatten, Identity, Linear
from .module import IncompatibleKeys, Module
from .norm import BatchNorm2d, GroupNorm, LayerNorm
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d, MaxUnpool2d
from .upsampling import Upsample

__all__ = [
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "AvgPool2d",
    "BatchNorm2d",
    "Conv2d",
    "ConvTranspose2d",
    "DenseCRF",
    "Dropout",
    "Dropout2d",
    "ELU",
    "Flatten",
    "GELU",
    "GroupNorm",
    "Hardsigmoid",
    "Hardswish",
    "Identity",
    "IncompatibleKeys",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MaxPool2d",
    "MaxUnpool2d",
    "Module",
    "ModuleDict",
    "ModuleList",
    "Parameter",
    "ReLU",
    "ReLU6",
    "SiLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "Upsample",
    "init",
]
