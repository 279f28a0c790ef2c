"""Plugin tests: fake installed plugins are modules in ``fixtures/``, reached through fake entry points."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_MODULES = tuple(sorted(p.stem for p in FIXTURES.glob("segcore_test_*.py")))


@pytest.fixture
def entry_point():
    """``entry_point(name, module)``: an entry point of the ``segcore`` group as a distribution declares it."""
    return lambda name, module: importlib.metadata.EntryPoint(name, module, "segcore")


@pytest.fixture(autouse=True)
def fixture_modules(monkeypatch):
    """Make the fixture plugins importable and not yet imported, so tests can see when they get imported."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    for name in FIXTURE_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
