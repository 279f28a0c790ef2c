"""2-D convolution on the GPU: im2col / col2im as CUDA kernels, the products by ``xp.matmul`` (cuBLAS).

The patch matrix of a chunk of images has the Caffe layout ``(images, C * kh * kw, Ho * Wo)``: its rows are
ordered ``(channel, tap row, tap column)``, so for ``groups`` groups it is ``(images, G, K, P)`` with
``K = C/G * kh * kw``, and the weight ``(O, C/G, kh, kw)`` reshapes to ``(G, O/G, K)`` without a copy. Then

* forward: ``out[n, g] = W_g @ cols[n, g]`` (one batched GEMM);
* input gradient: ``dcols[n, g] = W_g.T @ grad[n, g]`` (batched GEMM), then the col2im kernel;
* weight gradient: ``dW_g = sum_n grad[n, g] @ cols[n, g].T`` (batched GEMM and a sum over images).

col2im gathers: one thread per input pixel sums the patch entries that read it, in a fixed order, so the input
gradient is deterministic without atomics. As in the reference kernels, the gradients take the output geometry
``(Ho, Wo)`` from ``grad_out`` (conv_transpose2d with a large ``output_padding`` needs exactly that). A 1x1,
stride-1, unpadded convolution needs no patch matrix: the input already is one.

The ``xp.matmul`` calls make the same code run in Numba's CUDA simulator with NumPy as ``xp``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from numba import cuda

from segcore.kernels import conv as reference

from . import _launch

__all__ = ["conv2d", "conv2d_grad_input", "conv2d_grad_weight", "KERNELS"]

Pair = tuple[int, int]

# Patch-matrix elements per chunk of images: 2**25 (128 MiB of float32) keeps the GEMMs large while bounding
# the extra memory of a big batch.
_COLS_ELEMENTS = 1 << 25


@cuda.jit
def _im2col(x, cols, n0, kh, kw, sh, sw, ph, pw, dh, dw, wo):
    """``cols[b, (c, i, j), (y, z)] = x[n0 + b, c, y*sh - ph + i*dh, z*sw - pw + j*dw]``, zero outside."""
    nb, rows, pixels = cols.shape
    h, w = x.shape[2], x.shape[3]
    taps = kh * kw
    total = nb * rows * pixels
    item = cuda.grid(1)
    step = cuda.gridsize(1)
    while item < total:
        q = item % pixels
        r = (item // pixels) % rows
        b = item // (pixels * rows)
        y = q // wo
        z = q - y * wo
        c = r // taps
        i = (r - c * taps) // kw
        j = r - c * taps - i * kw
        row = y * sh - ph + i * dh
        col = z * sw - pw + j * dw
        if 0 <= row < h and 0 <= col < w:
            cols[b, r, q] = x[n0 + b, c, row, col]
        else:
            cols[b, r, q] = 0
        item += step


@lru_cache(maxsize=None)
def _col2im(t: type):
    """The col2im kernel accumulating in ``t`` (kept out of float64 for float32 data)."""

    @cuda.jit
    def col2im(cols, dx, n0, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
        """``dx[n0 + b, c, h, w] = sum of cols[b, (c, i, j), (y, z)]`` over the windows that read ``(h, w)``."""
        nb = cols.shape[0]
        c_, h_, w_ = dx.shape[1], dx.shape[2], dx.shape[3]
        total = nb * c_ * h_ * w_
        item = cuda.grid(1)
        step = cuda.gridsize(1)
        while item < total:
            w = item % w_
            h = (item // w_) % h_
            c = (item // (w_ * h_)) % c_
            b = item // (w_ * h_ * c_)
            acc = t(0)
            for i in range(kh):
                # Window row y reads input row h through tap i iff y * sh = h + ph - i * dh.
                hh = h + ph - i * dh
                if hh < 0 or hh % sh != 0 or hh // sh >= ho:
                    continue
                y = hh // sh
                for j in range(kw):
                    ww = w + pw - j * dw
                    if ww < 0 or ww % sw != 0 or ww // sw >= wo:
                        continue
                    acc += cols[b, (c * kh + i) * kw + j, y * wo + ww // sw]
            dx[n0 + b, c, h, w] = acc
            item += step

    return col2im


def _output_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _pointwise(kernel_hw: Pair, stride: Pair, padding: Pair, x_hw: Pair, out_hw: Pair) -> bool:
    """1x1, stride 1, no padding, output the size of the input: the input is its own patch matrix."""
    return kernel_hw == (1, 1) and stride == (1, 1) and padding == (0, 0) and x_hw == out_hw


def _chunks(n: int, per_image: int):
    """Image ranges ``(n0, n1)`` whose patch matrices stay within ``_COLS_ELEMENTS`` (at least one image)."""
    step = max(1, _COLS_ELEMENTS // max(1, per_image))
    for n0 in range(0, n, step):
        yield n0, min(n, n0 + step)


def _fill_cols(x, cols, n0: int, kernel_hw: Pair, stride: Pair, padding: Pair, dilation: Pair, wo: int) -> None:
    """Write the patch matrix of images ``n0 .. n0 + len(cols)`` of ``x`` into ``cols``."""
    _launch.launch(_im2col, cols.size, x, cols, n0, *kernel_hw, *stride, *padding, *dilation, wo)


def conv2d(xp, x, w, stride: Pair, padding: Pair, dilation: Pair, groups: int):
    """Cross-correlation of ``x`` ``(N, C, H, W)`` with ``w`` ``(O, C/groups, kh, kw)``; no bias."""
    if not _launch.supported(x, w):
        return reference.conv2d(xp, x, w, stride, padding, dilation, groups)
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho = _output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = _output_size(wd, kw, stride[1], padding[1], dilation[1])
    g, k, p = groups, cg * kh * kw, ho * wo
    x = xp.ascontiguousarray(x)
    wm = xp.reshape(xp.ascontiguousarray(w), (g, o // g, k))
    out = xp.empty((n, g, o // g, p), dtype=x.dtype)
    if _pointwise((kh, kw), stride, padding, (h, wd), (ho, wo)):
        xp.matmul(wm, xp.reshape(x, (n, g, cg, p)), out=out)
        return xp.reshape(out, (n, o, ho, wo))
    for n0, n1 in _chunks(n, c * kh * kw * p):
        cols = xp.empty((n1 - n0, c * kh * kw, p), dtype=x.dtype)
        _fill_cols(x, cols, n0, (kh, kw), stride, padding, dilation, wo)
        xp.matmul(wm, xp.reshape(cols, (n1 - n0, g, k, p)), out=out[n0:n1])
    return xp.reshape(out, (n, o, ho, wo))


def conv2d_grad_input(xp, grad_out, w, input_shape, stride: Pair, padding: Pair, dilation: Pair, groups: int):
    """Gradient of :func:`conv2d` with respect to its input (the transposed convolution).

    ``grad_out`` is ``(N, O, Ho, Wo)``; only windows ``0..Ho-1`` / ``0..Wo-1`` contribute. Returns an array of
    ``input_shape``.
    """
    if not _launch.supported(grad_out, w):
        return reference.conv2d_grad_input(xp, grad_out, w, input_shape, stride, padding, dilation, groups)
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    n, c, h, wd = (int(v) for v in input_shape)
    o, cg, kh, kw = w.shape
    ho, wo = int(grad_out.shape[2]), int(grad_out.shape[3])
    g, k, p = groups, cg * kh * kw, ho * wo
    # W_g.T as a (G, K, Og) view: matmul reads the transposed operand in place.
    wt = xp.swapaxes(xp.reshape(xp.ascontiguousarray(w), (g, o // g, k)), -1, -2)
    gm = xp.reshape(xp.ascontiguousarray(grad_out), (n, g, o // g, p))
    if _pointwise((kh, kw), stride, padding, (h, wd), (ho, wo)):
        return xp.reshape(xp.matmul(wt, gm), (n, c, h, wd))
    dx = xp.empty((n, c, h, wd), dtype=grad_out.dtype)
    col2im = _col2im(_launch.scalar_type(grad_out.dtype))
    for n0, n1 in _chunks(n, c * kh * kw * p):
        dcols = xp.reshape(xp.matmul(wt, gm[n0:n1]), (n1 - n0, c * kh * kw, p))
        _launch.launch(col2im, (n1 - n0) * c * h * wd, dcols, dx, n0, kh, kw, *stride, *padding, *dilation, ho, wo)
    return dx


def conv2d_grad_weight(xp, x, grad_out, weight_shape, stride: Pair, padding: Pair, dilation: Pair, groups: int):
    """Gradient of :func:`conv2d` with respect to its weight, an array of ``weight_shape`` ``(O, C/groups, kh, kw)``.

    The output geometry is ``grad_out``'s ``(Ho, Wo)``.
    """
    if not _launch.supported(x, grad_out):
        return reference.conv2d_grad_weight(xp, x, grad_out, weight_shape, stride, padding, dilation, groups)
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    n, c, h, wd = x.shape
    o, cg, kh, kw = (int(v) for v in weight_shape)
    ho, wo = int(grad_out.shape[2]), int(grad_out.shape[3])
    g, k, p = groups, cg * kh * kw, ho * wo
    x = xp.ascontiguousarray(x)
    gm = xp.reshape(xp.ascontiguousarray(grad_out), (n, g, o // g, p))
    dw = xp.zeros((g, o // g, k), dtype=x.dtype)
    if _pointwise((kh, kw), stride, padding, (h, wd), (ho, wo)):
        cols_t = xp.swapaxes(xp.reshape(x, (n, g, cg, p)), -1, -2)
        dw += xp.sum(xp.matmul(gm, cols_t), axis=0)
        return xp.reshape(dw, (o, cg, kh, kw))
    for n0, n1 in _chunks(n, c * kh * kw * p):
        cols = xp.empty((n1 - n0, c * kh * kw, p), dtype=x.dtype)
        _fill_cols(x, cols, n0, (kh, kw), stride, padding, dilation, wo)
        cols_t = xp.swapaxes(xp.reshape(cols, (n1 - n0, g, k, p)), -1, -2)
        dw += xp.sum(xp.matmul(gm[n0:n1], cols_t), axis=0)
    return xp.reshape(dw, (o, cg, kh, kw))


KERNELS: dict[str, Callable] = {
    "conv2d": conv2d,
    "conv2d_grad_input": conv2d_grad_input,
    "conv2d_grad_weight": conv2d_grad_weight,
}
