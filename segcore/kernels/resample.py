"""Reference resampling kernels on NCHW arrays: nearest, nearest-exact and bilinear resizing.

Resizing is separable, so each mode is described by two 1-D maps (output row -> input rows and weights, same
for columns) computed exactly as torch's CPU kernels compute them, in the same precision (float32 for float32
and integer inputs, float64 for float64). Nearest modes gather rows and columns; bilinear forward and every
backward are two small dense products with ``(out, in)`` interpolation matrices: ``M_h @ x @ M_w.T`` and
``M_h.T @ g @ M_w``.

``scales`` is torch's optional per-dimension scale factor: when the user gave ``scale_factor`` (and did not ask
to recompute it) the source coordinate uses ``1 / scale`` rather than ``in / out``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "separable_matmul",
    "nearest_source_index",
    "bilinear_source_weights",
    "interpolate_nearest",
    "interpolate_nearest_backward",
    "interpolate_nearest_exact",
    "interpolate_nearest_exact_backward",
    "interpolate_bilinear",
    "interpolate_bilinear_backward",
    "KERNELS",
]


def _opmath(dtype) -> type:
    # torch computes coordinates in the input's "opmath" type: double for double, float otherwise.
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def _scale(in_size: int, out_size: int, scale: float | None, opmath: type):
    """torch's ``compute_scales_value``: ``1 / scale`` when a positive scale was given, else ``in / out``."""
    if scale is not None and scale > 0:
        return opmath(1.0 / scale)
    return opmath(in_size) / opmath(out_size)


def _floorf(values: np.ndarray) -> np.ndarray:
    # torch floors source coordinates with floorf, i.e. after rounding them to float32, even for float64.
    return np.floor(values.astype(np.float32)).astype(np.int64)


def nearest_source_index(
    in_size: int, out_size: int, scale: float | None, exact: bool, dtype
) -> np.ndarray:
    """Source index of every output position along one dimension, as int64.

    ``nearest`` (torch's legacy mode): ``floor(dst * s)``; ``nearest-exact``: ``floor((dst + 0.5) * s)``
    (computed as torch does, via the half-pixel coordinate clamped at 0); both capped at ``in_size - 1``.
    """
    opmath = _opmath(dtype)
    s = _scale(in_size, out_size, scale, opmath)
    dst = np.arange(out_size).astype(opmath)
    if exact:
        real = np.maximum(s * (dst + opmath(0.5)) - opmath(0.5), opmath(0))
        index = _floorf(real.astype(np.float64) + 0.5)
    else:
        index = _floorf(s * dst)
    return np.minimum(index, in_size - 1)


def bilinear_source_weights(
    in_size: int, out_size: int, align_corners: bool, scale: float | None, dtype
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(i0, i1, w0, w1)``: output ``k`` is ``w0[k] * in[i0[k]] + w1[k] * in[i1[k]]`` along one dimension.

    Half-pixel coordinates (``align_corners=False``) below 0 are clamped to 0 and indices past the end to the
    last pixel, as torch; equal sizes copy, whatever the scale.
    """
    opmath = _opmath(dtype)
    dst = np.arange(out_size)
    if in_size == out_size:
        return dst, dst, np.ones(out_size, dtype=opmath), np.zeros(out_size, dtype=opmath)
    if align_corners:
        s = opmath(in_size - 1) / opmath(out_size - 1) if out_size > 1 else opmath(0)
        real = s * dst.astype(opmath)
    else:
        s = _scale(in_size, out_size, scale, opmath)
        real = np.maximum(s * (dst.astype(opmath) + opmath(0.5)) - opmath(0.5), opmath(0))
    i0 = np.minimum(_floorf(real), in_size - 1)
    w1 = np.clip(real - i0.astype(opmath), 0, 1).astype(opmath)
    i1 = i0 + (i0 < in_size - 1)
    return i0, i1, (1 - w1).astype(opmath), w1


def _one_hot_matrix(xp, index: np.ndarray, in_size: int, dtype):
    return xp.asarray(index[:, None] == np.arange(in_size)[None, :], dtype=dtype)


def _bilinear_matrix(xp, in_size: int, out_size: int, align_corners: bool, scale, dtype):
    i0, i1, w0, w1 = bilinear_source_weights(in_size, out_size, align_corners, scale, dtype)
    columns = np.arange(in_size)[None, :]
    # i0 == i1 at the last pixel: the two terms add up there, which the sum below does naturally.
    matrix = (i0[:, None] == columns) * w0[:, None] + (i1[:, None] == columns) * w1[:, None]
    return xp.asarray(matrix, dtype=dtype)


def separable_matmul(xp, x, rows, cols):
    """``rows @ x @ cols.T`` over the last two axes of ``x (..., H, W)``, in the cheaper order.

    The product along W runs as one 2-D matrix product over all rows of all planes, and the product along H
    as a batch of per-plane products: a 2-D matrix broadcast against a 4-D stack can fall off NumPy's BLAS
    path and run an order of magnitude slower.
    """
    *batch, h, w = x.shape
    out_h, out_w = rows.shape[0], cols.shape[0]
    planes = 1
    for n in batch:
        planes *= n
    if out_h * h * w + out_h * w * out_w <= h * w * out_w + out_h * h * out_w:
        y = xp.matmul(rows, x.reshape(planes, h, w))
        out = xp.matmul(y.reshape(planes * out_h, w), cols.T)
    else:
        y = xp.matmul(x.reshape(planes * h, w), cols.T)
        out = xp.matmul(rows, y.reshape(planes, h, out_w))
    return out.reshape(tuple(batch) + (out_h, out_w))


def _gather_rows_cols(xp, x, row_index: np.ndarray, col_index: np.ndarray):
    x = xp.take(x, xp.asarray(row_index, dtype=xp.int64), axis=-2)
    return xp.take(x, xp.asarray(col_index, dtype=xp.int64), axis=-1)


def _nearest(xp, x, output_size, scales, exact: bool):
    h, w = x.shape[-2:]
    rows = nearest_source_index(h, output_size[0], scales[0], exact, x.dtype)
    cols = nearest_source_index(w, output_size[1], scales[1], exact, x.dtype)
    return _gather_rows_cols(xp, x, rows, cols)


def _nearest_backward(xp, grad, input_size, scales, exact: bool):
    # The adjoint of a gather is a scatter-add: with one-hot (out, in) matrices it is two dense products.
    out_h, out_w = grad.shape[-2:]
    rows = nearest_source_index(input_size[0], out_h, scales[0], exact, grad.dtype)
    cols = nearest_source_index(input_size[1], out_w, scales[1], exact, grad.dtype)
    row_matrix = _one_hot_matrix(xp, rows, input_size[0], grad.dtype)
    col_matrix = _one_hot_matrix(xp, cols, input_size[1], grad.dtype)
    return separable_matmul(xp, grad, row_matrix.T, col_matrix.T)


def interpolate_nearest(xp, x, output_size, scales):
    """torch's ``mode="nearest"`` resize of ``x (N, C, H, W)`` to ``output_size``; any dtype."""
    return _nearest(xp, x, output_size, scales, exact=False)


def interpolate_nearest_backward(xp, grad, input_size, scales):
    """Gradient of :func:`interpolate_nearest` for an input of spatial size ``input_size``."""
    return _nearest_backward(xp, grad, input_size, scales, exact=False)


def interpolate_nearest_exact(xp, x, output_size, scales):
    """torch's ``mode="nearest-exact"`` resize (pixel centres, like Pillow and ``scipy.ndimage.zoom``)."""
    return _nearest(xp, x, output_size, scales, exact=True)


def interpolate_nearest_exact_backward(xp, grad, input_size, scales):
    """Gradient of :func:`interpolate_nearest_exact`."""
    return _nearest_backward(xp, grad, input_size, scales, exact=True)


def interpolate_bilinear(xp, x, output_size, align_corners, scales):
    """torch's ``mode="bilinear"`` resize of a floating ``x (N, C, H, W)`` to ``output_size``."""
    h, w = x.shape[-2:]
    rows = _bilinear_matrix(xp, h, output_size[0], align_corners, scales[0], x.dtype)
    cols = _bilinear_matrix(xp, w, output_size[1], align_corners, scales[1], x.dtype)
    return separable_matmul(xp, x, rows, cols)


def interpolate_bilinear_backward(xp, grad, input_size, align_corners, scales):
    """Gradient of :func:`interpolate_bilinear` for an input of spatial size ``input_size``."""
    out_h, out_w = grad.shape[-2:]
    rows = _bilinear_matrix(xp, input_size[0], out_h, align_corners, scales[0], grad.dtype)
    cols = _bilinear_matrix(xp, input_size[1], out_w, align_corners, scales[1], grad.dtype)
    return separable_matmul(xp, grad, rows.T, cols.T)


KERNELS = {
    "interpolate_nearest": interpolate_nearest,
    "interpolate_nearest_backward": interpolate_nearest_backward,
    "interpolate_nearest_exact": interpolate_nearest_exact,
    "interpolate_nearest_exact_backward": interpolate_nearest_exact_backward,
    "interpolate_bilinear": interpolate_bilinear,
    "interpolate_bilinear_backward": interpolate_bilinear_backward,
}
