"""Every backend's RoIAlign / RoIPool (forward and backward) and NMS against the NumPy reference.

Box sets come from ``segcore.testing.roi_boxes`` / ``nms_boxes``: degenerate, inverted, outside and huge
boxes included, and empty sets.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segcore.backend import get_backend
from segcore.testing import assert_arrays_agree, assert_backend_agrees, backend_params, nms_boxes, roi_boxes, run_kernel

MAP = (2, 3, 9, 11)  # (N, C, H, W) feature maps
IMAGE = (36.0, 44.0)  # box coordinates are in image pixels, 4x the map (spatial_scale 0.25)


def _inputs(dtype, seed: int):
    rng = np.random.default_rng(seed)
    return rng, rng.standard_normal(MAP).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("backend", backend_params())
@given(
    rois=roi_boxes(MAP[0], *IMAGE),
    output_size=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    sampling_ratio=st.sampled_from([-1, 0, 1, 2, 3]),
    aligned=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_roi_align_forward_and_backward_agree(backend, dtype, rois, output_size, sampling_ratio, aligned, seed):
    rng, x = _inputs(dtype, seed)
    rois = rois.astype(dtype)
    params = (0.25, output_size, sampling_ratio, aligned)
    out = assert_backend_agrees("roi_align", backend, x, rois, *params)
    grad = rng.standard_normal(out.shape).astype(dtype)
    assert_backend_agrees("roi_align_backward", backend, grad, rois, x.shape, *params)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("backend", backend_params())
@given(
    rois=roi_boxes(MAP[0], *IMAGE),
    output_size=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    seed=st.integers(0, 2**32 - 1),
)
def test_roi_pool_forward_argmax_and_backward_agree(backend, dtype, rois, output_size, seed):
    rng, x = _inputs(dtype, seed)
    rois = rois.astype(dtype)
    out, argmax = assert_backend_agrees("roi_pool", backend, x, rois, 0.25, output_size)
    grad = rng.standard_normal(out.shape).astype(dtype)
    assert_backend_agrees("roi_pool_backward", backend, grad, rois, argmax, x.shape)


@pytest.mark.parametrize("backend", backend_params())
def test_roi_align_backward_is_bitwise_deterministic(backend):
    # Many overlapping RoIs on one image: every input pixel receives gradient from dozens of bins. The
    # deterministic path must give the same bits on every run.
    rng = np.random.default_rng(3)
    x_shape = (1, 16, 20, 20)
    corners = rng.uniform(0, 60, (200, 2))
    sizes = rng.uniform(4, 20, (200, 2))
    rois = np.concatenate([np.zeros((200, 1)), corners, corners + sizes], axis=1).astype(np.float32)
    grad = rng.standard_normal((200, 16, 7, 7)).astype(np.float32)
    target = get_backend(backend)
    kernel = target.kernel("roi_align_backward")
    # A backend whose default may use atomics (GPU) has a deterministic switch: that mode is the one tested.
    switch = {"deterministic": True} if "deterministic" in inspect.signature(kernel).parameters else {}
    params = (0.25, (7, 7), 2, True)
    runs = [
        target.to_numpy(run_kernel("roi_align_backward", backend, grad, rois, x_shape, *params, **switch))
        for _ in range(3)
    ]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
    expected = run_kernel("roi_align_backward", "numpy", grad, rois, x_shape, *params)
    assert_arrays_agree(np.asarray(runs[0]), expected, what=f"deterministic roi_align_backward on {backend!r}")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("backend", backend_params())
@given(data=nms_boxes(), threshold=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_nms_keeps_the_same_boxes_in_the_same_order(backend, dtype, data, threshold):
    boxes, scores = data
    kept = assert_backend_agrees("nms", backend, boxes.astype(dtype), scores.astype(dtype), threshold)
    assert kept.dtype == np.int64


@pytest.mark.parametrize("backend", backend_params())
def test_nms_puts_nan_scores_first_like_torch(backend):
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    scores = np.array([0.9, np.nan, 0.5], dtype=np.float32)
    kept = assert_backend_agrees("nms", backend, boxes, scores, 0.5)
    assert kept.tolist() == [1, 2]
