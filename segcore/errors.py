"""Exception types segcore raises beyond the built-in ``ValueError``/``TypeError``."""


class BackendUnavailableError(RuntimeError):
    """A backend was requested that cannot run on this machine; the message says why and how to fix it."""


class BackendMismatchError(ValueError):
    """An op received tensors living on two different backends; the message names both."""
