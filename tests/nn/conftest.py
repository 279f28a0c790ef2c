"""Fixtures shared by the nn tests."""

import pytest

from segcore.backend import Backend, _unregister_backend, register_backend


@pytest.fixture
def alt_backend():
    """A second backend on NumPy arrays under another name: moves between backends without a GPU."""
    import array_api_compat.numpy as xp

    backend = Backend("numpy-nn-alt", lambda: xp)
    register_backend(backend, provider="tests")
    yield backend
    _unregister_backend("numpy-nn-alt")
