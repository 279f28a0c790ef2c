"""Reference 2-D convolution kernels (NCHW), forward and both backward passes.

Dense and grouped convolutions are an implicit im2col on a zero-padded NHWC copy of the input: the patches
are a strided *view* (``as_strided``) whose innermost run, ``kw * C`` channels-last values, is contiguous, so
materialising a block of patches is a cheap streaming copy. Each block is one output row band of one image,
or several small images, sized to stay cache-resident, and is multiplied with the weight matrix by one
(group-batched) BLAS call that writes into the NCHW output (through a small staging buffer when a block
holds several images).

* input gradient, stride 1: a convolution of ``grad_out`` with the flipped, transposed kernel (the same
  fast path as the forward; the transposed padding may be negative, which just crops);
* input gradient, stride > 1: the matmul transposed, then col2im as ``kh * kw`` strided slice-adds;
* weight gradient: the same patch blocks as the forward, contracted with ``grad_out`` over pixels;
* one input channel per group (depthwise): no matmul, ``kh * kw`` broadcast multiply-accumulates;
* 1x1, stride 1, unpadded: a plain batched matmul on the NCHW arrays, no copy at all.

The input- and weight-gradient kernels take the output geometry from ``grad_out``'s shape rather than
recomputing it: they are the adjoints of "convolve, keeping the first ``Ho x Wo`` outputs". That is exactly
what ``conv_transpose2d`` needs when ``output_padding`` grows the output by more than a stride.

Every kernel returns a newly allocated array, which callers may update in place (the functional ops add the
bias that way). Only NumPy API that CuPy also implements is used (``as_strided``, slicing, ``matmul(out=)``,
``einsum``).
"""

from __future__ import annotations

from typing import Callable

from .workspace import scratch

__all__ = ["conv2d", "conv2d_grad_input", "conv2d_grad_weight", "KERNELS"]

Pair = tuple[int, int]

# Patch-matrix elements materialised at once. 2**20 (4 MiB of float32) keeps a block and the input rows it
# reads in cache while each BLAS call stays large enough to run near peak; measured on the 3x3,
# 64..256-channel layers of benchmarks/conv2d.py. Tests lower it to exercise partial blocks.
_BLOCK_ELEMENTS = 1 << 20


def _output_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _span(out: int, k: int, stride: int, dilation: int) -> int:
    """Input rows (or columns) that ``out`` windows read, from the first window's start to the last's end."""
    return (out - 1) * stride + dilation * (k - 1) + 1


# overlap and padded are also the padding step of the numba backend's convolutions (segcore_numba).


def overlap(size: int, offset: int, extent: int) -> tuple[slice, slice]:
    """Where a length-``size`` axis placed at ``offset`` lands in ``[0, extent)``: (source, destination)."""
    start, stop = max(0, offset), min(extent, offset + size)
    if stop <= start:
        return slice(0, 0), slice(0, 0)
    return slice(start - offset, stop - offset), slice(start, stop)


def padded(xp, x, offset: Pair, extent: Pair, channels_last: bool, copy=None):
    """Scratch buffer of spatial size ``extent`` holding ``x`` at ``offset`` (negative offsets crop), zeros
    around it; NHWC when ``channels_last``, else NCHW. Valid until the next call (see :mod:`.workspace`).

    Rows and columns beyond the extent are never read by any window, so they are not copied. ``copy(dst, src)``
    does the interior copy between two ``(N, C, h, w)`` views (default ``dst[...] = src``): a backend may
    spread it over threads.
    """
    n, c, h, w = x.shape
    (sh, dh), (sw, dw) = overlap(h, offset[0], extent[0]), overlap(w, offset[1], extent[1])
    if channels_last:
        buf = scratch(xp, "conv.padded", (n, extent[0], extent[1], c), x.dtype)
        nchw = xp.moveaxis(buf, 3, 1)  # the same memory, indexed (N, C, H, W)
    else:
        buf = nchw = scratch(xp, "conv.padded", (n, c, extent[0], extent[1]), x.dtype)
    # The buffer is reused from call to call: zero its border every time, then overwrite the interior.
    nchw[:, :, : dh.start] = 0
    nchw[:, :, dh.stop :] = 0
    nchw[:, :, dh, : dw.start] = 0
    nchw[:, :, dh, dw.stop :] = 0
    if copy is None:
        nchw[:, :, dh, dw] = x[:, :, sh, sw]
    else:
        copy(nchw[:, :, dh, dw], x[:, :, sh, sw])
    return buf


def _tap(i: int, j: int, out_hw: Pair, stride: Pair, dilation: Pair, row0: int = 0) -> tuple[slice, slice]:
    """Buffer rows and columns that kernel tap ``(i, j)`` reads for output rows ``row0..`` of ``out_hw``."""
    r0, c0 = row0 * stride[0] + i * dilation[0], j * dilation[1]
    return (
        slice(r0, r0 + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
        slice(c0, c0 + stride[1] * (out_hw[1] - 1) + 1, stride[1]),
    )


def _patches(xp, buf, kh: int, kw: int, out_hw: Pair, stride: Pair, dilation: Pair, groups: int):
    """Read-only view ``(N, Ho, Wo, kh, kw, G, Cg)`` of the windows of a padded NHWC buffer."""
    n, _, _, c = buf.shape
    s_n, s_h, s_w, s_c = buf.strides
    cg = c // groups
    return xp.lib.stride_tricks.as_strided(
        buf,
        shape=(n, out_hw[0], out_hw[1], kh, kw, groups, cg),
        strides=(s_n, s_h * stride[0], s_w * stride[1], s_h * dilation[0], s_w * dilation[1], s_c * cg, s_c),
    )


def _block_shape(n: int, ho: int, row_elements: int) -> tuple[int, int]:
    """(images, rows) of the largest block: whole images when one fits, else a band of rows of one image."""
    per_image = ho * row_elements
    if per_image <= _BLOCK_ELEMENTS:
        return max(1, min(n, _BLOCK_ELEMENTS // per_image)), ho
    return 1, max(1, min(ho, _BLOCK_ELEMENTS // row_elements))


def _blocks(n: int, ho: int, row_elements: int):
    """Yield ``(images, rows)`` slices of at most :func:`_block_shape` covering every output pixel."""
    nb, nr = _block_shape(n, ho, row_elements)
    for i in range(0, n, nb):
        for r in range(0, ho, nr):
            yield slice(i, min(i + nb, n)), slice(r, min(r + nr, ho))


def _weight_matrix(xp, w, groups: int):
    """``(O, Cg, kh, kw)`` -> ``(G, Og, kh*kw*Cg)``, matching the patch layout ``(kh, kw, Cg)``."""
    o, cg, kh, kw = w.shape
    wg = xp.reshape(w, (groups, o // groups, cg, kh, kw))
    return xp.reshape(xp.transpose(wg, (0, 1, 3, 4, 2)), (groups, o // groups, kh * kw * cg))


def _gather(xp, cols, view, images: slice, rows: slice):
    """Copy one block's windows into ``cols`` ``(G, nb, rows, Wo, kh, kw, Cg)``; return it as (G, nb, P, K)."""
    nb, nr = images.stop - images.start, rows.stop - rows.start
    dst = cols[:, :nb, :nr]
    dst[...] = xp.transpose(view[images, rows], (5, 0, 1, 2, 3, 4, 6))
    g, _, _, wo, kh, kw, cg = cols.shape
    # Merging the axes of a prefix slice of a contiguous buffer is copy-free.
    return xp.reshape(dst, (g, nb, nr * wo, kh * kw * cg))


def _is_pointwise(kernel_hw, x_hw, out_hw: Pair, offset: Pair, stride: Pair) -> bool:
    """1x1, stride 1, no shift: every output pixel is its input pixel, the convolution a plain matmul."""
    return tuple(kernel_hw) == (1, 1) and stride == (1, 1) and offset == (0, 0) and tuple(x_hw) == tuple(out_hw)


def _correlate(xp, x, wm, kernel_hw: Pair, out_hw: Pair, offset: Pair, stride: Pair, dilation: Pair):
    """``out[n, g*Og + o, y, z] = sum_{i, j, c} wm[g, o, (i, j, c)] * xpad[n, g*Cg + c, y*s + i*d, z*s + j*d]``.

    ``wm`` is the ``(G, Og, kh*kw*Cg)`` weight matrix (see :func:`_weight_matrix`); ``xpad`` is ``x`` shifted
    down/right by ``offset`` (which may be negative) inside zeros; ``y < Ho``, ``z < Wo``.
    """
    n, c, h, wd = x.shape
    g, og = wm.shape[0], wm.shape[1]
    kh, kw = kernel_hw
    cg, o = c // g, g * og
    ho, wo = out_hw
    if _is_pointwise((kh, kw), (h, wd), out_hw, offset, stride):
        return xp.reshape(xp.matmul(wm[None], xp.reshape(x, (n, g, cg, h * wd))), (n, o, ho, wo))
    extent = (_span(ho, kh, stride[0], dilation[0]), _span(wo, kw, stride[1], dilation[1]))
    if cg == 1:
        w = xp.reshape(wm, (o, 1, kh, kw))  # with one channel per group the matrix is the weight itself
        return _depthwise_correlate(xp, padded(xp, x, offset, extent, False), w, out_hw, stride, dilation)
    view = _patches(xp, padded(xp, x, offset, extent, True), kh, kw, out_hw, stride, dilation, g)
    out = xp.empty((n, g, og, ho * wo), dtype=x.dtype)
    row_elements = wo * kh * kw * c
    nb, nr = _block_shape(n, ho, row_elements)
    cols = scratch(xp, "conv.cols", (g, nb, nr, wo, kh, kw, cg), x.dtype)
    # Several small images per block make one long GEMM (better BLAS efficiency than one per image) whose
    # (Og, images*pixels) result is then scattered into NCHW.
    staging = scratch(xp, "conv.staging", (g, og, nb * ho * wo), x.dtype) if nb > 1 else None
    for images, rows in _blocks(n, ho, row_elements):
        a = _gather(xp, cols, view, images, rows)
        nbk, pixels = images.stop - images.start, a.shape[1] * a.shape[2]
        # out[n, g] (Og, P) = W_g (Og, K) @ cols[g].T: BLAS reads the transposed operand in place.
        cols_t = xp.swapaxes(xp.reshape(a, (g, pixels, a.shape[3])), -1, -2)
        if nbk == 1:
            xp.matmul(wm, cols_t, out=out[images.start, :, :, rows.start * wo : rows.stop * wo])
        else:
            block = staging[:, :, :pixels]
            xp.matmul(wm, cols_t, out=block)
            out[images] = xp.transpose(xp.reshape(block, (g, og, nbk, ho * wo)), (2, 0, 1, 3))
    return xp.reshape(out, (n, o, ho, wo))


def conv2d(xp, x, w, stride: Pair, padding: Pair, dilation: Pair, groups: int):
    """Cross-correlation of ``x`` ``(N, C, H, W)`` with ``w`` ``(O, C/groups, kh, kw)``; no bias."""
    _, _, h, wd = x.shape
    _, _, kh, kw = w.shape
    out_hw = (
        _output_size(h, kh, stride[0], padding[0], dilation[0]),
        _output_size(wd, kw, stride[1], padding[1], dilation[1]),
    )
    wm = _weight_matrix(xp, w, groups)
    return _correlate(xp, x, wm, (kh, kw), out_hw, tuple(padding), tuple(stride), tuple(dilation))


def conv2d_grad_input(xp, grad_out, w, input_shape, stride: Pair, padding: Pair, dilation: Pair, groups: int):
    """Gradient of :func:`conv2d` with respect to its input (equivalently: the transposed convolution).

    ``grad_out`` is ``(N, O, Ho, Wo)``; windows ``0..Ho-1`` / ``0..Wo-1`` must fit in the padded input.
    Returns an array of ``input_shape``.
    """
    n, c, h, wd = (int(v) for v in input_shape)
    o, cg, kh, kw = w.shape
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    g, og = groups, o // groups
    if cg == 1:
        return _depthwise_grad_input(xp, grad_out, w, (n, c, h, wd), stride, padding, dilation)
    if stride == (1, 1):
        # dx[h] = sum_i g[h + p - i d] w[i] = sum_i' g[h - (d (k-1) - p) + i' d] w[k-1-i']: a stride-1
        # correlation with the flipped kernel, channels swapped within each group, shifted by d (k-1) - p.
        # Its weight matrix (G, Cg, (i', j', o)) is built in one copy.
        flipped = xp.reshape(w, (g, og, cg, kh, kw))[:, :, :, ::-1, ::-1]
        wm = xp.reshape(xp.transpose(flipped, (0, 2, 3, 4, 1)), (g, cg, kh * kw * og))
        offset = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
        return _correlate(xp, grad_out, wm, (kh, kw), (h, wd), offset, (1, 1), dilation)
    return _scatter_grad_input(xp, grad_out, w, (n, c, h, wd), stride, padding, dilation, g)


def _scatter_grad_input(xp, grad_out, w, input_shape, stride: Pair, padding: Pair, dilation: Pair, g: int):
    """Strided input gradient: per block, patch gradients by one matmul, then col2im by slice-adds."""
    n, c, h, wd = input_shape
    o, cg, kh, kw = w.shape
    og = o // g
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    hp = max(h + 2 * padding[0], _span(ho, kh, stride[0], dilation[0]))
    wp = max(wd + 2 * padding[1], _span(wo, kw, stride[1], dilation[1]))
    dbuf = xp.zeros((n, hp, wp, c), dtype=grad_out.dtype)
    # Split channels into (G, Cg) on the freshly allocated buffer: always a view, so += lands in dbuf.
    dbuf5 = xp.reshape(dbuf, (n, hp, wp, g, cg))
    wm = _weight_matrix(xp, w, g)[:, None]  # (G, 1, Og, K)
    gflat = xp.reshape(grad_out, (n, g, og, ho * wo))
    row_elements = wo * kh * kw * c
    nb, nr = _block_shape(n, ho, row_elements)
    cols = scratch(xp, "conv.cols", (g, nb, nr * wo, kh * kw * cg), grad_out.dtype)
    for images, rows in _blocks(n, ho, row_elements):
        nbk, nrk = images.stop - images.start, rows.stop - rows.start
        a = cols[:, :nbk, : nrk * wo]
        src = xp.transpose(gflat[images, :, :, rows.start * wo : rows.stop * wo], (1, 0, 3, 2))
        xp.matmul(src, wm, out=a)  # (G, nb, P, Og) @ (G, 1, Og, K)
        a6 = xp.reshape(a, (g, nbk, nrk, wo, kh, kw, cg))
        # col2im: one strided slice-add per kernel tap; within a tap the windows never overlap.
        for i in range(kh):
            for j in range(kw):
                rs, cs = _tap(i, j, (nrk, wo), stride, dilation, rows.start)
                dbuf5[images, rs, cs] += xp.transpose(a6[:, :, :, :, i, j, :], (1, 2, 3, 0, 4))
    dx = dbuf[:, padding[0] : padding[0] + h, padding[1] : padding[1] + wd, :]
    return xp.ascontiguousarray(xp.transpose(dx, (0, 3, 1, 2)))


def conv2d_grad_weight(xp, x, grad_out, weight_shape, stride: Pair, padding: Pair, dilation: Pair, groups: int):
    """Gradient of :func:`conv2d` with respect to its weight, shape ``weight_shape`` ``(O, C/groups, kh, kw)``.

    The output geometry is ``grad_out``'s ``(Ho, Wo)``.
    """
    n, c, h, wd = x.shape
    o, cg, kh, kw = (int(v) for v in weight_shape)
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    g, og = groups, o // groups
    extent = (_span(ho, kh, stride[0], dilation[0]), _span(wo, kw, stride[1], dilation[1]))
    gflat = xp.reshape(grad_out, (n, g, og, ho * wo))
    if _is_pointwise((kh, kw), (h, wd), (ho, wo), padding, stride):
        xt = xp.swapaxes(xp.reshape(x, (n, g, cg, h * wd)), -1, -2)
        return xp.reshape(xp.sum(xp.matmul(gflat, xt), axis=0), (o, cg, 1, 1))
    if cg == 1:
        xpad = padded(xp, x, padding, extent, False)
        return _depthwise_grad_weight(xp, xpad, grad_out, (o, cg, kh, kw), stride, dilation)
    view = _patches(xp, padded(xp, x, padding, extent, True), kh, kw, (ho, wo), stride, dilation, g)
    row_elements = wo * kh * kw * c
    nb, nr = _block_shape(n, ho, row_elements)
    cols = scratch(xp, "conv.cols", (g, nb, nr, wo, kh, kw, cg), x.dtype)
    dw = part = None
    # Multi-image blocks: gather their grad_out into (G, Og, images, pixels) so that one GEMM reduces over
    # all of the block's pixels (a longer reduction runs faster than one short GEMM per image).
    staging = scratch(xp, "conv.staging", (g, og, nb, ho * wo), x.dtype) if nb > 1 else None
    for images, rows in _blocks(n, ho, row_elements):
        a = _gather(xp, cols, view, images, rows)
        nbk, pixels = images.stop - images.start, a.shape[1] * a.shape[2]
        if nbk == 1:
            src = gflat[images.start, :, :, rows.start * wo : rows.stop * wo]
        else:
            staging[:, :, :nbk] = xp.transpose(gflat[images], (1, 2, 0, 3))
            src = xp.reshape(staging[:, :, :nbk], (g, og, pixels))
        # dW_g += grad_out[g] (Og, P) @ cols[g] (P, K); the first block's product is the accumulator.
        a2 = xp.reshape(a, (g, pixels, a.shape[3]))
        if dw is None:
            dw = xp.matmul(src, a2)
            continue
        if part is None:
            part = xp.empty_like(dw)
        xp.matmul(src, a2, out=part)
        dw += part
    if dw is None:  # empty batch
        dw = xp.zeros((g, og, kh * kw * cg), dtype=x.dtype)
    dw = xp.reshape(dw, (g, og, kh, kw, cg))
    return xp.reshape(xp.transpose(dw, (0, 1, 4, 2, 3)), (o, cg, kh, kw))


# -- depthwise: one input channel per group, C_out = m * C_in ------------------------------------------------


def _depthwise_correlate(xp, xpad, w, out_hw: Pair, stride: Pair, dilation: Pair):
    n, c, _, _ = xpad.shape
    o, _, kh, kw = w.shape
    m = o // c  # output channels c*m .. c*m+m-1 read input channel c
    wt = xp.reshape(w, (1, c, m, kh, kw, 1, 1))
    out = xp.zeros((n, c, m) + tuple(out_hw), dtype=xpad.dtype)
    tmp = xp.empty_like(out)
    for i in range(kh):
        for j in range(kw):
            rs, cs = _tap(i, j, out_hw, stride, dilation)
            xp.multiply(xpad[:, :, None, rs, cs], wt[:, :, :, i, j], out=tmp)
            out += tmp
    return xp.reshape(out, (n, o) + tuple(out_hw))


def _depthwise_grad_input(xp, grad_out, w, input_shape, stride: Pair, padding: Pair, dilation: Pair):
    n, c, h, wd = input_shape
    _, o, ho, wo = grad_out.shape
    kh, kw = w.shape[2], w.shape[3]
    m = o // c
    hp = max(h + 2 * padding[0], _span(ho, kh, stride[0], dilation[0]))
    wp = max(wd + 2 * padding[1], _span(wo, kw, stride[1], dilation[1]))
    g5 = xp.reshape(grad_out, (n, c, m, ho, wo))
    wt = xp.reshape(w, (c, m, kh, kw))
    dpad = xp.zeros((n, c, hp, wp), dtype=grad_out.dtype)
    for i in range(kh):
        for j in range(kw):
            rs, cs = _tap(i, j, (ho, wo), stride, dilation)
            if m == 1:
                dpad[:, :, rs, cs] += g5[:, :, 0] * xp.reshape(wt[:, 0, i, j], (1, c, 1, 1))
            else:
                dpad[:, :, rs, cs] += xp.einsum("ncmhw,cm->nchw", g5, wt[:, :, i, j])
    return xp.ascontiguousarray(dpad[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + wd])


def _depthwise_grad_weight(xp, xpad, grad_out, weight_shape, stride: Pair, dilation: Pair):
    n, c, _, _ = xpad.shape
    o, _, kh, kw = weight_shape
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    g5 = xp.reshape(grad_out, (n, c, o // c, ho, wo))
    dw = xp.empty((c, o // c, kh, kw), dtype=xpad.dtype)
    for i in range(kh):
        for j in range(kw):
            rs, cs = _tap(i, j, (ho, wo), stride, dilation)
            dw[:, :, i, j] = xp.einsum("ncmhw,nchw->cm", g5, xpad[:, :, rs, cs])
    return xp.reshape(dw, (o, 1, kh, kw))


KERNELS: dict[str, Callable] = {
    "conv2d": conv2d,
    "conv2d_grad_input": conv2d_grad_input,
    "conv2d_grad_weight": conv2d_grad_weight,
}
