"""Independent reference implementations for the ops tests: explicit per-sample loops over plain NumPy.

Each follows torchvision's C++ CPU kernels statement by statement (roi_align_kernel.cpp, roi_pool_kernel.cpp,
nms_kernel.cpp), computing with NumPy scalars of the input's type so that float32 rounding matches. They are
slow and only meant for the small inputs the tests draw. Exposed as session fixtures so every test module in
this directory can use them (test modules are imported in importlib mode and cannot import each other).
"""

from __future__ import annotations

import math

import numpy as np
import pytest


def _scalar_type(dtype):
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def _bilinear(h: int, w: int, y, x, T):
    """torchvision's bilinear_interpolate(_gradient): four (row, col, weight), or [] outside [-1, H] x [-1, W]."""
    if not (y >= -1.0 and y <= h and x >= -1.0 and x <= w):
        return []
    if y <= 0:
        y = T(0)
    if x <= 0:
        x = T(0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_high = y_low = h - 1
        y = T(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_high = x_low = w - 1
        x = T(x_low)
    else:
        x_high = x_low + 1
    ly, lx = T(y - T(y_low)), T(x - T(x_low))
    hy, hx = T(T(1) - ly), T(T(1) - lx)
    return [
        (y_low, x_low, T(hy * hx)),
        (y_low, x_high, T(hy * lx)),
        (y_high, x_low, T(ly * hx)),
        (y_high, x_high, T(ly * lx)),
    ]


def _align_roi(roi, spatial_scale, output_size, sampling_ratio, aligned, T):
    """Per-RoI set-up of torchvision's kernel: yields (ph, pw, count, [(y, x) samples])."""
    ph_n, pw_n = output_size
    offset = T(0.5) if aligned else T(0)
    scale = T(spatial_scale)
    start_w = T(T(roi[1]) * scale - offset)
    start_h = T(T(roi[2]) * scale - offset)
    end_w = T(T(roi[3]) * scale - offset)
    end_h = T(T(roi[4]) * scale - offset)
    roi_w, roi_h = T(end_w - start_w), T(end_h - start_h)
    if not aligned:
        roi_w, roi_h = max(roi_w, T(1)), max(roi_h, T(1))
    bin_h, bin_w = T(roi_h / T(ph_n)), T(roi_w / T(pw_n))
    grid_h = sampling_ratio if sampling_ratio > 0 else int(np.ceil(T(roi_h / T(ph_n))))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(np.ceil(T(roi_w / T(pw_n))))
    count = max(grid_h * grid_w, 1)
    for ph in range(ph_n):
        for pw in range(pw_n):
            samples = []
            for iy in range(grid_h):
                y = T(start_h + T(ph) * bin_h + T(iy + 0.5) * bin_h / T(grid_h))
                for ix in range(grid_w):
                    x = T(start_w + T(pw) * bin_w + T(ix + 0.5) * bin_w / T(grid_w))
                    samples.append((y, x))
            yield ph, pw, count, samples


def loop_roi_align(x, rois, spatial_scale, output_size, sampling_ratio, aligned):
    T = _scalar_type(x.dtype)
    n, c, h, w = x.shape
    out = np.zeros((len(rois), c) + tuple(output_size), dtype=x.dtype)
    for r, roi in enumerate(rois):
        b = int(roi[0])
        for ph, pw, count, samples in _align_roi(roi, spatial_scale, output_size, sampling_ratio, aligned, T):
            acc = np.zeros(c, dtype=T)
            for y, xx in samples:
                for row, col, weight in _bilinear(h, w, y, xx, T):
                    acc = acc + weight * x[b, :, row, col].astype(T)
            out[r, :, ph, pw] = acc / T(count)
    return out


def loop_roi_align_backward(grad, rois, input_shape, spatial_scale, output_size, sampling_ratio, aligned):
    T = _scalar_type(grad.dtype)
    n, c, h, w = input_shape
    gx = np.zeros(input_shape, dtype=grad.dtype)
    for r, roi in enumerate(rois):
        b = int(roi[0])
        for ph, pw, count, samples in _align_roi(roi, spatial_scale, output_size, sampling_ratio, aligned, T):
            g = grad[r, :, ph, pw].astype(T)
            for y, xx in samples:
                for row, col, weight in _bilinear(h, w, y, xx, T):
                    gx[b, :, row, col] += g * weight / T(count)
    return gx


def _round_half_away(v) -> int:
    """C's round(): halves away from zero (Python's round() goes to even)."""
    a = abs(float(v))
    whole = math.floor(a)
    return int(math.copysign(whole + (1 if a - whole >= 0.5 else 0), float(v)))


def loop_roi_pool(x, rois, spatial_scale, output_size):
    """torchvision's roi_pool forward: (output, argmax) with argmax = h * W + w, -1 for empty bins."""
    T = _scalar_type(x.dtype)
    n, c, h, w = x.shape
    ph_n, pw_n = output_size
    out = np.zeros((len(rois), c, ph_n, pw_n), dtype=x.dtype)
    argmax = np.full(out.shape, -1, dtype=np.int64)
    floor_value = T(-np.finfo(np.float32).max)
    for r, roi in enumerate(rois):
        b = int(roi[0])
        scale = T(spatial_scale)
        start_w = _round_half_away(T(T(roi[1]) * scale))
        start_h = _round_half_away(T(T(roi[2]) * scale))
        end_w = _round_half_away(T(T(roi[3]) * scale))
        end_h = _round_half_away(T(T(roi[4]) * scale))
        roi_w, roi_h = max(end_w - start_w + 1, 1), max(end_h - start_h + 1, 1)
        bin_h, bin_w = T(T(roi_h) / T(ph_n)), T(T(roi_w) / T(pw_n))
        for ph in range(ph_n):
            for pw in range(pw_n):
                hstart = min(max(int(np.floor(T(T(ph) * bin_h))) + start_h, 0), h)
                hend = min(max(int(np.ceil(T(T(ph + 1) * bin_h))) + start_h, 0), h)
                wstart = min(max(int(np.floor(T(T(pw) * bin_w))) + start_w, 0), w)
                wend = min(max(int(np.ceil(T(T(pw + 1) * bin_w))) + start_w, 0), w)
                empty = hend <= hstart or wend <= wstart
                for ch in range(c):
                    best, index = (T(0) if empty else floor_value), -1
                    for yy in range(hstart, hend):
                        for xx in range(wstart, wend):
                            if x[b, ch, yy, xx] > best:
                                best, index = x[b, ch, yy, xx], yy * w + xx
                    out[r, ch, ph, pw], argmax[r, ch, ph, pw] = best, index
    return out, argmax


def loop_roi_pool_backward(grad, rois, argmax, input_shape):
    n, c, h, w = input_shape
    gx = np.zeros(input_shape, dtype=grad.dtype)
    for r, roi in enumerate(rois):
        b = int(roi[0])
        for ch in range(c):
            for ph in range(grad.shape[2]):
                for pw in range(grad.shape[3]):
                    a = argmax[r, ch, ph, pw]
                    if a != -1:
                        gx[b, ch, a // w, a % w] += grad[r, ch, ph, pw]
    return gx


def loop_nms(boxes, scores, iou_threshold):
    """torchvision's CPU nms: stable descending sort, then greedy suppression with IoU > threshold."""
    T = _scalar_type(boxes.dtype)
    def key(i):  # descending scores, NaN first (torch's descending sort), equal scores by index (stable)
        s = float(scores[i])
        return (0, 0.0, i) if math.isnan(s) else (1, -s, i)

    order = sorted(range(len(scores)), key=key)
    areas = [T(T(b[2] - b[0]) * T(b[3] - b[1])) for b in boxes]
    suppressed = [False] * len(boxes)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[pos + 1 :]:
            if suppressed[j]:
                continue
            ww = T(min(boxes[i][2], boxes[j][2]) - max(boxes[i][0], boxes[j][0]))
            hh = T(min(boxes[i][3], boxes[j][3]) - max(boxes[i][1], boxes[j][1]))
            ww = ww if ww > 0 else T(0)
            hh = hh if hh > 0 else T(0)
            inter = T(ww * hh)
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = T(inter / T(T(areas[i] + areas[j]) - inter))
            if float(iou) > iou_threshold:
                suppressed[j] = True
    return np.asarray(keep, dtype=np.int64)


@pytest.fixture(scope="session")
def ref():
    """The loop references, as attributes: ``ref.roi_align(...)``, ``ref.nms(...)``, ..."""

    class References:
        roi_align = staticmethod(loop_roi_align)
        roi_align_backward = staticmethod(loop_roi_align_backward)
        roi_pool = staticmethod(loop_roi_pool)
        roi_pool_backward = staticmethod(loop_roi_pool_backward)
        nms = staticmethod(loop_nms)

    return References()
