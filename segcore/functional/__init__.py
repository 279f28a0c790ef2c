"""Differentiable ops with ``torch.nn.functional`` / ``torchvision.ops`` names, argument order and defaults.

Each op is a :class:`segcore.autograd.Function` plus a thin wrapper that validates arguments at the API
boundary. Modules are split by family; everything is re-exported here (``import segcore.functional as F``).
"""

from .arithmetic import *  # noqa: F401,F403
from .reduction import *  # noqa: F401,F403
from .shape import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .pool import *  # noqa: F401,F403
from .resample import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .activation import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
import sys as _sys

from . import methods as _methods

# Looked up in sys.modules: the star imports above rebind names such as ``linear`` to the functions.
_FAMILIES = ("arithmetic", "reduction", "shape", "linear", "conv", "pool", "resample", "norm", "activation", "loss")
__all__ = sorted({name for family in _FAMILIES for name in _sys.modules[f"{__name__}.{family}"].__all__})

_methods.install()
