"""Every kernel the numba-cuda host functions launch compiles for a real GPU, and float32 stays float32.

The simulator runs kernels as Python, so it cannot see what only Numba's CUDA typing and NVVM see: a
function that is not supported on the device, an integer that silently became a float (an array index that
fails to type), float32 arithmetic promoted to float64 (slow on most GPUs, and a different rounding from the
reference). Here the host functions run on NumPy arrays with their launches *recorded* instead of executed,
and each recorded kernel is compiled to PTX for sm_80 with the argument types of the launch.

Not collected by the main test run: ``test_cuda_kernels_sim.py`` runs it in a child process, because
compiling without a device replaces numba-cuda's current-device lookup (see ``compile_without_a_device``).
Needs NVVM (numba-cuda's ``cu12``/``cu13`` extra); skipped with the reason otherwise.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import array_api_compat.numpy as np_xp
import numpy as np
import pytest
from numba import config, cuda, typeof

if config.ENABLE_CUDASIM:
    raise RuntimeError("ptx_cases.py compiles real CUDA kernels: run it without NUMBA_ENABLE_CUDASIM")

COMPUTE_CAPABILITY = (8, 0)


def _nvvm_missing() -> str | None:
    def kernel(out):
        out[0] = 1.0

    try:
        cuda.compile_ptx(kernel, (typeof(np.zeros(1)),), cc=COMPUTE_CAPABILITY)
    except Exception as exc:
        return f"cannot compile CUDA kernels here (NVVM missing?): {type(exc).__name__}: {exc}"
    return None


_MISSING = _nvvm_missing()
if _MISSING is not None:
    pytest.skip(_MISSING, allow_module_level=True)

from segcore.kernels import crf as reference_crf  # noqa: E402
from segcore_numba.gpu import KERNELS, _launch, roi  # noqa: E402

# float64 arithmetic in a float32 kernel (parameter loads and the one-off conversion of a float64 scalar
# argument such as spatial_scale are not arithmetic).
_F64_ARITHMETIC = re.compile(r"^\s*(add|sub|mul|div|fma|mad|neg|abs|min|max|sqrt|rcp|setp)\.[\w.]*f64\b", re.M)
# Kernels that compare in float64 on purpose: NMS compares the float32 IoU with the float64 threshold.
_FLOAT64_BY_DESIGN = {"iou_mask"}


@pytest.fixture
def compile_without_a_device(monkeypatch):
    """Device functions compile for the current device's compute capability: pretend there is one."""
    import numba.cuda.dispatcher

    monkeypatch.setattr(
        numba.cuda.dispatcher, "get_current_device", lambda: SimpleNamespace(compute_capability=COMPUTE_CAPABILITY)
    )


@pytest.fixture
def launches(monkeypatch, compile_without_a_device):
    """The kernels the host functions launch, with their arguments, instead of running them."""
    recorded = []

    def record(kernel, items, *args):
        if items > 0:
            recorded.append((kernel, args))

    monkeypatch.setattr(_launch, "launch", record)
    return recorded


def assert_compiles(recorded, dtype) -> None:
    assert recorded, "the host functions launched no kernel"
    seen = set()
    for kernel, args in recorded:
        signature = tuple(typeof(a) for a in args)
        name = kernel.py_func.__name__
        if (kernel, signature) in seen:
            continue
        seen.add((kernel, signature))
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=COMPUTE_CAPABILITY)
        except Exception as exc:
            pytest.fail(f"numba-cuda kernel {name!r} does not compile for {signature}: {exc}")
        if dtype == np.float32 and name not in _FLOAT64_BY_DESIGN:
            promoted = _F64_ARITHMETIC.findall(ptx)
            assert not promoted, f"float32 kernel {name!r} does float64 arithmetic ({sorted(set(promoted))})"


dtypes = pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=lambda d: np.dtype(d).name)


def _random(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


class TestConv:
    # Recorded launches leave the patch buffers unwritten: the GEMMs then multiply whatever memory held.
    @pytest.mark.filterwarnings("ignore::RuntimeWarning")
    @dtypes
    def test_conv_kernels_compile(self, launches, dtype):
        x, w = _random((2, 4, 6, 6), dtype), _random((6, 2, 3, 3), dtype)
        geometry = ((2, 2), (1, 1), (2, 1), 2)
        out = KERNELS["conv2d"](np_xp, x, w, *geometry)
        KERNELS["conv2d_grad_input"](np_xp, out, w, x.shape, *geometry)
        KERNELS["conv2d_grad_weight"](np_xp, x, out, w.shape, *geometry)
        assert_compiles(launches, dtype)


class TestPool:
    @dtypes
    def test_max_pool_kernels_compile(self, launches, dtype):
        x = _random((1, 2, 5, 5), dtype)
        out, idx = KERNELS["max_pool2d"](np_xp, x, (2, 2), (2, 2), (1, 1), (1, 1), True)
        KERNELS["max_pool2d_backward"](np_xp, out, idx, x.shape)
        assert_compiles(launches, dtype)


class TestResample:
    @dtypes
    def test_bilinear_kernels_compile(self, launches, dtype):
        x = _random((1, 2, 3, 4), dtype)
        out = KERNELS["interpolate_bilinear"](np_xp, x, (5, 7), False, (None, None))
        KERNELS["interpolate_bilinear_backward"](np_xp, out, (3, 4), False, (None, None))
        assert_compiles(launches, dtype)


class TestRoi:
    @dtypes
    def test_roi_kernels_compile(self, launches, dtype):
        x = _random((2, 2, 6, 6), dtype)
        rois = np.array([[0, 0.5, 1.0, 4.0, 5.0], [1, 1.0, 1.0, 3.0, 2.0]], dtype=dtype)
        params = dict(spatial_scale=0.5, output_size=(2, 2), sampling_ratio=-1, aligned=True)
        g = _random((2, 2, 2, 2), dtype)
        KERNELS["roi_align"](np_xp, x, rois, **params)
        KERNELS["roi_align_backward"](np_xp, g, rois, x.shape, **params)
        roi.roi_align_backward_deterministic(np_xp, g, rois, x.shape, **params)
        out, argmax = KERNELS["roi_pool"](np_xp, x, rois, 0.5, (2, 2))
        KERNELS["roi_pool_backward"](np_xp, g, rois, np.zeros_like(argmax), x.shape)
        assert_compiles(launches, dtype)


class TestNms:
    @dtypes
    def test_nms_kernel_compiles(self, launches, dtype):
        boxes = np.array([[0, 0, 2, 2], [1, 1, 3, 3]], dtype=dtype)
        # The launch is only recorded, so the host pass reads an unwritten mask: any result will do here.
        KERNELS["nms"](np_xp, boxes, np.array([1, 2], dtype=dtype), 0.5)
        assert_compiles(launches, dtype)


class TestCrf:
    @pytest.mark.parametrize("feature_dtype", (np.float32, np.float64), ids=lambda d: np.dtype(d).name)
    @dtypes
    def test_lattice_kernels_compile(self, launches, feature_dtype, dtype):
        features = np.random.default_rng(0).uniform(0, 3, (20, 3)).astype(feature_dtype)
        lattice = reference_crf.permutohedral_build(np_xp, features)
        KERNELS["permutohedral_filter"](np_xp, lattice, _random((20, 2), dtype), reverse=False)
        assert_compiles(launches, np.result_type(feature_dtype, dtype).type)
