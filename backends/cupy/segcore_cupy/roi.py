"""RoIAlign and RoIPool, forward and backward, on CuPy arrays (``kernels/roi.cu``), with torchvision's semantics.

The RoIAlign backward has two variants, chosen by ``deterministic=``:

* ``True`` (default, the reference's and ``segcore.ops.roi_align``'s documented guarantee): one thread per input
  pixel gathers from the RoIs of its image in index order -- bitwise reproducible, no atomics;
* ``False``: torchvision's scatter, one thread per output bin with atomic adds -- faster when RoIs are few and
  the map is large, but the summation order (the last bits) varies from run to run.
"""

from __future__ import annotations

from segcore.kernels import roi as reference

from ._cuda import i64, launch, supported

__all__ = ["roi_align", "roi_align_backward", "roi_pool", "roi_pool_backward", "KERNELS"]


def _rois(rois, dtype):
    import cupy

    return cupy.ascontiguousarray(rois, dtype=dtype)


def _align_args(dtype, spatial_scale: float, output_size, sampling_ratio: int, aligned: bool) -> tuple:
    import numpy as np

    ph, pw = (int(v) for v in output_size)
    # The scale is multiplied in the input's scalar type (torchvision's T), so it is passed as one.
    return (*i64(ph, pw), np.dtype(dtype).type(spatial_scale), np.int64(sampling_ratio), np.int32(bool(aligned)))


def roi_align(xp, input, rois, spatial_scale: float, output_size, sampling_ratio: int, aligned: bool):
    """RoIAlign forward: ``(N, C, H, W)`` input, ``(K, 5)`` rois -> ``(K, C, Ph, Pw)``."""
    if not supported(input):
        return reference.roi_align(xp, input, rois, spatial_scale, output_size, sampling_ratio, aligned)
    import cupy

    input = cupy.ascontiguousarray(input)
    rois = _rois(rois, input.dtype)
    n, c, h, w = input.shape
    k = rois.shape[0]
    out = cupy.empty((k, c, *(int(v) for v in output_size)), dtype=input.dtype)
    args = _align_args(input.dtype, spatial_scale, output_size, sampling_ratio, aligned)
    launch("roi", "roi_align_forward", input.dtype, out.size, (input, rois, out, *i64(k, c, h, w), *args))
    return out


def roi_align_backward(
    xp,
    grad,
    rois,
    input_shape,
    spatial_scale: float,
    output_size,
    sampling_ratio: int,
    aligned: bool,
    *,
    deterministic: bool = True,
):
    """Gradient of :func:`roi_align` with respect to its input, an array of ``input_shape``.

    ``deterministic=True`` gathers per input pixel (bitwise reproducible); ``False`` scatters with atomic adds.
    """
    if not supported(grad):
        return reference.roi_align_backward(
            xp, grad, rois, input_shape, spatial_scale, output_size, sampling_ratio, aligned
        )
    import cupy

    grad = cupy.ascontiguousarray(grad)
    rois = _rois(rois, grad.dtype)
    n, c, h, w = (int(v) for v in input_shape)
    k = rois.shape[0]
    args = _align_args(grad.dtype, spatial_scale, output_size, sampling_ratio, aligned)
    if deterministic:
        dx = cupy.empty((n, c, h, w), dtype=grad.dtype)
        launch("roi", "roi_align_backward_gather", grad.dtype, dx.size, (grad, rois, dx, *i64(k, n, c, h, w), *args))
    else:
        dx = cupy.zeros((n, c, h, w), dtype=grad.dtype)
        launch("roi", "roi_align_backward_atomic", grad.dtype, grad.size, (grad, rois, dx, *i64(k, c, h, w), *args))
    return dx


def roi_pool(xp, input, rois, spatial_scale: float, output_size):
    """RoIPool forward: ``(output (K, C, Ph, Pw), argmax (K, C, Ph, Pw) int64)``, argmax ``h * W + w`` or -1."""
    if not supported(input):
        return reference.roi_pool(xp, input, rois, spatial_scale, output_size)
    import cupy
    import numpy as np

    input = cupy.ascontiguousarray(input)
    rois = _rois(rois, input.dtype)
    n, c, h, w = input.shape
    k = rois.shape[0]
    ph, pw = (int(v) for v in output_size)
    out = cupy.empty((k, c, ph, pw), dtype=input.dtype)
    argmax = cupy.empty((k, c, ph, pw), dtype=cupy.int64)
    scale = np.dtype(input.dtype).type(spatial_scale)
    args = (input, rois, out, argmax, *i64(k, c, h, w, ph, pw), scale)
    launch("roi", "roi_pool_forward", input.dtype, out.size, args)
    return out, argmax


def roi_pool_backward(xp, grad, rois, argmax, input_shape):
    """Gradient of :func:`roi_pool`: each bin's gradient goes to its argmax pixel (atomic adds; none for -1)."""
    if not supported(grad):
        return reference.roi_pool_backward(xp, grad, rois, argmax, input_shape)
    import cupy

    grad = cupy.ascontiguousarray(grad)
    rois = _rois(rois, grad.dtype)
    argmax = cupy.ascontiguousarray(argmax, dtype=cupy.int64)
    n, c, h, w = (int(v) for v in input_shape)
    k, _, ph, pw = grad.shape
    dx = cupy.zeros((n, c, h, w), dtype=grad.dtype)
    launch("roi", "roi_pool_backward", grad.dtype, grad.size, (grad, rois, argmax, dx, *i64(k, c, h, w, ph, pw)))
    return dx


KERNELS = {
    "roi_align": roi_align,
    "roi_align_backward": roi_align_backward,
    "roi_pool": roi_pool,
    "roi_pool_backward": roi_pool_backward,
}
