"""conv2d and both gradients on CuPy arrays: im2col / col2im kernels around cuBLAS GEMMs (``cupy.matmul``).

* forward: im2col of a chunk of images into ``(nb, G, Cg*kh*kw, Ho*Wo)``, then one batched GEMM with the weight
  ``(G, Og, Cg*kh*kw)`` written straight into NCHW order;
* input gradient: the transposed GEMM, then col2im as a per-pixel gather (no atomics: deterministic);
* weight gradient: the same im2col, contracted with ``grad_out`` and summed over the chunk's images;
* depthwise (one input channel per group): direct kernels; a GEMM with K = kh * kw would be mostly overhead.

The input- and weight-gradient kernels take the output geometry from ``grad_out`` (the adjoint of "keep the first
``Ho x Wo`` outputs"), like the reference, which is what ``conv_transpose2d`` with ``output_padding`` needs.
GEMMs follow CuPy's defaults (no TF32 unless the user enables it through CuPy); cuDNN is not used.
Arrays other than float32 / float64 CuPy arrays go to the reference kernels.
"""

from __future__ import annotations

from typing import Iterator

from segcore.kernels import conv as reference

from ._cuda import THREADS, function, i64, launch, supported

__all__ = ["conv2d", "conv2d_grad_input", "conv2d_grad_weight", "KERNELS"]

Pair = tuple[int, int]

# Elements of one im2col buffer (256 MiB of float32): large enough that each GEMM runs near peak, small enough
# to leave the memory to activations.
_COLS_ELEMENTS = 1 << 26
_DW_BLOCKS = 1 << 15


def _output_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    return max((size + 2 * pad - dilation * (k - 1) - 1) // stride + 1, 0)


def _chunks(n: int, per_image: int) -> Iterator[tuple[int, int]]:
    step = max(1, _COLS_ELEMENTS // max(per_image, 1))
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _geometry(kh: int, kw: int, stride: Pair, padding: Pair, dilation: Pair, out_hw: Pair) -> tuple:
    return i64(kh, kw, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], *out_hw)


def _im2col(x, start: int, stop: int, kh: int, kw: int, geometry: tuple):
    import cupy

    _, c, h, w = x.shape
    p = int(geometry[-2]) * int(geometry[-1])
    cols = cupy.empty((stop - start, c * kh * kw, p), dtype=x.dtype)
    launch("conv", "im2col", x.dtype, cols.size, (x[start:stop], cols, *i64(stop - start, c, h, w), *geometry))
    return cols


def _depthwise(name: str, a, b, out, n: int, c: int, h: int, w: int, o: int, geometry: tuple) -> None:
    launch("conv", name, out.dtype, out.size, (a, b, out, *i64(n, c, h, w, o), *geometry))


def conv2d(xp, x, w, stride: Pair, padding: Pair, dilation: Pair, groups: int):
    """Cross-correlation of ``x`` ``(N, C, H, W)`` with ``w`` ``(O, C/groups, kh, kw)``; no bias."""
    if not supported(x, w):
        return reference.conv2d(xp, x, w, stride, padding, dilation, groups)
    import cupy

    x, w = cupy.ascontiguousarray(x), cupy.ascontiguousarray(w)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    out_hw = (
        _output_size(h, kh, stride[0], padding[0], dilation[0]),
        _output_size(wd, kw, stride[1], padding[1], dilation[1]),
    )
    geometry = _geometry(kh, kw, stride, padding, dilation, out_hw)
    if cg == 1:
        out = cupy.empty((n, o, *out_hw), dtype=x.dtype)
        _depthwise("depthwise_forward", x, w, out, n, c, h, wd, o, geometry)
        return out
    g, og, kk, p = groups, o // groups, cg * kh * kw, out_hw[0] * out_hw[1]
    out = cupy.empty((n, g, og, p), dtype=x.dtype)
    if out.size == 0:
        return out.reshape(n, o, *out_hw)
    wm = w.reshape(g, og, kk)
    for start, stop in _chunks(n, c * kh * kw * p):
        cols = _im2col(x, start, stop, kh, kw, geometry).reshape(stop - start, g, kk, p)
        out[start:stop] = cupy.matmul(wm, cols)
    return out.reshape(n, o, *out_hw)


def conv2d_grad_input(xp, grad_out, w, input_shape, stride: Pair, padding: Pair, dilation: Pair, groups: int):
    """Gradient of :func:`conv2d` with respect to its input (the transposed convolution), of ``input_shape``."""
    if not supported(grad_out, w):
        return reference.conv2d_grad_input(xp, grad_out, w, input_shape, stride, padding, dilation, groups)
    import cupy

    grad_out, w = cupy.ascontiguousarray(grad_out), cupy.ascontiguousarray(w)
    n, c, h, wd = (int(v) for v in input_shape)
    o, cg, kh, kw = w.shape
    out_hw = (int(grad_out.shape[2]), int(grad_out.shape[3]))
    geometry = _geometry(kh, kw, stride, padding, dilation, out_hw)
    if cg == 1:
        dx = cupy.empty((n, c, h, wd), dtype=grad_out.dtype)
        _depthwise("depthwise_grad_input", grad_out, w, dx, n, c, h, wd, o, geometry)
        return dx
    g, og, kk, p = groups, o // groups, cg * kh * kw, out_hw[0] * out_hw[1]
    if p == 0:
        return cupy.zeros((n, c, h, wd), dtype=grad_out.dtype)
    dx = cupy.empty((n, c, h, wd), dtype=grad_out.dtype)
    wt = w.reshape(g, og, kk).transpose(0, 2, 1)
    for start, stop in _chunks(n, c * kh * kw * p):
        nb = stop - start
        cols = cupy.matmul(wt, grad_out[start:stop].reshape(nb, g, og, p))  # (nb, G, Cg*kh*kw, P)
        launch("conv", "col2im", dx.dtype, nb * c * h * wd, (cols, dx[start:stop], *i64(nb, c, h, wd), *geometry))
    return dx


def conv2d_grad_weight(xp, x, grad_out, weight_shape, stride: Pair, padding: Pair, dilation: Pair, groups: int):
    """Gradient of :func:`conv2d` with respect to its weight, of ``weight_shape`` ``(O, C/groups, kh, kw)``."""
    if not supported(x, grad_out):
        return reference.conv2d_grad_weight(xp, x, grad_out, weight_shape, stride, padding, dilation, groups)
    import cupy

    x, grad_out = cupy.ascontiguousarray(x), cupy.ascontiguousarray(grad_out)
    n, c, h, wd = x.shape
    o, cg, kh, kw = (int(v) for v in weight_shape)
    out_hw = (int(grad_out.shape[2]), int(grad_out.shape[3]))
    geometry = _geometry(kh, kw, stride, padding, dilation, out_hw)
    if cg == 1:
        dw = cupy.empty((o, 1, kh, kw), dtype=x.dtype)
        if dw.size:
            # One block per weight element, reducing over (N, Ho, Wo) in shared memory sized DW_THREADS in
            # conv.cu: THREADS must be a power of two no larger (checked by tests/test_compile.py).
            blocks = min(dw.size, _DW_BLOCKS)
            function("conv", "depthwise_grad_weight", x.dtype)(
                (blocks,), (THREADS,), (x, grad_out, dw, *i64(n, c, h, wd, o), *geometry)
            )
        return dw
    g, og, kk, p = groups, o // groups, cg * kh * kw, out_hw[0] * out_hw[1]
    dw = cupy.zeros((g, og, kk), dtype=x.dtype)
    if p == 0:
        return dw.reshape(o, cg, kh, kw)
    for start, stop in _chunks(n, c * kh * kw * p):
        nb = stop - start
        cols = _im2col(x, start, stop, kh, kw, geometry).reshape(nb, g, kk, p)
        go = grad_out[start:stop].reshape(nb, g, og, p)
        dw += cupy.matmul(go, cols.transpose(0, 1, 3, 2)).sum(axis=0)
    return dw.reshape(o, cg, kh, kw)


KERNELS = {"conv2d": conv2d, "conv2d_grad_input": conv2d_grad_input, "conv2d_grad_weight": conv2d_grad_weight}
