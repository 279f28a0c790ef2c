"""The segcore-cupy distribution's registration and the parts of the backend that need no GPU: entry point,
probe reasons, the kernel table's names and signatures, the fall-back of every override to the reference for
arrays its CUDA kernels do not take, and NMS's host reduction."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import segcore
from segcore.backend import get_backend
from segcore.errors import BackendUnavailableError
from segcore_cupy import device, plugin


def _info(name: str):
    return next(info for info in segcore.list_backends() if info.name == name)


def test_entry_point_points_at_the_plugin_module():
    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="segcore")}
    assert points.get("segcore-cupy") == "segcore_cupy.plugin"


def test_backend_is_listed_by_this_plugin():
    info = _info("cupy")
    assert info.provider == "segcore-cupy"
    assert info.available == (device.probe() is None)


def test_unavailable_here_because_no_device():
    info = _info("cupy")
    if info.available:
        pytest.skip("a CUDA device is usable here")
    assert info.reason.startswith(("cupy is not installed", "no CUDA device found")), info.reason
    with pytest.raises(BackendUnavailableError, match=r"segcore-cupy\[cuda12\]"):
        get_backend("cupy").kernel("conv2d")


def test_listing_backends_imports_no_kernel_module():
    code = (
        "import sys, segcore; segcore.list_backends(); "
        "print(any(m.startswith('segcore_cupy.conv') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_probe_without_cupy(monkeypatch):
    real = device.importlib.util.find_spec
    monkeypatch.setattr(device.importlib.util, "find_spec", lambda name: None if name == "cupy" else real(name))
    assert device.probe() == "cupy is not installed"


def test_probe_passes_on_the_cuda_error(monkeypatch):
    cupy = pytest.importorskip("cupy")

    def failing():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    monkeypatch.setattr(cupy.cuda.runtime, "getDeviceCount", failing)
    assert device.probe() == (
        "no CUDA device found (CUDA error: RuntimeError: cudaErrorNoDevice: no CUDA-capable device is detected)"
    )
    monkeypatch.setattr(cupy.cuda.runtime, "getDeviceCount", lambda: 0)
    assert device.probe() == "no CUDA device found (the CUDA runtime reports 0 devices)"
    monkeypatch.setattr(cupy.cuda.runtime, "getDeviceCount", lambda: 1)
    assert device.probe() is None


OVERRIDDEN = {
    "conv2d",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "max_pool2d",
    "max_pool2d_backward",
    "interpolate_bilinear",
    "interpolate_bilinear_backward",
    "roi_align",
    "roi_align_backward",
    "roi_pool",
    "roi_pool_backward",
    "nms",
}


def test_kernel_table_overrides_reference_kernels_with_their_signatures():
    pytest.importorskip("cupy")
    table = device.KERNELS
    assert set(table) == OVERRIDDEN
    reference = get_backend("numpy")
    for name, fn in table.items():
        ours = [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.KEYWORD_ONLY]
        theirs = list(inspect.signature(reference.kernel(name)).parameters.values())
        assert [p.name for p in ours] == [p.name for p in theirs], name


def test_kernels_registered_by_hook_keep_precedence(monkeypatch):
    backend = plugin.cupy_backend()
    monkeypatch.setattr(backend, "require_available", lambda: None)
    mine = lambda *args: "mine"  # noqa: E731
    backend.overrides["conv2d"] = mine
    backend._load_kernels = lambda: {"conv2d": lambda *a: "table", "nms": lambda *a: "table"}
    assert backend.kernel("conv2d") is mine
    assert backend.kernel("nms")() == "table"


# -- fall-back: NumPy arrays (and dtypes without a CUDA instantiation) go to the reference kernels ----------------


@pytest.fixture(scope="module")
def xp():
    pytest.importorskip("cupy")
    return get_backend("numpy").xp


def _ref(name):
    return get_backend("numpy").kernel(name)


def _same(a, b):
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_inputs_fall_back_to_the_reference(xp, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    rois = np.array([[0, 0.5, 1.0, 5.0, 6.0], [1, 2.0, 0.0, 4.5, 3.0]], dtype=dtype)
    boxes = np.array([[0, 0, 4, 4], [1, 1, 5, 5], [10, 10, 12, 12]], dtype=dtype)
    scores = np.array([0.9, 0.8, 0.7], dtype=dtype)
    k = device.KERNELS
    conv = ((1, 2), (1, 0), (1, 1), 2)
    _same(k["conv2d"](xp, x, w, *conv), _ref("conv2d")(xp, x, w, *conv))
    pool = ((2, 2), (2, 2), (0, 1), (1, 1), True)
    _same(k["max_pool2d"](xp, x, *pool), _ref("max_pool2d")(xp, x, *pool))
    resize = ((9, 5), False, (None, None))
    _same(k["interpolate_bilinear"](xp, x, *resize), _ref("interpolate_bilinear")(xp, x, *resize))
    align = (0.5, (2, 3), -1, True)
    _same(k["roi_align"](xp, x, rois, *align), _ref("roi_align")(xp, x, rois, *align))
    _same(k["roi_pool"](xp, x, rois, 0.5, (2, 2)), _ref("roi_pool")(xp, x, rois, 0.5, (2, 2)))
    _same(k["nms"](xp, boxes, scores, 0.3), _ref("nms")(xp, boxes, scores, 0.3))


# -- NMS host reduction -----------------------------------------------------------------------------------------


def test_nms_host_walk_skips_boxes_suppressed_by_kept_ones_only():
    from segcore_cupy.nms import _keep

    mask = np.zeros((4, 1), dtype=np.uint64)
    mask[0, 0] = 1 << 1  # box 0 suppresses box 1
    mask[1, 0] = 1 << 2  # box 1 would suppress 2, but 1 is not kept
    mask[2, 0] = 1 << 3  # box 2 suppresses 3
    assert _keep(mask, 4) == [0, 2]


def test_nms_host_walk_crosses_mask_words():
    from segcore_cupy.nms import _keep

    count = 130  # three 64-bit words
    mask = np.zeros((count, 3), dtype=np.uint64)
    mask[0, 2] = np.uint64(1) << np.uint64(129 - 128)  # box 0 suppresses box 129
    mask[63, 1] = np.uint64(1) << np.uint64(64 - 64)  # box 63 suppresses box 64
    assert _keep(mask, count) == [i for i in range(count) if i not in (64, 129)]
