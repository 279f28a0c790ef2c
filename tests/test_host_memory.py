"""The heap settings of segcore.host_memory: applied once, declinable, and really set on glibc."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from segcore import host_memory


@pytest.fixture
def unapplied(monkeypatch):
    """Pretend the settings were never applied in this process; record calls to the C library."""
    monkeypatch.setattr(host_memory, "_state", {"applied": None})
    calls = []
    monkeypatch.setattr(host_memory, "_apply", lambda: calls.append("apply") or True)
    return calls


def test_applied_once(unapplied, monkeypatch):
    monkeypatch.delenv(host_memory.ENV_VAR, raising=False)
    assert host_memory.keep_freed_memory() is True
    assert host_memory.keep_freed_memory() is True
    assert unapplied == ["apply"]


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_declined_through_the_environment(unapplied, monkeypatch, value):
    monkeypatch.setenv(host_memory.ENV_VAR, value)
    assert host_memory.keep_freed_memory() is False
    assert unapplied == []


def test_bad_environment_value_is_an_error_naming_the_variable(unapplied, monkeypatch):
    monkeypatch.setenv(host_memory.ENV_VAR, "maybe")
    with pytest.raises(ValueError, match="SEGCORE_KEEP_FREED_MEMORY must be 1 or 0.*'maybe'"):
        host_memory.keep_freed_memory()


def _is_glibc() -> bool:
    try:
        return bool(ctypes.CDLL("libc.so.6").gnu_get_libc_version)
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not (sys.platform.startswith("linux") and _is_glibc()), reason="needs glibc")
def test_first_use_of_the_numpy_backend_sets_the_glibc_thresholds():
    # In a fresh process, a step that allocates arrays of 4, 12 and 24 MiB and frees them, repeated: with the
    # settings the freed memory stays in the heap and later steps touch no new pages; with glibc's defaults
    # (dynamic mmap threshold, trimming) later steps keep faulting new pages in.
    script = """
import resource, numpy as np, segcore
segcore.tensor([1.0])  # loads the NumPy backend namespace
from segcore import host_memory
assert host_memory.keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    a = np.ones(1 << 20, np.float32); b = np.ones(3 << 20, np.float32); c = np.ones(6 << 20, np.float32)
    del a, b, c
step()
before = faults()
for _ in range(5):
    step()
print(faults() - before)
"""
    kept = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    declined = subprocess.run(
        [sys.executable, "-c", script.replace("assert host_memory", "assert not host_memory")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, host_memory.ENV_VAR: "0"},
    )
    assert int(kept.stdout) < 100, kept.stdout
    assert int(declined.stdout) > int(kept.stdout) + 1000, (kept.stdout, declined.stdout)
