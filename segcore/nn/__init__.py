"""Layers that hold parameters and call :mod:`segcore.functional`."""

from .parameter import Parameter

__all__ = ["Parameter"]
