"""segcore: a plugin-based deep-learning framework for image segmentation.

``import segcore`` gives tensors with autograd (:func:`tensor`, :class:`Tensor`, :func:`no_grad`), backends
(:func:`list_backends`), the functional ops (``segcore.functional``), layers (``segcore.nn``), optimizers
(``segcore.optim``) and safetensors weights I/O (:func:`save_state_dict`, :func:`load_state_dict`).
"""

from .autograd import Function, Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from .backend import Backend, get_backend, get_default_backend, list_backends, set_default_backend
from .errors import BackendMismatchError, BackendUnavailableError
from .hookspecs import hookimpl
from .registry import build, list_backbones, list_losses, list_models
from . import crf, data, functional, io, losses, metrics, nn, ops, optim, train, viz
from .io import load_state_dict, save_state_dict

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendMismatchError",
    "BackendUnavailableError",
    "Function",
    "Tensor",
    "build",
    "crf",
    "data",
    "enable_grad",
    "functional",
    "get_backend",
    "get_default_backend",
    "hookimpl",
    "is_grad_enabled",
    "io",
    "list_backbones",
    "list_backends",
    "list_losses",
    "list_models",
    "load_state_dict",
    "losses",
    "metrics",
    "nn",
    "ops",
    "optim",
    "save_state_dict",
    "no_grad",
    "set_default_backend",
    "tensor",
    "train",
    "viz",
]
