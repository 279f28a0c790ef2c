"""The CUDA C kernels' arithmetic, checked without a GPU: each grid-stride kernel is compiled as plain C++ with
``host_shim.h`` (``__global__``/``__device__`` dropped, one block of one thread, atomics as plain adds) and run
serially through ctypes on NumPy arrays; the host wrappers' steps (im2col + GEMM, tables, ...) are replayed in
NumPy around it and the results compared with the reference kernels.

This checks indexing, torch/torchvision semantics and both dtypes of the real kernel sources. It does not check
what only a device shows (races, launch configuration, CuPy's argument passing); ``test_kernels_gpu.py`` does.
The NMS bitmask kernel, whose threads cooperate through shared memory, is left to the GPU tests. Skipped with the
reason when no C++ compiler is found.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from segcore.backend import get_backend
from segcore.kernels import resample as reference_resample
from segcore.testing import assert_arrays_agree
from segcore_cupy import _cuda

CXX = shutil.which("g++") or shutil.which("clang++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++ or clang++) on PATH")
SHIM = Path(__file__).resolve().parent / "host_shim.h"
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
CTYPE = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}


@pytest.fixture(scope="module")
def libraries(tmp_path_factory) -> dict[str, ctypes.CDLL]:
    out = tmp_path_factory.mktemp("host_kernels")
    libs = {}
    for family in ("conv", "pool", "resample", "roi"):
        source = out / f"{family}.cpp"
        source.write_text(f'#include "{SHIM}"\n' + _cuda.source(family))
        lib = out / f"lib{family}.so"
        result = subprocess.run(
            [CXX, "-std=c++14", "-O1", "-shared", "-fPIC", "-o", str(lib), str(source)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        libs[family] = ctypes.CDLL(str(lib))
    return libs


def _arg(value):
    if isinstance(value, np.ndarray):
        assert value.flags.c_contiguous
        return value.ctypes.data_as(ctypes.c_void_p)
    if isinstance(value, (np.floating,)):
        return CTYPE[value.dtype](value)
    if isinstance(value, np.int32):
        return ctypes.c_int(int(value))
    return ctypes.c_longlong(int(value))


def _call(libraries, family: str, name: str, dtype, *args) -> None:
    getattr(libraries[family], f"{name}_{SUFFIX[np.dtype(dtype)]}")(*(_arg(a) for a in args))


def _ref(name: str):
    return get_backend("numpy").kernel(name)


XP = None


@pytest.fixture(scope="module", autouse=True)
def _namespace():
    global XP
    XP = get_backend("numpy").xp


def _close(actual, expected, what: str) -> None:
    assert_arrays_agree(actual, expected, what=what)


# -- conv -------------------------------------------------------------------------------------------------------

# (n, c, h, w, o, kernel, stride, padding, dilation, groups)
CONV_CASES = [
    (2, 4, 7, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (2, 6, 9, 8, 4, (3, 2), (2, 3), (2, 0), (2, 1), 2),
    (1, 3, 5, 5, 2, (5, 5), (1, 1), (0, 0), (1, 1), 1),
    (1, 4, 9, 7, 8, (3, 3), (2, 1), (1, 2), (2, 3), 4),  # depthwise, multiplier 2
    (2, 3, 6, 6, 3, (3, 3), (1, 1), (1, 1), (1, 1), 3),  # depthwise, multiplier 1
]


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@DTYPES
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"c{c[1]}o{c[4]}g{c[9]}k{c[5]}s{c[6]}p{c[7]}d{c[8]}")
def test_conv_kernels(libraries, case, dtype):
    n, c, h, w, o, (kh, kw), s, p, d, g = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c // g, kh, kw)).astype(dtype)
    ho, wo = _out_size(h, kh, s[0], p[0], d[0]), _out_size(w, kw, s[1], p[1], d[1])
    geometry = (kh, kw, s[0], s[1], p[0], p[1], d[0], d[1], ho, wo)
    grad = rng.standard_normal((n, o, ho, wo)).astype(dtype)
    expected_out = _ref("conv2d")(XP, x, weight, s, p, d, g)
    expected_dx = _ref("conv2d_grad_input")(XP, grad, weight, x.shape, s, p, d, g)
    if c // g == 1:
        out = np.empty((n, o, ho, wo), dtype=dtype)
        _call(libraries, "conv", "depthwise_forward", dtype, x, weight, out, n, c, h, w, o, *geometry)
        dx = np.empty_like(x)
        _call(libraries, "conv", "depthwise_grad_input", dtype, grad, weight, dx, n, c, h, w, o, *geometry)
        dweight = np.empty_like(weight)
        _call(libraries, "conv", "depthwise_grad_weight", dtype, x, grad, dweight, n, c, h, w, o, *geometry)
    else:
        cg, og, kk, pp = c // g, o // g, c // g * kh * kw, ho * wo
        cols = np.empty((n, c * kh * kw, pp), dtype=dtype)
        _call(libraries, "conv", "im2col", dtype, x, cols, n, c, h, w, *geometry)
        cols4 = cols.reshape(n, g, kk, pp)
        out = np.matmul(weight.reshape(g, og, kk), cols4).reshape(n, o, ho, wo)
        dweight = np.matmul(grad.reshape(n, g, og, pp), cols4.transpose(0, 1, 3, 2)).sum(axis=0)
        dweight = dweight.reshape(weight.shape)
        back = np.ascontiguousarray(np.matmul(weight.reshape(g, og, kk).transpose(0, 2, 1), grad.reshape(n, g, og, pp)))
        dx = np.empty_like(x)
        _call(libraries, "conv", "col2im", dtype, back, dx, n, c, h, w, *geometry)
        assert cg * g == c
    _close(out, expected_out, "conv2d")
    _close(dx, expected_dx, "conv2d_grad_input")
    _close(dweight, _ref("conv2d_grad_weight")(XP, x, grad, weight.shape, s, p, d, g), "conv2d_grad_weight")


# -- max_pool2d -------------------------------------------------------------------------------------------------


@DTYPES
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize(
    "geometry", [((3, 3), (2, 2), (1, 1), (1, 1)), ((2, 3), (3, 1), (1, 0), (2, 2)), ((3, 3), (1, 1), (1, 1), (1, 1))]
)
def test_max_pool2d_kernels(libraries, dtype, ceil_mode, geometry):
    from segcore.kernels.pool import pool_output_size

    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geometry
    rng = np.random.default_rng(1)
    x = rng.integers(-2, 3, size=(2, 3, 9, 8)).astype(dtype)  # many ties
    x[0, 0, 2, 3] = np.nan
    x[1, 2, :4, :4] = -np.inf
    n, c, h, w = x.shape
    oh, ow = pool_output_size(h, kh, sh, ph, dh, ceil_mode), pool_output_size(w, kw, sw, pw, dw, ceil_mode)
    out = np.empty((n, c, oh, ow), dtype=dtype)
    indices = np.empty((n, c, oh, ow), dtype=np.int64)
    _call(libraries, "pool", "max_pool2d", dtype, x, out, indices, n * c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)
    expected_out, expected_indices = _ref("max_pool2d")(XP, x, *geometry, ceil_mode)
    _close(out, expected_out, "max_pool2d")
    np.testing.assert_array_equal(indices, expected_indices)
    grad = rng.standard_normal(out.shape).astype(dtype)
    dx = np.zeros_like(x)
    _call(libraries, "pool", "max_pool2d_backward", dtype, grad, indices, dx, n * c, h * w, oh * ow)
    _close(dx, _ref("max_pool2d_backward")(XP, grad, expected_indices, x.shape), "max_pool2d_backward")


# -- bilinear ---------------------------------------------------------------------------------------------------


@DTYPES
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(("size", "scales"), [((17, 5), (None, None)), ((8, 7), (None, None)), ((15, 22), (2.0, 3.0))])
def test_bilinear_kernels(libraries, dtype, align_corners, size, scales):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 8, 7)).astype(dtype)
    h, w = x.shape[-2:]
    oh, ow = size
    tables = []
    for in_size, out_size, scale in ((h, oh, scales[0]), (w, ow, scales[1])):
        i0, i1, w0, w1 = reference_resample.bilinear_source_weights(in_size, out_size, align_corners, scale, dtype)
        tables += [np.ascontiguousarray(i0, dtype=np.int64), np.ascontiguousarray(i1, dtype=np.int64)]
        tables += [np.ascontiguousarray(w0, dtype=dtype), np.ascontiguousarray(w1, dtype=dtype)]
    r0, r1, wr0, wr1, c0, c1, wc0, wc1 = tables
    out = np.empty((2, 3, oh, ow), dtype=dtype)
    _call(libraries, "resample", "bilinear_forward", dtype, x, out, r0, r1, wr0, wr1, c0, c1, wc0, wc1, 6, h, w, oh, ow)
    _close(out, _ref("interpolate_bilinear")(XP, x, size, align_corners, scales), "interpolate_bilinear")
    grad = rng.standard_normal(out.shape).astype(dtype)
    dx = np.zeros_like(x)
    _call(libraries, "resample", "bilinear_backward", dtype, grad, dx, *tables, 6, h, w, oh, ow)
    expected = _ref("interpolate_bilinear_backward")(XP, grad, (h, w), align_corners, scales)
    _close(dx, expected, "interpolate_bilinear_backward")


# -- RoIAlign / RoIPool -----------------------------------------------------------------------------------------


def _rois(rng, count: int, images: int, h: float, w: float, dtype) -> np.ndarray:
    x1, y1 = rng.uniform(-6, w, count), rng.uniform(-6, h, count)
    x2, y2 = x1 + rng.uniform(0, w / 2, count), y1 + rng.uniform(0, h / 2, count)
    batch = rng.integers(0, images, count).astype(np.float64)
    return np.ascontiguousarray(np.stack([batch, x1, y1, x2, y2], axis=1).astype(dtype))


@DTYPES
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_kernels(libraries, dtype, aligned, sampling_ratio):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 12, 10)).astype(dtype)
    n, c, h, w = x.shape
    rois = _rois(rng, 40, 2, 24.0, 20.0, dtype)
    k = rois.shape[0]
    ph, pw, scale = 3, 4, 0.5
    args = (ph, pw, np.dtype(dtype).type(scale), sampling_ratio, np.int32(aligned))
    params = (scale, (ph, pw), sampling_ratio, aligned)
    out = np.empty((k, c, ph, pw), dtype=dtype)
    _call(libraries, "roi", "roi_align_forward", dtype, x, rois, out, k, c, h, w, *args)
    _close(out, _ref("roi_align")(XP, x, rois, *params), "roi_align")
    grad = rng.standard_normal(out.shape).astype(dtype)
    expected = _ref("roi_align_backward")(XP, grad, rois, x.shape, *params)
    gathered = np.empty_like(x)
    _call(libraries, "roi", "roi_align_backward_gather", dtype, grad, rois, gathered, k, n, c, h, w, *args)
    _close(gathered, expected, "roi_align_backward gather")
    scattered = np.zeros_like(x)
    _call(libraries, "roi", "roi_align_backward_atomic", dtype, grad, rois, scattered, k, c, h, w, *args)
    _close(scattered, expected, "roi_align_backward atomic")


@DTYPES
def test_roi_pool_kernels(libraries, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 12, 10)).astype(dtype)
    n, c, h, w = x.shape
    rois = _rois(rng, 30, 2, 24.0, 20.0, dtype)
    rois[0] = np.array([0, 30.0, 30.0, 40.0, 40.0], dtype=dtype)  # wholly outside: every bin empty
    k, ph, pw, scale = rois.shape[0], 3, 4, 0.5
    out = np.empty((k, c, ph, pw), dtype=dtype)
    argmax = np.empty((k, c, ph, pw), dtype=np.int64)
    typed_scale = np.dtype(dtype).type(scale)
    _call(libraries, "roi", "roi_pool_forward", dtype, x, rois, out, argmax, k, c, h, w, ph, pw, typed_scale)
    expected_out, expected_argmax = _ref("roi_pool")(XP, x, rois, scale, (ph, pw))
    _close(out, expected_out, "roi_pool")
    np.testing.assert_array_equal(argmax, expected_argmax)
    assert (argmax[0] == -1).all()
    grad = rng.standard_normal(out.shape).astype(dtype)
    dx = np.zeros_like(x)
    _call(libraries, "roi", "roi_pool_backward", dtype, grad, rois, argmax, dx, k, c, h, w, ph, pw)
    _close(dx, _ref("roi_pool_backward")(XP, grad, rois, expected_argmax, x.shape), "roi_pool_backward")
