"""Reference pooling kernels on NCHW arrays: max / average / adaptive pooling and max unpooling.

Window sums and maxima loop over kernel offsets (never over pixels): each offset is one strided slice of the
padded input, so a pass costs ``kH * kW`` vectorised operations on output-sized arrays. Index conventions
follow torch: a max index is the flat position ``h * W + w`` inside its input plane, stored as int64.
"""

from __future__ import annotations

import math

import numpy as np

from .resample import separable_matmul

__all__ = [
    "pool_output_size",
    "adaptive_bins",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
    "KERNELS",
]


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """torch's pooling output length along one dimension (may be < 1 for impossible configurations).

    With ``ceil_mode`` the last window must still start inside the input or the left padding.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1  # floor division rounds towards -inf like torch's div_rtn
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def adaptive_bins(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's adaptive-pooling bins along one dimension: ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    i = np.arange(out, dtype=np.int64)
    starts = (i * size) // out
    ends = -((-(i + 1) * size) // out)
    return starts, ends


def _first_tap(starts: np.ndarray, dilation: int) -> np.ndarray:
    # torch starts its scan at the first tap that is not left padding ("while (ih0 < 0) ih0 += dilation").
    behind = np.maximum(-starts, 0)
    return starts + ((behind + dilation - 1) // dilation) * dilation


def _flat_index(xp, rows: np.ndarray, cols: np.ndarray, width: int):
    return xp.asarray(rows[:, None] * width + cols[None, :], dtype=xp.int64)


def _pad_hw(xp, x, top: int, bottom: int, left: int, right: int, value: float):
    if top == bottom == left == right == 0:
        return x
    return xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode="constant", constant_values=value)


def max_pool2d(xp, x, kernel_size, stride, padding, dilation, ceil_mode):
    """Max pooling of ``x (N, C, H, W)``; returns ``(output, indices)``.

    Ties go to the first maximum in window order (row-major), a NaN wins over numbers (the last NaN in window
    order, as torch's ``val > max || isnan(val)`` scan), and padding never wins.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    n, c, h, w = x.shape
    oh = pool_output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = pool_output_size(w, kw, sw, pw, dw, ceil_mode)
    # ceil_mode windows may run past the right/bottom padding: extend it so that every slice is in bounds.
    bottom = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - h - ph)
    right = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - w - pw)
    padded = _pad_hw(xp, x, ph, bottom, pw, right, -math.inf)
    row_starts = np.arange(oh, dtype=np.int64) * sh - ph
    col_starts = np.arange(ow, dtype=np.int64) * sw - pw
    out = xp.full((n, c, oh, ow), -math.inf, dtype=x.dtype)
    idx = xp.broadcast_to(
        _flat_index(xp, _first_tap(row_starts, dh), _first_tap(col_starts, dw), w), (n, c, oh, ow)
    )
    for i in range(kh):
        for j in range(kw):
            taps = padded[
                :, :, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw
            ]
            better = (taps > out) | xp.isnan(taps)
            out = xp.where(better, taps, out)
            idx = xp.where(better, _flat_index(xp, row_starts + i * dh, col_starts + j * dw, w), idx)
    return out, idx


def _scatter_to_planes(xp, grad, indices, input_shape):
    """Sum ``grad`` into zero planes of ``input_shape`` at the flat per-plane ``indices``."""
    n, c, h, w = input_shape
    plane = h * w
    # Explicit shapes (no -1) so that an empty batch reshapes too.
    flat_idx = indices.reshape(n * c, indices.shape[2] * indices.shape[3])
    flat_grad = grad.reshape(flat_idx.shape)
    # Windows lying entirely in padding carry an index outside the plane (their output is -inf): drop them.
    inside = (flat_idx >= 0) & (flat_idx < plane)
    offsets = xp.arange(n * c, dtype=xp.int64)[:, None] * plane
    target = xp.where(inside, flat_idx, 0) + offsets
    weights = xp.where(inside, flat_grad, xp.zeros_like(flat_grad))
    summed = xp.bincount(
        target.reshape(target.size), weights=weights.reshape(weights.size), minlength=n * c * plane
    )
    return summed.astype(grad.dtype).reshape(input_shape)


def max_pool2d_backward(xp, grad, indices, input_shape):
    """Gradient of :func:`max_pool2d`: each output's gradient goes to its argmax."""
    return _scatter_to_planes(xp, grad, indices, tuple(input_shape))


def _avg_divisor(xp, size_h, size_w, oh, ow, kernel_size, stride, padding, count_include_pad, divisor_override, dtype):
    """torch's per-output divisor for average pooling, shape ``(oh, ow)``."""
    if divisor_override is not None:
        return xp.asarray(np.full((oh, ow), divisor_override), dtype=dtype)
    counts = []
    for size, out, k, s, p in ((size_h, oh, kernel_size[0], stride[0], padding[0]),
                               (size_w, ow, kernel_size[1], stride[1], padding[1])):
        start = np.arange(out, dtype=np.int64) * s - p
        # A window is first clipped to the padded extent (this is the count with padding) ...
        end = np.minimum(start + k, size + p)
        if count_include_pad:
            counts.append(end - start)
        else:
            # ... and then to the input itself.
            counts.append(np.minimum(end, size) - np.maximum(start, 0))
    return xp.asarray(counts[0][:, None] * counts[1][None, :], dtype=dtype)


def avg_pool2d(xp, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """Average pooling of ``x (N, C, H, W)`` with torch's divisor rules.

    The divisor is ``divisor_override`` when given; otherwise the window clipped to the padded input
    (``count_include_pad``) or to the input itself. Parts of ceil_mode windows beyond the padding never count.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x.shape
    oh = pool_output_size(h, kh, sh, ph, 1, ceil_mode)
    ow = pool_output_size(w, kw, sw, pw, 1, ceil_mode)
    bottom = max(0, (oh - 1) * sh + kh - h - ph)
    right = max(0, (ow - 1) * sw + kw - w - pw)
    padded = _pad_hw(xp, x, ph, bottom, pw, right, 0)
    total = xp.zeros((n, c, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            total = total + padded[:, :, i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw]
    divisor = _avg_divisor(
        xp, h, w, oh, ow, kernel_size, stride, padding, count_include_pad, divisor_override, x.dtype
    )
    return total / divisor


def avg_pool2d_backward(
    xp, grad, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
):
    """Gradient of :func:`avg_pool2d`: each output's gradient, divided by its divisor, spread on its window."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = input_shape
    oh, ow = grad.shape[-2:]
    divisor = _avg_divisor(
        xp, h, w, oh, ow, kernel_size, stride, padding, count_include_pad, divisor_override, grad.dtype
    )
    share = grad / divisor
    bottom = max(0, (oh - 1) * sh + kh - h - ph)
    right = max(0, (ow - 1) * sw + kw - w - pw)
    padded = xp.zeros((n, c, h + ph + bottom, w + pw + right), dtype=grad.dtype)
    for i in range(kh):
        for j in range(kw):
            # One offset touches each padded position at most once, so the in-place add has no collisions.
            padded[:, :, i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw] += share
    return padded[:, :, ph : ph + h, pw : pw + w]


def _bin_matrix(xp, size: int, out: int, dtype):
    """``(out, size)`` averaging matrix of the adaptive bins along one dimension."""
    starts, ends = adaptive_bins(size, out)
    positions = np.arange(size)[None, :]
    inside = (positions >= starts[:, None]) & (positions < ends[:, None])
    return xp.asarray(inside / (ends - starts)[:, None], dtype=dtype)


def adaptive_avg_pool2d(xp, x, output_size):
    """Adaptive average pooling of ``x (N, C, H, W)`` to ``output_size = (oh, ow)``.

    A bin average is separable, so the op is two small dense products: ``A_h @ x @ A_w.T``.
    """
    h, w = x.shape[-2:]
    rows = _bin_matrix(xp, h, output_size[0], x.dtype)
    cols = _bin_matrix(xp, w, output_size[1], x.dtype)
    return separable_matmul(xp, x, rows, cols)


def adaptive_avg_pool2d_backward(xp, grad, input_shape):
    """Gradient of :func:`adaptive_avg_pool2d`: the transposed products ``A_h.T @ g @ A_w``."""
    h, w = input_shape[-2:]
    oh, ow = grad.shape[-2:]
    rows = _bin_matrix(xp, h, oh, grad.dtype)
    cols = _bin_matrix(xp, w, ow, grad.dtype)
    return separable_matmul(xp, grad, rows.T, cols.T)


def _adaptive_max_last_axis(xp, x, out: int):
    """Max over adaptive bins of the last axis; returns the maxima and the winning positions.

    Loops over offsets inside a bin (at most the largest bin's length), vectorised over all bins.
    """
    size = x.shape[-1]
    starts, ends = adaptive_bins(size, out)
    best = xp.full(x.shape[:-1] + (out,), -math.inf, dtype=x.dtype)
    where = xp.broadcast_to(xp.asarray(starts, dtype=xp.int64), best.shape)
    longest = int((ends - starts).max())
    for t in range(longest):
        in_bin = xp.asarray(starts + t < ends)
        position = np.minimum(starts + t, size - 1)
        taps = xp.take(x, xp.asarray(position, dtype=xp.int64), axis=-1)
        better = in_bin & ((taps > best) | xp.isnan(taps))
        best = xp.where(better, taps, best)
        where = xp.where(better, xp.asarray(position, dtype=xp.int64), where)
    return best, where


def adaptive_max_pool2d(xp, x, output_size):
    """Adaptive max pooling of ``x (N, C, H, W)``; returns ``(output, indices)`` like :func:`max_pool2d`.

    The first maximum in row-major order inside a bin is the first maximum of the bin's row maxima, taken in
    the first row that reaches it: so the op runs as a max over columns, then a max over rows.
    """
    oh, ow = output_size
    h, w = x.shape[-2:]
    row_max, row_arg = _adaptive_max_last_axis(xp, x, ow)  # (N, C, H, ow)
    best, best_row = _adaptive_max_last_axis(xp, xp.swapaxes(row_max, -1, -2), oh)  # (N, C, ow, oh)
    best = xp.swapaxes(best, -1, -2)
    best_row = xp.swapaxes(best_row, -1, -2)  # (N, C, oh, ow)
    best_col = xp.take_along_axis(row_arg, best_row, axis=-2)
    return best, best_row * w + best_col


def adaptive_max_pool2d_backward(xp, grad, indices, input_shape):
    """Gradient of :func:`adaptive_max_pool2d`: each output's gradient goes to its argmax."""
    return _scatter_to_planes(xp, grad, indices, tuple(input_shape))


def max_unpool2d(xp, x, indices, output_size):
    """Place ``x (N, C, H, W)`` at the flat per-plane ``indices`` of zero planes of size ``output_size``."""
    n, c = x.shape[:2]
    oh, ow = output_size
    out = xp.zeros((n * c, oh * ow), dtype=x.dtype)
    rows = xp.arange(n * c, dtype=xp.int64)[:, None]
    per_plane = x.shape[2] * x.shape[3]
    out[rows, indices.reshape(n * c, per_plane)] = x.reshape(n * c, per_plane)
    return out.reshape(n, c, oh, ow)


def max_unpool2d_backward(xp, grad, indices):
    """Gradient of :func:`max_unpool2d`: gather ``grad`` at ``indices``."""
    n, c = grad.shape[:2]
    planes = grad.reshape(n * c, grad.shape[2] * grad.shape[3])
    gathered = xp.take_along_axis(planes, indices.reshape(n * c, indices.shape[2] * indices.shape[3]), axis=1)
    return gathered.reshape(indices.shape)


KERNELS = {
    "max_pool2d": max_pool2d,
    "max_pool2d_backward": max_pool2d_backward,
    "avg_pool2d": avg_pool2d,
    "avg_pool2d_backward": avg_pool2d_backward,
    "adaptive_avg_pool2d": adaptive_avg_pool2d,
    "adaptive_avg_pool2d_backward": adaptive_avg_pool2d_backward,
    "adaptive_max_pool2d": adaptive_max_pool2d,
    "adaptive_max_pool2d_backward": adaptive_max_pool2d_backward,
    "max_unpool2d": max_unpool2d,
    "max_unpool2d_backward": max_unpool2d_backward,
}
