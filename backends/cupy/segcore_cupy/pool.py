"""max_pool2d with indices and its backward on CuPy arrays (``kernels/pool.cu``).

The other pooling kernels (average, adaptive, unpool) are not overridden: the reference versions run on CuPy.
"""

from __future__ import annotations

from segcore.kernels import pool as reference

from ._cuda import i64, launch, supported

__all__ = ["max_pool2d", "max_pool2d_backward", "KERNELS"]


def max_pool2d(xp, x, kernel_size, stride, padding, dilation, ceil_mode):
    """Max pooling of ``x (N, C, H, W)``; returns ``(output, indices)`` with torch's tie and NaN rules.

    ``indices`` are int64 flat positions in each ``H x W`` plane, as the reference's.
    """
    if not supported(x):
        return reference.max_pool2d(xp, x, kernel_size, stride, padding, dilation, ceil_mode)
    import cupy

    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    x = cupy.ascontiguousarray(x)
    n, c, h, w = x.shape
    oh = max(reference.pool_output_size(h, kh, sh, ph, dh, ceil_mode), 0)
    ow = max(reference.pool_output_size(w, kw, sw, pw, dw, ceil_mode), 0)
    out = cupy.empty((n, c, oh, ow), dtype=x.dtype)
    indices = cupy.empty((n, c, oh, ow), dtype=cupy.int64)
    geometry = i64(n * c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)
    launch("pool", "max_pool2d", x.dtype, out.size, (x, out, indices, *geometry))
    return out, indices


def max_pool2d_backward(xp, grad, indices, input_shape):
    """Gradient of :func:`max_pool2d`: each output's gradient is added to its argmax (atomically)."""
    if not supported(grad):
        return reference.max_pool2d_backward(xp, grad, indices, input_shape)
    import cupy

    n, c, h, w = (int(v) for v in input_shape)
    grad = cupy.ascontiguousarray(grad)
    indices = cupy.ascontiguousarray(indices, dtype=cupy.int64)
    dx = cupy.zeros((n, c, h, w), dtype=grad.dtype)
    out_plane = int(grad.shape[2]) * int(grad.shape[3])
    launch("pool", "max_pool2d_backward", grad.dtype, grad.size, (grad, indices, dx, *i64(n * c, h * w, out_plane)))
    return dx


KERNELS = {"max_pool2d": max_pool2d, "max_pool2d_backward": max_pool2d_backward}
