"""``benchmarks/numba_gpu.py``, the numba-cuda GPU benchmark, without a GPU.

Without a GPU the script must stop with the backend's reason and write nothing. Its measuring code runs only on
a GPU, so a dry run drives it through the CPU ``numba`` backend with NumPy standing in for CuPy: the kernels'
arguments, the comparisons with the reference, the table and the JSON are then checked here, on every machine.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from segcore_numba import gpu

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
SCRIPT = BENCHMARKS / "numba_gpu.py"


@pytest.mark.skipif(gpu.probe() is None, reason="a GPU is here: the benchmark would run")
def test_without_a_gpu_the_benchmark_exits_with_the_reason_and_writes_nothing(tmp_path):
    output = tmp_path / "numba_gpu.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(output)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert f"needs a usable CUDA GPU for the numba-cuda backend: {gpu.probe()}" in done.stderr
    assert not output.exists()


def _load_script(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # its helpers (timing, workloads) sit next to it
    spec = importlib.util.spec_from_file_location("numba_gpu_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_cupy() -> types.ModuleType:
    """What the script uses of CuPy, on host memory."""
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "host stand-in"
    cupy.asarray = cupy.asnumpy = np.asarray
    device = types.SimpleNamespace(id=0)
    cupy.cuda = types.SimpleNamespace(
        Device=lambda: device,
        runtime=types.SimpleNamespace(getDeviceProperties=lambda index: {"name": b"host stand-in"}),
    )
    return cupy


def test_a_dry_run_on_the_cpu_backend_measures_checks_and_writes_every_part(monkeypatch, tmp_path, capsys):
    script = _load_script(monkeypatch)
    monkeypatch.setattr(script, "BACKEND", "numba")
    monkeypatch.setattr(script, "ROI_SHAPE", (2, 16, 20, 24))
    monkeypatch.setattr(script, "ROI_COUNT", 12)
    monkeypatch.setattr(script, "ROI_IMAGE", 80)  # 20 rows at spatial scale 1/4
    for name, value in (("CRF_HEIGHT", 30), ("CRF_WIDTH", 40), ("CRF_LABELS", 5), ("CRF_ITERATIONS", 3)):
        monkeypatch.setattr(script, name, value)
    timed = []

    def host_time(fn, repeat):
        start = time.perf_counter()
        fn()
        timed.append(repeat)
        return time.perf_counter() - start

    monkeypatch.setattr(script, "cuda_event_time", host_time)
    monkeypatch.setattr(script, "_torch_cuda", lambda: (None, "torch is not used in tests"))
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    monkeypatch.setattr(gpu, "probe", lambda: None)
    output = tmp_path / "numba_gpu.json"

    assert script.main(["--repeat", "3", "--output", str(output)]) == 0

    assert timed == [3] * 4  # three RoIAlign kernels and the CRF
    payload = json.loads(output.read_text())
    assert payload["device"] == "host stand-in" and payload["targets"] == script.TARGETS
    roi, crf = payload["result"]["roi_align"], payload["result"]["crf"]
    assert set(roi["ms"]) == {"forward", "backward_atomic", "backward_deterministic"}
    assert all(ms > 0 for ms in roi["ms"].values())
    # The CPU numba kernels stand in for the GPU ones: they agree with the reference to float32 rounding.
    assert all(diff < 1e-4 for diff in roi["max_abs_diff_vs_reference"].values())
    assert roi["torchvision"] == "not measured: torch is not used in tests"
    assert crf["ms"] > 0 and crf["max_abs_marginal_diff_vs_reference"] < 1e-4
    assert crf["setting"] == {"height": 30, "width": 40, "labels": 5, "iterations": 3}
    table = capsys.readouterr().out
    assert "backward_deterministic" in table and "torchvision: not measured" in table and "targets:" in table


def test_the_benchmark_rejects_a_repeat_below_one(monkeypatch, capsys):
    script = _load_script(monkeypatch)
    with pytest.raises(SystemExit):
        script.main(["--repeat", "0"])
    assert "--repeat must be >= 1, got 0" in capsys.readouterr().err
