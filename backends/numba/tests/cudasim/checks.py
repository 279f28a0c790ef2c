"""Comparisons of the numba-cuda kernels with the NumPy reference kernels, on small inputs.

Shared by the simulator cases (``sim_cases.py``, run with ``NUMBA_ENABLE_CUDASIM=1`` on NumPy arrays) and the
GPU tests (``../test_cuda_kernels_gpu.py``, on CuPy arrays): a :class:`Device` says where the kernels' arrays
live. Every check computes the reference on NumPy copies of the same inputs and names the kernel and the case
in its failure message. Inputs are tiny because the simulator runs every CUDA thread as a Python thread.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable

import array_api_compat.numpy as np_xp
import numpy as np

from segcore.kernels import crf as reference_crf
from segcore.kernels import reference_kernels

DTYPES = (np.float32, np.float64)
TOLERANCE = {np.float32: dict(atol=5e-4, rtol=5e-3), np.float64: dict(atol=1e-10, rtol=1e-9)}


@dataclass(frozen=True)
class Device:
    """Where the CUDA kernels' arrays live (their namespace, copies to and from NumPy) and how a kernel is
    looked up by name."""

    xp: Any
    put: Callable[[np.ndarray], Any]
    get: Callable[[Any], np.ndarray]
    kernel: Callable[[str], Callable]


def _table_kernel(name: str) -> Callable:
    from segcore_numba.gpu import KERNELS

    return KERNELS[name]


def simulator_device() -> Device:
    """NumPy arrays, ``array_api_compat.numpy`` and the kernel table: what Numba's CUDA simulator can run."""
    return Device(np_xp, lambda a: np.array(a, copy=True), np.asarray, _table_kernel)


def backend_device(backend) -> Device:
    """The registered ``numba-cuda`` backend: its CuPy storage and its kernel lookup."""
    return Device(backend.xp, backend.asarray, backend.to_numpy, backend.kernel)


def _reference(name: str) -> Callable:
    return reference_kernels()[name]


def rng_for(*key: object) -> np.random.Generator:
    """A generator seeded by the case, so every case has its own fixed inputs."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def assert_close(kernel: str, case: str, actual, expected: np.ndarray, dtype) -> None:
    actual = np.asarray(actual)
    context = f"numba-cuda {kernel!r} disagrees with the reference kernel ({case}, {np.dtype(dtype).name})"
    assert actual.shape == expected.shape, f"{context}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == expected.dtype, f"{context}: dtype {actual.dtype}, expected {expected.dtype}"
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype], err_msg=context)


def assert_equal(kernel: str, case: str, actual, expected: np.ndarray) -> None:
    actual = np.asarray(actual)
    context = f"numba-cuda {kernel!r} disagrees with the reference kernel ({case})"
    assert actual.dtype == expected.dtype, f"{context}: dtype {actual.dtype}, expected {expected.dtype}"
    np.testing.assert_array_equal(actual, expected, err_msg=context)


# -- conv ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvCase:
    name: str
    n: int
    c: int
    o: int
    hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


CONV_CASES = (
    ConvCase("3x3-pad1", 2, 3, 4, (6, 7), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ConvCase("stride>kernel", 1, 2, 3, (7, 7), (2, 2), (3, 3), (0, 0), (1, 1), 1),
    ConvCase("dilation2-stride2", 1, 2, 2, (7, 6), (3, 3), (2, 2), (2, 1), (2, 2), 1),
    ConvCase("groups2-rect", 2, 4, 6, (5, 6), (2, 3), (1, 2), (1, 0), (1, 1), 2),
    ConvCase("depthwise-x2", 1, 3, 6, (5, 5), (3, 3), (2, 2), (1, 1), (1, 1), 3),
    ConvCase("asym-dilation", 1, 2, 2, (6, 7), (2, 3), (1, 1), (0, 2), (2, 1), 1),
    ConvCase("pointwise-groups2", 2, 4, 2, (3, 4), (1, 1), (1, 1), (0, 0), (1, 1), 2),
)


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def check_conv2d(device: Device, case: ConvCase, dtype) -> None:
    """Forward, input gradient and weight gradient of one geometry."""
    rng = rng_for("conv", case, dtype)
    x = rng.standard_normal((case.n, case.c) + case.hw).astype(dtype)
    w = rng.standard_normal((case.o, case.c // case.groups) + case.kernel).astype(dtype)
    geometry = (case.stride, case.padding, case.dilation, case.groups)
    expected = _reference("conv2d")(np_xp, x, w, *geometry)
    actual = device.kernel("conv2d")(device.xp, device.put(x), device.put(w), *geometry)
    assert_close("conv2d", case.name, device.get(actual), expected, dtype)

    g = rng.standard_normal(expected.shape).astype(dtype)
    expected = _reference("conv2d_grad_input")(np_xp, g, w, x.shape, *geometry)
    actual = device.kernel("conv2d_grad_input")(device.xp, device.put(g), device.put(w), x.shape, *geometry)
    assert_close("conv2d_grad_input", case.name, device.get(actual), expected, dtype)

    expected = _reference("conv2d_grad_weight")(np_xp, x, g, w.shape, *geometry)
    actual = device.kernel("conv2d_grad_weight")(device.xp, device.put(x), device.put(g), w.shape, *geometry)
    assert_close("conv2d_grad_weight", case.name, device.get(actual), expected, dtype)


def check_conv_transpose_output_padding(device: Device, dtype) -> None:
    """conv_transpose2d's geometry: with output_padding >= stride (allowed when dilation > stride) the full
    convolution of the larger output has more windows than ``grad_out``; only the first ``Ho x Wo`` count."""
    rng = rng_for("conv-transpose", dtype)
    stride, padding, dilation, groups = (1, 1), (0, 1), (2, 2), 1
    x = rng.standard_normal((1, 3, 4, 3)).astype(dtype)  # the transposed conv's input = grad_out of a conv
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    output_padding = (1, 1)
    out_hw = tuple(
        (size - 1) * s - 2 * p + d * 2 + op + 1
        for size, s, p, d, op in zip(x.shape[2:], stride, padding, dilation, output_padding)
    )
    full = tuple(_conv_out(size, 3, s, p, d) for size, s, p, d in zip(out_hw, stride, padding, dilation))
    assert full > x.shape[2:], "the case must have more windows than grad_out to test the cropping"
    shape = (1, 2) + out_hw
    geometry = (stride, padding, dilation, groups)
    expected = _reference("conv2d_grad_input")(np_xp, x, w, shape, *geometry)
    actual = device.kernel("conv2d_grad_input")(device.xp, device.put(x), device.put(w), shape, *geometry)
    assert_close("conv2d_grad_input", "transposed, output_padding", device.get(actual), expected, dtype)

    y = rng.standard_normal(shape).astype(dtype)
    expected = _reference("conv2d_grad_weight")(np_xp, y, x, w.shape, *geometry)
    actual = device.kernel("conv2d_grad_weight")(device.xp, device.put(y), device.put(x), w.shape, *geometry)
    assert_close("conv2d_grad_weight", "transposed, output_padding", device.get(actual), expected, dtype)


# -- pool ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolCase:
    name: str
    shape: tuple[int, int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool


POOL_CASES = (
    PoolCase("2x2-s2", (2, 2, 6, 7), (2, 2), (2, 2), (0, 0), (1, 1), False),
    PoolCase("3x3-s2-p1-ceil", (1, 3, 7, 6), (3, 3), (2, 2), (1, 1), (1, 1), True),
    PoolCase("stride>kernel", (1, 2, 7, 7), (2, 2), (3, 3), (0, 0), (1, 1), False),
    PoolCase("dilation2-ceil", (1, 2, 7, 7), (3, 2), (1, 2), (1, 1), (2, 2), True),
)
# random: distinct values; ties: values in {0, 1, 2} (first maximum wins); special: NaN and -inf planted.
POOL_VALUES = ("random", "ties", "special")


def _pool_input(rng: np.random.Generator, shape, values: str, dtype) -> np.ndarray:
    if values == "ties":
        return rng.integers(0, 3, size=shape).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    if values == "special":
        flat = x.reshape(-1)
        picks = rng.choice(flat.size, size=max(2, flat.size // 8), replace=False)
        flat[picks[::2]] = np.nan
        flat[picks[1::2]] = -np.inf
        flat[: shape[3]] = -np.inf  # a whole row of -inf: windows with nothing above the initial maximum
    return x


def check_max_pool2d(device: Device, case: PoolCase, values: str, dtype) -> None:
    rng = rng_for("pool", case, values, dtype)
    x = _pool_input(rng, case.shape, values, dtype)
    args = (case.kernel, case.stride, case.padding, case.dilation, case.ceil_mode)
    out_ref, idx_ref = _reference("max_pool2d")(np_xp, x, *args)
    out, idx = device.kernel("max_pool2d")(device.xp, device.put(x), *args)
    label = f"{case.name}, {values}"
    assert_equal("max_pool2d (indices)", label, device.get(idx), idx_ref)
    assert_equal("max_pool2d", label, device.get(out), out_ref)

    g = rng.standard_normal(out_ref.shape).astype(dtype)
    expected = _reference("max_pool2d_backward")(np_xp, g, idx_ref, x.shape)
    actual = device.kernel("max_pool2d_backward")(device.xp, device.put(g), device.put(idx_ref), x.shape)
    assert_close("max_pool2d_backward", label, device.get(actual), expected, dtype)


# -- resample -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResampleCase:
    name: str
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    align_corners: bool
    scales: tuple[float | None, float | None]


RESAMPLE_CASES = (
    ResampleCase("up", (3, 4), (7, 6), False, (None, None)),
    ResampleCase("up-align", (3, 4), (7, 6), True, (None, None)),
    ResampleCase("down-align", (7, 6), (3, 4), True, (None, None)),
    ResampleCase("down", (7, 6), (3, 4), False, (None, None)),
    ResampleCase("scale-factor", (3, 4), (6, 9), False, (2.0, 2.25)),
    ResampleCase("same-size", (5, 4), (5, 4), False, (None, None)),
    ResampleCase("to-1x2-align", (4, 5), (1, 2), True, (None, None)),
)


def check_interpolate_bilinear(device: Device, case: ResampleCase, dtype) -> None:
    rng = rng_for("resample", case, dtype)
    x = rng.standard_normal((2, 2) + case.in_hw).astype(dtype)
    args = (case.out_hw, case.align_corners, case.scales)
    expected = _reference("interpolate_bilinear")(np_xp, x, *args)
    actual = device.kernel("interpolate_bilinear")(device.xp, device.put(x), *args)
    assert_close("interpolate_bilinear", case.name, device.get(actual), expected, dtype)

    g = rng.standard_normal(expected.shape).astype(dtype)
    args = (case.in_hw, case.align_corners, case.scales)
    expected = _reference("interpolate_bilinear_backward")(np_xp, g, *args)
    actual = device.kernel("interpolate_bilinear_backward")(device.xp, device.put(g), *args)
    assert_close("interpolate_bilinear_backward", case.name, device.get(actual), expected, dtype)


# -- roi ----------------------------------------------------------------------------------------------------

# (batch, x1, y1, x2, y2) on a (2, C, 7, 6) input: ordinary, half-pixel corners (RoIPool's rounding), partly
# outside, zero-size, inverted, entirely outside, the whole map.
ROIS = np.array(
    [
        [0, 0.5, 1.0, 4.2, 5.1],
        [1, 1.5, 2.5, 4.5, 5.5],
        [1, -2.0, -1.5, 3.0, 2.0],
        [0, 3.0, 3.0, 3.0, 3.0],
        [1, 5.5, 4.0, 2.0, 1.0],
        [0, 10.0, 10.0, 14.0, 12.0],
        [0, 0.0, 0.0, 6.0, 7.0],
    ]
)
ROI_INPUT_SHAPE = (2, 2, 7, 6)


@dataclass(frozen=True)
class RoiCase:
    name: str
    output_size: tuple[int, int]
    spatial_scale: float
    sampling_ratio: int
    aligned: bool


ROI_CASES = (
    RoiCase("legacy-adaptive", (2, 3), 1.0, -1, False),
    RoiCase("aligned-sr2-scale0.5", (3, 3), 0.5, 2, True),
    RoiCase("aligned-adaptive", (2, 2), 1.0, -1, True),
    RoiCase("legacy-sr1-scale0.5", (3, 2), 0.5, 1, False),
)


def _roi_inputs(case: RoiCase, dtype):
    rng = rng_for("roi", case, dtype)
    x = rng.standard_normal(ROI_INPUT_SHAPE).astype(dtype)
    g = rng.standard_normal((ROIS.shape[0], ROI_INPUT_SHAPE[1]) + case.output_size).astype(dtype)
    return x, ROIS.astype(dtype), g


def check_roi_align(device: Device, case: RoiCase, dtype) -> None:
    """Forward, atomic backward and deterministic backward against the reference."""
    from segcore_numba.gpu import roi

    x, rois, g = _roi_inputs(case, dtype)
    params = dict(
        spatial_scale=case.spatial_scale,
        output_size=case.output_size,
        sampling_ratio=case.sampling_ratio,
        aligned=case.aligned,
    )
    expected = _reference("roi_align")(np_xp, x, rois, **params)
    actual = device.kernel("roi_align")(device.xp, device.put(x), device.put(rois), **params)
    assert_close("roi_align", case.name, device.get(actual), expected, dtype)

    expected = _reference("roi_align_backward")(np_xp, g, rois, x.shape, **params)
    actual = device.kernel("roi_align_backward")(device.xp, device.put(g), device.put(rois), x.shape, **params)
    assert_close("roi_align_backward", case.name, device.get(actual), expected, dtype)
    actual = roi.roi_align_backward_deterministic(device.xp, device.put(g), device.put(rois), x.shape, **params)
    assert_close("roi_align_backward_deterministic", case.name, device.get(actual), expected, dtype)


def check_roi_align_backward_deterministic_is_bitwise_reproducible(device: Device, dtype) -> None:
    """Two runs of the deterministic backward give the same bits, on RoIs that overlap heavily."""
    from segcore_numba.gpu import roi

    rng = rng_for("roi-determinism", dtype)
    rois = np.concatenate([np.zeros((6, 1)), rng.uniform(0, 3, (6, 2)), rng.uniform(3, 6, (6, 2))], axis=1)
    rois = rois.astype(dtype)
    g = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    params = dict(spatial_scale=1.0, output_size=(3, 3), sampling_ratio=2, aligned=True)
    runs = [
        device.get(roi.roi_align_backward(device.xp, device.put(g), device.put(rois), (1, 2, 6, 6), **params,
                                          deterministic=True))
        for _ in range(2)
    ]
    assert runs[0].tobytes() == runs[1].tobytes(), "deterministic roi_align_backward differs between two runs"
    # The same bits whichever way it is reached, and not all zero (the RoIs do cover the map).
    direct = roi.roi_align_backward_deterministic(device.xp, device.put(g), device.put(rois), (1, 2, 6, 6), **params)
    assert device.get(direct).tobytes() == runs[0].tobytes()
    assert np.count_nonzero(runs[0]) > 0


def check_roi_align_many_rois(device: Device) -> None:
    """512 overlapping RoIs on two 16 x 50 x 60 maps (a Mask R-CNN-sized case: far too slow for the simulator):
    forward, atomic and deterministic backward against the reference, the deterministic one twice."""
    from segcore_numba.gpu import roi

    rng = rng_for("roi-many")
    x = rng.standard_normal((2, 16, 50, 60)).astype(np.float32)
    corner = rng.uniform(-20, 900, (512, 2))
    rois = np.concatenate(
        [rng.integers(0, 2, (512, 1)), corner, corner + rng.uniform(1, 300, (512, 2))], axis=1
    ).astype(np.float32)
    g = rng.standard_normal((512, 16, 7, 7)).astype(np.float32)
    params = dict(spatial_scale=1 / 16, output_size=(7, 7), sampling_ratio=-1, aligned=True)
    expected = _reference("roi_align")(np_xp, x, rois, **params)
    actual = device.kernel("roi_align")(device.xp, device.put(x), device.put(rois), **params)
    assert_close("roi_align", "512 RoIs", device.get(actual), expected, np.float32)
    expected = _reference("roi_align_backward")(np_xp, g, rois, x.shape, **params)
    actual = device.kernel("roi_align_backward")(device.xp, device.put(g), device.put(rois), x.shape, **params)
    assert_close("roi_align_backward", "512 RoIs", device.get(actual), expected, np.float32)
    runs = [
        device.get(roi.roi_align_backward_deterministic(device.xp, device.put(g), device.put(rois), x.shape, **params))
        for _ in range(2)
    ]
    assert_close("roi_align_backward_deterministic", "512 RoIs", runs[0], expected, np.float32)
    assert runs[0].tobytes() == runs[1].tobytes(), "deterministic roi_align_backward differs between two runs"


def check_roi_align_no_rois(device: Device, dtype) -> None:
    from segcore_numba.gpu import roi

    x = np.ones(ROI_INPUT_SHAPE, dtype=dtype)
    rois = np.zeros((0, 5), dtype=dtype)
    params = dict(spatial_scale=1.0, output_size=(2, 2), sampling_ratio=-1, aligned=False)
    out = device.get(device.kernel("roi_align")(device.xp, device.put(x), device.put(rois), **params))
    assert out.shape == (0, 2, 2, 2) and out.dtype == dtype
    g = np.zeros((0, 2, 2, 2), dtype=dtype)
    for deterministic in (False, True):
        dx = roi.roi_align_backward(
            device.xp, device.put(g), device.put(rois), x.shape, **params, deterministic=deterministic
        )
        assert_equal("roi_align_backward", f"no RoIs, deterministic={deterministic}", device.get(dx), np.zeros_like(x))


def check_roi_pool(device: Device, case: RoiCase, values: str, dtype) -> None:
    """RoIPool forward (values and argmax exactly) and backward; ``values='ties'`` uses values in {0, 1, 2}."""
    x, rois, g = _roi_inputs(case, dtype)
    if values == "ties":
        x = np.round(np.abs(x)).clip(0, 2).astype(dtype)
    label = f"{case.name}, {values}"
    args = (case.spatial_scale, case.output_size)
    out_ref, arg_ref = _reference("roi_pool")(np_xp, x, rois, *args)
    out, arg = device.kernel("roi_pool")(device.xp, device.put(x), device.put(rois), *args)
    assert_equal("roi_pool (argmax)", label, device.get(arg), arg_ref)
    assert_equal("roi_pool", label, device.get(out), out_ref)

    expected = _reference("roi_pool_backward")(np_xp, g, rois, arg_ref, x.shape)
    arrays = (device.put(g), device.put(rois), device.put(arg_ref))
    actual = device.kernel("roi_pool_backward")(device.xp, *arrays, x.shape)
    assert_close("roi_pool_backward", label, device.get(actual), expected, dtype)


# -- nms ----------------------------------------------------------------------------------------------------

NMS_THRESHOLDS = (0.0, 0.3, 0.5, 0.7)


def _nms_boxes(dtype) -> tuple[np.ndarray, np.ndarray]:
    """72 boxes (more than one 64-bit mask word) in a few clusters, tied scores, degenerate boxes, an IoU of
    exactly 0.5, near-duplicates and a NaN score."""
    rng = rng_for("nms", dtype)
    centres = rng.uniform(0, 20, (4, 2))[rng.integers(0, 4, 64)] + rng.normal(0, 1.5, (64, 2))
    sizes = rng.uniform(1, 6, (64, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    special = np.array(
        [
            [0, 0, 4, 1],  # these two: IoU exactly 0.5 (2 / 4), suppressed only below 0.5
            [0, 0, 2, 1],
            [5, 5, 5, 5],  # zero area, alone: 0 / 0
            [5, 5, 5, 5],  # ... and its twin
            [3, 3, 1, 1],  # inverted (negative width and height)
            [1, 1, 3, 3],
            [30, 30, 34, 34],  # near-duplicates (IoU 0.9): suppressed at every threshold below
            [30, 30, 34, 33.6],
        ]
    )
    boxes = np.concatenate([boxes, special]).astype(dtype)
    scores = rng.integers(0, 20, boxes.shape[0]).astype(dtype)  # many ties: stable order decides
    scores[64:] = [30, 29, 28, 28, 27, 26, 25, 25]
    scores[7] = np.nan
    return boxes, scores


def check_nms(device: Device, threshold: float, dtype) -> None:
    boxes, scores = _nms_boxes(dtype)
    expected = _reference("nms")(np_xp, boxes, scores, threshold)
    actual = device.kernel("nms")(device.xp, device.put(boxes), device.put(scores), threshold)
    assert_equal("nms", f"threshold {threshold}", device.get(actual), expected)
    assert 0 < expected.size < boxes.shape[0], "the boxes must exercise both keeping and suppressing"


def check_nms_empty(device: Device, dtype) -> None:
    actual = device.kernel("nms")(device.xp, device.put(np.zeros((0, 4), dtype)), device.put(np.zeros(0, dtype)), 0.5)
    assert_equal("nms", "no boxes", device.get(actual), np.zeros(0, dtype=np.int64))


# -- crf ----------------------------------------------------------------------------------------------------

# (features dtype, values dtype): the sums run in the promoted type, as the reference's sparse products.
CRF_DTYPES = ((np.float32, np.float32), (np.float64, np.float64), (np.float64, np.float32))


def check_permutohedral_filter(device: Device, feature_dtype, value_dtype, reverse: bool) -> None:
    """The filter on a lattice built by the reference build (in the device's namespace)."""
    rng = rng_for("crf", feature_dtype, value_dtype, reverse)
    # 30 points, d = 3, spread over a few lattice cells so that blur neighbours exist and some are missing.
    features = (rng.uniform(0, 3, (30, 3))).astype(feature_dtype)
    values = rng.standard_normal((30, 2)).astype(value_dtype)
    ref_lattice = reference_crf.permutohedral_build(np_xp, features)
    expected = reference_crf.permutohedral_filter(np_xp, ref_lattice, values, reverse=reverse)
    lattice = reference_crf.permutohedral_build(device.xp, device.put(features))
    actual = device.kernel("permutohedral_filter")(device.xp, lattice, device.put(values), reverse=reverse)
    assert_close("permutohedral_filter", f"reverse={reverse}, features {np.dtype(feature_dtype).name}",
                 device.get(actual), expected, value_dtype)
