"""The numba-cuda kernels in Numba's CUDA simulator, against the NumPy reference kernels.

Not collected by the main test run (the file name does not match ``test_*.py``): ``test_cuda_kernels_sim.py``
runs it in a child process with ``NUMBA_ENABLE_CUDASIM=1`` so that the simulator never leaks into other tests.
One test class per kernel family; the parent reports failures per family, by class name.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import config

import checks

if not config.ENABLE_CUDASIM:
    raise RuntimeError("sim_cases.py must run with NUMBA_ENABLE_CUDASIM=1 (see test_cuda_kernels_sim.py)")

DEVICE = checks.simulator_device()
dtypes = pytest.mark.parametrize("dtype", checks.DTYPES, ids=lambda d: np.dtype(d).name)


class TestInterface:
    def test_probe_reports_the_simulator(self):
        import importlib.util

        from segcore_numba.gpu import probe

        reason = probe()
        assert reason is not None
        if importlib.util.find_spec("cupy") is not None:
            assert "NUMBA_ENABLE_CUDASIM" in reason

    def test_kernel_table_names_match_reference_kernels(self):
        from segcore.kernels import reference_kernels
        from segcore_numba.gpu import KERNELS

        assert set(KERNELS) <= set(reference_kernels())
        assert {"conv2d", "max_pool2d", "interpolate_bilinear", "roi_align", "roi_pool", "nms"} <= set(KERNELS)


class TestConv:
    @dtypes
    @pytest.mark.parametrize("case", checks.CONV_CASES, ids=lambda c: c.name)
    def test_conv2d(self, case, dtype):
        checks.check_conv2d(DEVICE, case, dtype)

    @dtypes
    def test_conv_transpose_output_padding(self, dtype):
        checks.check_conv_transpose_output_padding(DEVICE, dtype)


class TestPool:
    @dtypes
    @pytest.mark.parametrize("values", checks.POOL_VALUES)
    @pytest.mark.parametrize("case", checks.POOL_CASES, ids=lambda c: c.name)
    def test_max_pool2d(self, case, values, dtype):
        checks.check_max_pool2d(DEVICE, case, values, dtype)


class TestResample:
    @dtypes
    @pytest.mark.parametrize("case", checks.RESAMPLE_CASES, ids=lambda c: c.name)
    def test_interpolate_bilinear(self, case, dtype):
        checks.check_interpolate_bilinear(DEVICE, case, dtype)


class TestRoi:
    @dtypes
    @pytest.mark.parametrize("case", checks.ROI_CASES, ids=lambda c: c.name)
    def test_roi_align(self, case, dtype):
        checks.check_roi_align(DEVICE, case, dtype)

    @dtypes
    def test_roi_align_backward_deterministic_is_bitwise_reproducible(self, dtype):
        checks.check_roi_align_backward_deterministic_is_bitwise_reproducible(DEVICE, dtype)

    @dtypes
    def test_roi_align_no_rois(self, dtype):
        checks.check_roi_align_no_rois(DEVICE, dtype)

    @dtypes
    @pytest.mark.parametrize("values", ("random", "ties"))
    @pytest.mark.parametrize("case", checks.ROI_CASES, ids=lambda c: c.name)
    def test_roi_pool(self, case, values, dtype):
        checks.check_roi_pool(DEVICE, case, values, dtype)


class TestNms:
    @dtypes
    @pytest.mark.parametrize("threshold", checks.NMS_THRESHOLDS)
    def test_nms(self, threshold, dtype):
        checks.check_nms(DEVICE, threshold, dtype)

    @dtypes
    def test_nms_empty(self, dtype):
        checks.check_nms_empty(DEVICE, dtype)


class TestCrf:
    @pytest.mark.parametrize("reverse", (False, True))
    @pytest.mark.parametrize(
        "feature_dtype, value_dtype", checks.CRF_DTYPES, ids=lambda d: np.dtype(d).name
    )
    def test_permutohedral_filter(self, feature_dtype, value_dtype, reverse):
        checks.check_permutohedral_filter(DEVICE, feature_dtype, value_dtype, reverse)
