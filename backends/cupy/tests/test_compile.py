"""The CUDA C sources compile, without a GPU: with nvcc (sm_80 and sm_90, warnings as errors) when nvcc is on
PATH, and with NVRTC -- the compiler CuPy uses at run time, on exactly the source it is given -- when CuPy's NVRTC
library loads. Each kernel the host wrappers launch must exist under its float32 and float64 names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from segcore_cupy import _cuda

ARCHS = ("sm_80", "sm_90")
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: CUDA sources not compiled")
SOURCES = sorted(_cuda.KERNEL_DIR.glob("*.cu"))
HOST_DIR = Path(_cuda.__file__).resolve().parent

# family -> kernels its host module launches (each instantiated as <name>_f32 and <name>_f64)
KERNELS = {
    "conv": ("im2col", "col2im", "depthwise_forward", "depthwise_grad_input", "depthwise_grad_weight"),
    "pool": ("max_pool2d", "max_pool2d_backward"),
    "resample": ("bilinear_forward", "bilinear_backward"),
    "roi": (
        "roi_align_forward",
        "roi_align_backward_atomic",
        "roi_align_backward_gather",
        "roi_pool_forward",
        "roi_pool_backward",
    ),
    "nms": ("nms_mask",),
}


def _nvcc(source: Path, arch: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [NVCC, "--cubin", f"-arch={arch}", "--std=c++14", "--Werror", "all-warnings", "-o", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_source_file_is_a_loaded_family():
    assert {path.stem for path in SOURCES} == set(_cuda.FAMILIES) == set(KERNELS)


@pytest.mark.parametrize("family", sorted(KERNELS))
def test_host_module_launches_the_listed_kernels(family):
    text = (HOST_DIR / f"{family}.py").read_text()
    launched = set(re.findall(r'"(\w+)"', text)) & {name for names in KERNELS.values() for name in names}
    assert launched == set(KERNELS[family])


def test_depthwise_weight_gradient_block_fits_its_shared_memory():
    declared = re.search(r"#define DW_THREADS (\d+)", (_cuda.KERNEL_DIR / "conv.cu").read_text())
    threads = _cuda.THREADS
    assert declared and threads <= int(declared.group(1)) and threads & (threads - 1) == 0


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("family", sorted(KERNELS))
def test_nvcc_compiles_family(family, arch, tmp_path):
    cubin = tmp_path / f"{family}.cubin"
    result = _nvcc(_cuda.KERNEL_DIR / f"{family}.cu", arch, cubin)
    assert result.returncode == 0, result.stderr
    symbols = cubin.read_bytes()
    for name in KERNELS[family]:
        for suffix in ("f32", "f64"):
            # extern "C": the symbol is the plain name, as RawModule.get_function looks it up.
            assert re.search(rb"\x00" + f"{name}_{suffix}".encode() + rb"\x00", symbols), f"{name}_{suffix}"


@needs_nvcc
def test_nvcc_compiles_the_pasted_source_cupy_gets(tmp_path):
    # RawModule receives the source with common.cuh pasted in: it must compile on its own, with no include.
    path = tmp_path / "roi_pasted.cu"
    path.write_text(_cuda.source("roi"))
    assert not re.search(r"^\s*#\s*include", path.read_text(), re.MULTILINE)
    result = _nvcc(path, "sm_80", tmp_path / "roi.cubin")
    assert result.returncode == 0, result.stderr


@needs_nvcc
def test_a_type_error_fails_the_compile(tmp_path):
    broken = tmp_path / "conv.cu"
    (tmp_path / "common.cuh").write_text((_cuda.KERNEL_DIR / "common.cuh").read_text())
    text = (_cuda.KERNEL_DIR / "conv.cu").read_text()
    broken.write_text(text.replace("T acc = T(0);", "T* acc = T(0);", 1))
    result = _nvcc(broken, "sm_80", tmp_path / "conv.cubin")
    assert result.returncode != 0 and "error" in result.stderr


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # no CuPy, or its NVRTC library cannot be loaded here
        pytest.skip(f"CuPy's NVRTC is not usable here: {type(exc).__name__}: {exc}")
    return nvrtc


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("family", sorted(KERNELS))
def test_nvrtc_compiles_family(family, arch):
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(_cuda.source(family), f"{family}.cu", [], [])
    try:
        nvrtc.compileProgram(program, [*_cuda.NVRTC_OPTIONS, f"-arch=compute_{arch[3:]}"])
    except nvrtc.NVRTCError:
        pytest.fail(nvrtc.getProgramLog(program))
    ptx = nvrtc.getPTX(program).decode()
    for name in KERNELS[family]:
        for suffix in ("f32", "f64"):
            assert f".entry {name}_{suffix}(" in ptx
