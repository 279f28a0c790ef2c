"""LR-ASPP with a MobileNetV3 backbone for segcore, installed as a plugin (entry point group ``segcore``).

After ``pip install segcore-lraspp``::

    import segcore
    model = segcore.build("lraspp_mobilenet_v3_large", num_classes=21)
"""

from .lraspp import LRASPP, LRASPPHead, lraspp_mobilenet_v3_large, lraspp_mobilenet_v3_small
from .mobilenetv3 import MobileNetV3Features, mobilenet_v3_large, mobilenet_v3_small

__version__ = "0.1.0"

__all__ = [
    "LRASPP",
    "LRASPPHead",
    "MobileNetV3Features",
    "lraspp_mobilenet_v3_large",
    "lraspp_mobilenet_v3_small",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
]
