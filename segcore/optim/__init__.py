"""Optimizers and learning-rate schedules with ``torch.optim`` semantics.

``SGD``, ``Adam`` and ``AdamW`` take an iterable of parameters or of param-group dicts; schedules live in
:mod:`segcore.optim.lr_scheduler` (``StepLR``, ``MultiStepLR``, ``CosineAnnealingLR``, ``PolyLR``,
``LinearLR``, ``SequentialLR``), as in ``torch.optim.lr_scheduler``.
"""

from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Adam", "AdamW", "Optimizer", "SGD", "lr_scheduler"]
