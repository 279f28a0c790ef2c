"""The CUDA kernels on a real GPU, through the registered ``cupy`` backend, against the NumPy reference kernels.

The hypothesis-driven differential suite (``tests/kernels/test_backend_agreement_*.py`` at the repository root)
runs on ``cupy`` as on every registered backend; these cases add what is specific to this backend: conv2d split
into several im2col chunks, gradients whose geometry comes from ``grad_out``, both RoIAlign backward variants
(many RoIs racing on atomics; the gather's bitwise reproducibility), NMS across 64-box mask words, float64, and
a model-level forward + backward. Skipped, with the reason, unless the backend can run here.
"""

from __future__ import annotations

import numpy as np
import pytest

from segcore.backend import get_backend
from segcore.testing import assert_arrays_agree, assert_backend_agrees
from segcore_cupy.device import probe

REASON = probe()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"cupy backend: {REASON}")]
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])


@pytest.fixture(scope="module")
def cupy_backend():
    return get_backend("cupy")


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# (n, c, h, w, o, kernel, stride, padding, dilation, groups)
CONV_CASES = [
    (2, 6, 11, 9, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (2, 6, 13, 10, 4, (3, 2), (2, 3), (2, 0), (2, 1), 2),
    (1, 4, 9, 9, 8, (3, 3), (2, 2), (1, 1), (3, 3), 4),  # depthwise, multiplier 2
    (3, 5, 7, 6, 7, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    (1, 3, 5, 5, 2, (5, 5), (1, 1), (0, 0), (1, 1), 1),  # 1x1 output
]


@DTYPES
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"n{c[0]}c{c[1]}o{c[4]}g{c[9]}k{c[5]}s{c[6]}d{c[8]}")
@pytest.mark.parametrize("chunk_elements", [1 << 26, 64], ids=["one-chunk", "many-chunks"])
def test_conv2d_and_gradients(cupy_backend, monkeypatch, case, dtype, chunk_elements):
    from segcore_cupy import conv

    monkeypatch.setattr(conv, "_COLS_ELEMENTS", chunk_elements)
    n, c, h, w, o, k, s, p, d, g = case
    rng = _rng()
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c // g, *k)).astype(dtype)
    out = assert_backend_agrees("conv2d", cupy_backend, x, weight, s, p, d, g)
    grad = rng.standard_normal(out.shape).astype(dtype)
    assert_backend_agrees("conv2d_grad_input", cupy_backend, grad, weight, x.shape, s, p, d, g)
    assert_backend_agrees("conv2d_grad_weight", cupy_backend, x, grad, weight.shape, s, p, d, g)


@DTYPES
@pytest.mark.parametrize("groups", [1, 3])
def test_conv_gradients_take_geometry_from_grad_out(cupy_backend, dtype, groups):
    # conv_transpose2d with output_padding: the kept outputs are fewer than the input could give.
    rng = _rng(1)
    x = rng.standard_normal((2, 3, 10, 9)).astype(dtype)
    weight = rng.standard_normal((6, 3 // groups, 3, 3)).astype(dtype)
    grad = rng.standard_normal((2, 6, 4, 3)).astype(dtype)
    geometry = ((2, 2), (0, 1), (1, 1), groups)
    assert_backend_agrees("conv2d_grad_input", cupy_backend, grad, weight, x.shape, *geometry)
    assert_backend_agrees("conv2d_grad_weight", cupy_backend, x, grad, weight.shape, *geometry)


@DTYPES
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool2d_ties_nan_and_padding(cupy_backend, dtype, ceil_mode):
    rng = _rng(2)
    x = rng.integers(-2, 3, size=(2, 3, 9, 8)).astype(dtype)  # many ties
    x[0, 0, 2, 3] = np.nan
    x[1, 2, :3, :3] = -np.inf
    geometries = [((3, 3), (2, 2), (1, 1), (1, 1)), ((2, 3), (3, 1), (1, 0), (2, 2)), ((3, 3), (1, 1), (1, 1), (1, 1))]
    for geometry in geometries:
        out, indices = assert_backend_agrees("max_pool2d", cupy_backend, x, *geometry, ceil_mode)
        grad = rng.standard_normal(out.shape).astype(dtype)
        assert_backend_agrees("max_pool2d_backward", cupy_backend, grad, indices, x.shape)


@DTYPES
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(("size", "scales"), [((17, 5), (None, None)), ((4, 4), (None, None)), ((15, 22), (2.0, 3.0))])
def test_interpolate_bilinear(cupy_backend, dtype, align_corners, size, scales):
    if align_corners and scales[0] is not None:
        pytest.skip("torch ignores scales with align_corners")
    rng = _rng(3)
    x = rng.standard_normal((2, 3, 8, 7)).astype(dtype)
    out = assert_backend_agrees("interpolate_bilinear", cupy_backend, x, size, align_corners, scales)
    grad = rng.standard_normal(out.shape).astype(dtype)
    assert_backend_agrees("interpolate_bilinear_backward", cupy_backend, grad, (8, 7), align_corners, scales)


def _rois(rng: np.random.Generator, count: int, images: int, h: float, w: float, dtype) -> np.ndarray:
    x1, y1 = rng.uniform(-4, w, count), rng.uniform(-4, h, count)
    x2, y2 = x1 + rng.uniform(0, w / 2, count), y1 + rng.uniform(0, h / 2, count)
    batch = rng.integers(0, images, count).astype(np.float64)
    return np.stack([batch, x1, y1, x2, y2], axis=1).astype(dtype)


@DTYPES
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_forward_and_both_backwards(cupy_backend, dtype, aligned, sampling_ratio):
    rng = _rng(4)
    x = rng.standard_normal((2, 3, 16, 13)).astype(dtype)
    rois = _rois(rng, 300, 2, 32.0, 26.0, dtype)  # many overlapping RoIs: atomics race
    params = (0.5, (4, 3), sampling_ratio, aligned)
    out = assert_backend_agrees("roi_align", cupy_backend, x, rois, *params)
    grad = rng.standard_normal(out.shape).astype(dtype)
    expected = assert_backend_agrees("roi_align_backward", cupy_backend, grad, rois, x.shape, *params)
    kernel = cupy_backend.kernel("roi_align_backward")
    xp = cupy_backend.xp
    atomic = kernel(xp, cupy_backend.asarray(grad), cupy_backend.asarray(rois), x.shape, *params, deterministic=False)
    assert_arrays_agree(cupy_backend.to_numpy(atomic), expected, what="roi_align_backward atomic vs deterministic")


def test_roi_align_deterministic_backward_is_bitwise_reproducible(cupy_backend):
    rng = _rng(5)
    x_shape = (1, 4, 32, 32)
    rois = cupy_backend.asarray(_rois(rng, 500, 1, 64.0, 64.0, np.float32))
    grad = cupy_backend.asarray(rng.standard_normal((500, 4, 7, 7)).astype(np.float32))
    kernel = cupy_backend.kernel("roi_align_backward")
    runs = [
        cupy_backend.to_numpy(kernel(cupy_backend.xp, grad, rois, x_shape, 0.5, (7, 7), 2, True)) for _ in range(3)
    ]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])


@DTYPES
def test_roi_pool_with_empty_bins(cupy_backend, dtype):
    rng = _rng(6)
    x = rng.standard_normal((2, 3, 12, 10)).astype(dtype)
    rois = _rois(rng, 50, 2, 24.0, 20.0, dtype)
    rois[0] = np.array([0, 30.0, 30.0, 40.0, 40.0], dtype=dtype)  # wholly outside: every bin empty
    out, argmax = assert_backend_agrees("roi_pool", cupy_backend, x, rois, 0.5, (3, 4))
    assert (argmax[0] == -1).all()
    grad = rng.standard_normal(out.shape).astype(dtype)
    assert_backend_agrees("roi_pool_backward", cupy_backend, grad, rois, argmax, x.shape)


@DTYPES
@pytest.mark.parametrize("count", [1, 63, 64, 65, 300])
def test_nms_across_mask_words(cupy_backend, dtype, count):
    rng = _rng(7)
    xy = rng.uniform(0, 50, (count, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 20, (count, 2))], axis=1).astype(dtype)
    scores = rng.integers(0, 20, count).astype(dtype)  # ties
    for threshold in (0.0, 0.3, 0.7):
        assert_backend_agrees("nms", cupy_backend, boxes, scores, threshold)


def test_model_forward_and_backward_agree_with_numpy():
    import segcore

    def run(backend: str):
        model = segcore.build(
            "deeplabv3plus",
            backend=backend,
            num_classes=5,
            backbone="resnet50",
            width=0.125,
            rng=np.random.default_rng(0),
        )
        model.train()
        images = np.random.default_rng(1).standard_normal((2, 3, 65, 65)).astype(np.float32)
        masks = np.random.default_rng(2).integers(0, 5, (2, 65, 65))
        losses = model.losses(segcore.tensor(images, backend=backend), segcore.tensor(masks, backend=backend))
        total = sum(losses.values())
        total.backward()
        return float(total.item()), {name: p.grad.numpy() for name, p in model.named_parameters()}

    loss_gpu, grads_gpu = run("cupy")
    loss_cpu, grads_cpu = run("numpy")
    assert abs(loss_gpu - loss_cpu) <= 1e-3 * max(1.0, abs(loss_cpu))
    for name, grad in grads_cpu.items():
        assert_arrays_agree(grads_gpu[name], grad, rtol=5e-3, atol=5e-4, what=name)
