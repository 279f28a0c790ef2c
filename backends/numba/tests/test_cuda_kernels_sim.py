"""The numba-cuda kernels without a GPU, each suite in a child process so that nothing leaks into this one.

* ``simulator``: ``cudasim/sim_cases.py`` under ``NUMBA_ENABLE_CUDASIM=1`` -- every kernel against the NumPy
  reference kernel on small inputs (the simulator is process-wide: it replaces ``numba.cuda`` at import);
* ``ptx``: ``cudasim/ptx_cases.py`` without the simulator -- every kernel the host functions launch compiles
  for a real GPU and float32 kernels do no float64 arithmetic (it patches numba-cuda's device lookup to compile
  without a device). Skipped with the reason when NVVM is not installed.

Each child writes a JUnit XML report; this module turns it into one test per (suite, kernel family) whose
failure message lists the cases that disagreed, with the child's assertion message (kernel, case, dtype).
The package's host-side interface (``probe``, ``load_namespace``, lazy imports) is tested here directly.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

CASES = Path(__file__).resolve().parent / "cudasim"
DISTRIBUTION = CASES.parents[1]  # backends/numba
REPO = DISTRIBUTION.parents[1]
FAMILIES = ("conv", "pool", "resample", "roi", "nms", "crf")
SUITES = {
    # suite: (case file, whether the simulator is on, families it covers)
    "simulator": ("sim_cases.py", True, ("interface",) + FAMILIES),
    "ptx": ("ptx_cases.py", False, FAMILIES),
}
# Both suites together take about 30 s here; far more means something hangs.
TIMEOUT_S = 600

needs_numba_cuda = pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None,
    reason="numba-cuda is not installed (pip install 'segcore-numba[cuda]')",
)


@dataclass(frozen=True)
class Case:
    family: str
    name: str
    outcome: str  # passed, failed, error or skipped
    message: str


@dataclass(frozen=True)
class SuiteRun:
    returncode: int
    output: str
    cases: tuple[Case, ...]

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def _family(classname: str) -> str:
    # "sim_cases.TestConv" -> "conv"; a module-level skip or collection error has no class.
    last = classname.rsplit(".", 1)[-1]
    return last[4:].lower() if last.startswith("Test") else ""


def _parse(report: Path) -> tuple[Case, ...]:
    cases = []
    for testcase in ET.parse(report).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in testcase:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = "\n".join(filter(None, (child.get("message", ""), child.text or "")))
                break
        cases.append(Case(_family(testcase.get("classname", "")), testcase.get("name", ""), outcome, message))
    return tuple(cases)


def _run_suite(suite: str, report: Path) -> SuiteRun:
    case_file, simulated, _ = SUITES[suite]
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulated:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    # The case files import their helper module ``checks`` and the package by path, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(CASES), str(DISTRIBUTION), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    command = [
        sys.executable, "-m", "pytest", str(CASES / case_file), "-q", "-p", "no:cacheprovider",
        # No ini file and no conftest above the case files: the child sees only its own suite.
        "-c", os.devnull, "--rootdir", str(CASES), "--confcutdir", str(CASES), f"--junitxml={report}",
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the {suite} suite ran longer than {TIMEOUT_S} s:\n{exc.stdout or ''}")
    output = done.stdout + done.stderr
    cases = _parse(report) if report.exists() else ()
    return SuiteRun(done.returncode, output, cases)


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory):
    """Each suite's run, started on first use and shared by all tests of this module."""
    runs: dict[str, SuiteRun] = {}

    def get(suite: str) -> SuiteRun:
        if suite not in runs:
            runs[suite] = _run_suite(suite, tmp_path_factory.mktemp(suite) / "report.xml")
        return runs[suite]

    return get


def _skipped_whole(run: SuiteRun) -> str | None:
    """The reason when the suite skipped itself at module level (e.g. no NVVM for the ptx suite)."""
    if run.returncode in (0, 5) and run.cases and all(c.outcome == "skipped" and not c.family for c in run.cases):
        return run.cases[0].message
    return None


@needs_numba_cuda
@pytest.mark.parametrize("suite", SUITES)
def test_suite_exits_cleanly(suite_runs, suite):
    """The child pytest collected its cases, ran them all and reported them in its summary line."""
    run = suite_runs(suite)
    reason = _skipped_whole(run)
    if reason is not None:
        pytest.skip(f"{suite} suite: {reason}")
    code = run.returncode  # a local, so that a failure does not print the whole run
    assert code == 0, f"the {suite} suite exited with {code}:\n{run.tail()}"
    summary = re.search(r"(\d+) passed", run.output)
    passed = sum(c.outcome == "passed" for c in run.cases)
    assert summary is not None and int(summary.group(1)) == passed > 0, f"unexpected summary:\n{run.tail()}"


@needs_numba_cuda
@pytest.mark.parametrize(
    "suite, family", [(suite, family) for suite, (_, _, families) in SUITES.items() for family in families]
)
def test_kernel_family(suite_runs, suite, family):
    """Every case of one kernel family passed in the suite (failures name the kernel, case and dtype)."""
    run = suite_runs(suite)
    reason = _skipped_whole(run)
    if reason is not None:
        pytest.skip(f"{suite} suite: {reason}")
    cases = [c for c in run.cases if c.family == family]
    assert cases, f"the {suite} suite ran no case of the {family!r} family:\n{run.tail()}"
    bad = [c for c in cases if c.outcome != "passed"]
    report = "\n\n".join(f"{c.name} [{c.outcome}]:\n" + "\n".join(c.message.splitlines()[:25]) for c in bad)
    assert not bad, f"{len(bad)} of {len(cases)} {family!r} cases did not pass in the {suite} suite:\n\n{report}"


# -- the package's interface, in this process (no kernel runs) -------------------------------------------------


def test_import_loads_neither_numba_nor_cupy():
    """Registering the backend must stay cheap and must survive a broken GPU stack."""
    code = "import sys, segcore_numba.gpu; print(sorted(m for m in ('numba', 'cupy') if m in sys.modules))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(DISTRIBUTION), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "missing, reason", [("numba_cuda", "numba-cuda is not installed"), ("cupy", "cupy is not installed")]
)
def test_probe_names_the_missing_package(monkeypatch, missing, reason):
    import segcore_numba.gpu as gpu

    monkeypatch.setattr(gpu, "_installed", lambda module: module != missing)
    assert gpu.probe() == reason


@needs_numba_cuda
def test_probe_without_a_device_says_so():
    import segcore_numba.gpu as gpu

    if importlib.util.find_spec("cupy") is None:
        pytest.skip("cupy is not installed: probe stops there")
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a CUDA device is available here")
    reason = gpu.probe()
    assert reason is not None and reason.startswith("no CUDA device found")
    assert "\n" not in reason


def test_load_namespace_is_array_api_compat_cupy():
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("cupy is not installed")
    import segcore_numba.gpu as gpu

    assert gpu.load_namespace().__name__ == "array_api_compat.cupy"
