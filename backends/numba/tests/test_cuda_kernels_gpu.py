"""The numba-cuda kernels on a real GPU, through the registered ``numba-cuda`` backend (CuPy arrays), against
the NumPy reference kernels: the same checks and cases as the simulator suite (``cudasim/checks.py``), plus
the ones only a device can answer (many RoIs racing on atomics, the deterministic backward on a large case).

Skipped, with the reason, unless ``segcore_numba.gpu.probe()`` finds a usable device.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from segcore_numba.gpu import probe


def _load_checks():
    # The helpers live beside the simulator cases, which import them as a top-level module "checks".
    path = Path(__file__).resolve().parent / "cudasim" / "checks.py"
    spec = importlib.util.spec_from_file_location("segcore_numba_cuda_checks", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


checks = _load_checks()
REASON = probe()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"numba-cuda backend: {REASON}")]
dtypes = pytest.mark.parametrize("dtype", checks.DTYPES, ids=lambda d: np.dtype(d).name)


@pytest.fixture(scope="module")
def device():
    from segcore.backend import get_backend

    return checks.backend_device(get_backend("numba-cuda"))


@dtypes
@pytest.mark.parametrize("case", checks.CONV_CASES, ids=lambda c: c.name)
def test_conv2d(device, case, dtype):
    checks.check_conv2d(device, case, dtype)


@dtypes
def test_conv_transpose_output_padding(device, dtype):
    checks.check_conv_transpose_output_padding(device, dtype)


@dtypes
@pytest.mark.parametrize("values", checks.POOL_VALUES)
@pytest.mark.parametrize("case", checks.POOL_CASES, ids=lambda c: c.name)
def test_max_pool2d(device, case, values, dtype):
    checks.check_max_pool2d(device, case, values, dtype)


@dtypes
@pytest.mark.parametrize("case", checks.RESAMPLE_CASES, ids=lambda c: c.name)
def test_interpolate_bilinear(device, case, dtype):
    checks.check_interpolate_bilinear(device, case, dtype)


@dtypes
@pytest.mark.parametrize("case", checks.ROI_CASES, ids=lambda c: c.name)
def test_roi_align(device, case, dtype):
    checks.check_roi_align(device, case, dtype)


@dtypes
def test_roi_align_backward_deterministic_is_bitwise_reproducible(device, dtype):
    checks.check_roi_align_backward_deterministic_is_bitwise_reproducible(device, dtype)


@dtypes
def test_roi_align_no_rois(device, dtype):
    checks.check_roi_align_no_rois(device, dtype)


@dtypes
@pytest.mark.parametrize("values", ("random", "ties"))
@pytest.mark.parametrize("case", checks.ROI_CASES, ids=lambda c: c.name)
def test_roi_pool(device, case, values, dtype):
    checks.check_roi_pool(device, case, values, dtype)


@dtypes
@pytest.mark.parametrize("threshold", checks.NMS_THRESHOLDS)
def test_nms(device, threshold, dtype):
    checks.check_nms(device, threshold, dtype)


@dtypes
def test_nms_empty(device, dtype):
    checks.check_nms_empty(device, dtype)


@pytest.mark.parametrize("reverse", (False, True))
@pytest.mark.parametrize("feature_dtype, value_dtype", checks.CRF_DTYPES, ids=lambda d: np.dtype(d).name)
def test_permutohedral_filter(device, feature_dtype, value_dtype, reverse):
    checks.check_permutohedral_filter(device, feature_dtype, value_dtype, reverse)


def test_roi_align_many_rois(device):
    """Hundreds of overlapping RoIs on a realistic map: atomics really race, the deterministic path really
    gathers across many RoIs per pixel, and both still match the reference."""
    checks.check_roi_align_many_rois(device)
