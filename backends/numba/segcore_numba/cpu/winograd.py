"""Winograd F(2x2, 3x3) convolution for the numba backend: dense 3x3 kernels, stride 1, dilation 1, one group.

Why: im2col + GEMM spends ``9 * C`` multiply-adds per output pixel and channel, and with OpenBLAS at its peak
that is the floor of a ResNet's 3x3 layers. Winograd's minimal filtering F(2x2, 3x3) makes each 2x2 output
tile from one 4x4 input tile with 16 instead of 36 multiplications per (input, output) channel pair, 2.25x
less GEMM work; the transforms that replace it are additions only. F(2x2, 3x3) is the smallest variant and
its constants are 0, ±1 and ±1/2, so float32 results stay within a few roundings of the direct sum (larger
tiles are faster but lose accuracy quickly).

With ``B^T``, ``G`` and ``A^T`` below, a 4x4 input tile ``d`` and a 3x3 kernel ``g`` give the 2x2 output
``Y = A^T [(G g G^T) * (B^T d B)] A`` (``*`` elementwise). Summed over input channels:

* forward: ``U[xi] = (G w G^T)[xi]`` ``(C, O)`` once (one small GEMM with ``kron(G, G)``); per block of tiles
  ``V[xi] = (B^T d B)[xi]`` ``(T, C)``, 16 GEMMs ``M[xi] = V[xi] @ U[xi]`` ``(T, O)`` (:mod:`.gemm`),
  and ``Y = A^T M A`` into the NCHW output;
* input gradient: the stride-1 input gradient is itself a correlation (of ``grad_out`` with the flipped kernel,
  channels swapped; :mod:`.conv` sets it up), so it runs the forward;
* weight gradient: the chain rule through the same transforms: ``dM = A dY A^T`` per tile,
  ``dU[xi] = sum over tiles dM[xi]^T @ V[xi]`` ``(O, C)`` (long reductions: efficient GEMMs) and
  ``dW = G^T dU G``.

Layout, and why. Tiles are numbered image-major, then tile row, then tile column, and processed in blocks of
whole tile rows; ``V`` and ``M`` are ``(16, tiles, channels)``. For each block, the input rows its tiles read
are first copied (NumPy transposing copies, which also zero-pad) to channels-last with even and odd columns
apart, ``(rows, 2, cols / 2, C)``: then every term of a transform over one tile row, all its tiles and
channels at once, is one contiguous run, and each transform is a few long loops that the compiler
vectorises. The output transform computes ``A^T M A`` the same way and then writes NCHW rows, which turns
channels-last back into NCHW in the same pass. Padding is never a separate pass: the copy writes zeros
around the input, which also covers a negative padding (a crop, as in the input gradient's correlation) and
the extra row and column that an odd output size computes and drops.

Threads: the tile rows are split into one contiguous share per Numba thread (:mod:`.shares`), and each thread
runs its share block by block: the NumPy copy, then one compiled call that does the transforms and the GEMMs
(this backend's own, :mod:`.gemm`, on that thread only) with no Python in between. Nothing is shared inside a
share, so the copies and transforms run in parallel as well as the GEMMs; on the 64-channel 56x56 layer of
``benchmarks/numba_kernels.py`` forward + both gradients went from 18 ms (transforms on the calling thread,
each GEMM a parallel region) to 11–12 ms. Each output element is computed by one thread in a fixed order,
so the forward and input gradient do not depend on the thread count; the weight gradient adds the shares'
partial sums in share order, the same on every run with the same thread count. The GEMMs use AVX-512 where
the CPU has it (OpenBLAS ran its AVX2 kernels on our Zen 5 VMs, at half the speed), and no OpenBLAS call
remains, so OpenBLAS's spinning worker threads never compete with these threads for the cores.

A block is sized so that its copy, ``V`` and ``M`` stay in cache between the step that writes them and the
one that reads them, while the GEMMs stay long enough to run near peak.

It serves every channel count: against this backend's im2col path (forward + both gradients, float32) it
measured faster in every case tried, 1.06x to 9x, from 2 to 1024 channels and from 1x1 to 112x112 outputs,
so there is no small-channel fallback.

Every temporary is a per-thread scratch buffer (:mod:`segcore.kernels.workspace`); results are fresh arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from segcore.kernels.conv import overlap
from segcore.kernels.workspace import scratch

from .gemm import matmul, matmul_into
from .shares import run_shares

__all__ = ["BT", "G", "AT", "BLOCK_ELEMENTS", "applies", "conv2d", "conv2d_grad_input", "conv2d_grad_weight"]

#: Input transform ``B^T``, kernel transform ``G`` and output transform ``A^T`` of F(2x2, 3x3). The Numba loops
#: below have ``B^T`` and ``A^T`` written out as additions; ``G`` is applied through ``kron(G, G)``.
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

# vec(G g G^T) = kron(G, G) vec(g) for row-major vec: the kernel transform of every (o, c) pair is one GEMM.
_KRON_G = np.kron(G, G)

# Row a of B^T is d[first] + sign * d[second]; the loops read these terms instead of the matrix.
_BT_TERMS = ((0, 2, -1), (1, 2, 1), (2, 1, -1), (1, 3, -1))

#: Elements of the larger of a block's ``V`` (16 * tiles * C) and ``M`` (16 * tiles * O). 2**20 (4 MiB of
#: float32) measured best, or within 4%, on the benchmark's 64..256-channel layers against 2**17 to 2**21
#: (each block also costs a NumPy copy and a few Python calls, which small blocks multiply). Tests lower it
#: to exercise several blocks and a partial last one.
BLOCK_ELEMENTS = 1 << 20


def applies(weight_shape, stride, dilation, groups: int, dtype) -> bool:
    """Whether the Winograd kernels below serve this convolution: a dense 3x3 kernel with more than one input
    channel (one is the depthwise loop's), stride 1, dilation 1, float32 or float64; else im2col does."""
    _, cg, kh, kw = weight_shape
    return (
        (kh, kw) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(dilation) == (1, 1)
        and groups == 1
        and cg > 1
        and np.dtype(dtype) in (np.float32, np.float64)
    )


# -- vectorisable building blocks: one output run per loop, so the compiler's aliasing checks stay few ------


@njit(inline="always", cache=True, error_model="numpy")
def _mix4(out, p, q, u, w, sq, su):
    """``out = (p + sq q) + su (u + sq w)`` with signs ``sq``, ``su`` in {-1, 1}: one entry of ``B^T d B``."""
    if sq > 0 and su > 0:
        for k in range(out.shape[0]):
            out[k] = (p[k] + q[k]) + (u[k] + w[k])
    elif sq > 0:
        for k in range(out.shape[0]):
            out[k] = (p[k] + q[k]) - (u[k] + w[k])
    elif su > 0:
        for k in range(out.shape[0]):
            out[k] = (p[k] - q[k]) + (u[k] - w[k])
    else:
        for k in range(out.shape[0]):
            out[k] = (p[k] - q[k]) - (u[k] - w[k])


@njit(inline="always", cache=True, error_model="numpy")
def _a_rows(o0, o1, o2, o3, p, q):
    """``(o0, o1, o2, o3) = A (p, q) = (p, p + q, p - q, -q)``: the adjoint of a row of ``A^T``."""
    for k in range(p.shape[0]):
        o0[k] = p[k]
    for k in range(p.shape[0]):
        o1[k] = p[k] + q[k]
    for k in range(p.shape[0]):
        o2[k] = p[k] - q[k]
    for k in range(p.shape[0]):
        o3[k] = -q[k]


@njit(inline="always", cache=True, error_model="numpy")
def _sum3(out, p, q, r):
    """``out = p + q + r``: row 0 of ``A^T``."""
    for k in range(out.shape[0]):
        out[k] = p[k] + q[k] + r[k]


@njit(inline="always", cache=True, error_model="numpy")
def _dif3(out, p, q, r):
    """``out = p - q - r``: row 1 of ``A^T`` (without its leading zero)."""
    for k in range(out.shape[0]):
        out[k] = p[k] - q[k] - r[k]


@njit(inline="always", cache=True, error_model="numpy")
def _run(a, first, count, length):
    """Tiles ``first..first+count`` of a ``(tiles, channels)`` matrix as one flat run of ``length`` values."""
    return a[first : first + count].reshape(length)


# -- transforms of one block of tile rows (tile row r is row r % th of image r // th) ---------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def _input_transform(p, base, tw, v):
    """``v[:, lr * tw + tx, :] = B^T d B`` for the tiles of the block's tile rows ``lr``.

    ``p`` ``(rows, 2, tw + 1, C)`` holds zero-padded input rows with even and odd columns apart, and tile row
    ``lr`` reads its rows ``base[lr] ..``: tile ``tx`` reads columns ``2 tx ..``, and column ``2 tx + k`` is
    ``p[.., k % 2, tx + k // 2]``.
    """
    c = p.shape[3]
    n = tw * c
    for lr in range(base.shape[0]):
        y = base[lr]
        for a in range(4):
            ra, rb, sa = _BT_TERMS[a]
            for s in range(4):
                ka, kb, ss = _BT_TERMS[s]
                # Column 2 tx + k of every tile in the row: one run starting at half-column k // 2.
                _mix4(
                    _run(v[4 * a + s], lr * tw, tw, n),
                    _run(p[y + ra, ka % 2], ka // 2, tw, n),
                    _run(p[y + ra, kb % 2], kb // 2, tw, n),
                    _run(p[y + rb, ka % 2], ka // 2, tw, n),
                    _run(p[y + rb, kb % 2], kb // 2, tw, n),
                    ss,
                    sa,
                )


@njit(cache=True, nogil=True, error_model="numpy")
def _output_transform(m, th, tw, r0, r1, out):
    """``out[b, :, 2 ty : 2 ty + 2, 2 tx : 2 tx + 2] = A^T M A`` for the tiles of tile rows ``r0 <= r < r1``,
    dropping the row and column that an odd output size has no room for."""
    o = m.shape[2]
    ho, wo = out.shape[2], out.shape[3]
    n = tw * o
    s = np.empty((8, n), dtype=m.dtype)
    y = np.empty((4, n), dtype=m.dtype)
    for lr in range(r1 - r0):
        b, ty = (r0 + lr) // th, (r0 + lr) % th
        # A^T M A for all tiles and channels of the row in flat runs: s[4 a + j] = row a of A^T times column j
        # of M, then y[2 a + e] = s[4 a ..] times column e of A.
        for j in range(4):
            m0, m1 = _run(m[j], lr * tw, tw, n), _run(m[4 + j], lr * tw, tw, n)
            m2, m3 = _run(m[8 + j], lr * tw, tw, n), _run(m[12 + j], lr * tw, tw, n)
            _sum3(s[j], m0, m1, m2)
            _dif3(s[4 + j], m1, m2, m3)
        for a in range(2):
            _sum3(y[2 * a], s[4 * a], s[4 * a + 1], s[4 * a + 2])
            _dif3(y[2 * a + 1], s[4 * a + 1], s[4 * a + 2], s[4 * a + 3])
        # Channels-last to NCHW: contiguous reads along the channels, one store per output plane. Measured
        # faster than reading along the tiles (strided loads) and than a separate NumPy transposing copy.
        for a in range(min(2, ho - 2 * ty)):
            rows = out[b, :, 2 * ty + a]
            for e in range(2):
                ye = y[2 * a + e]
                for tx in range(min(tw, (wo - e + 1) // 2)):
                    for oc in range(o):
                        rows[oc, 2 * tx + e] = ye[tx * o + oc]


@njit(cache=True, nogil=True, error_model="numpy")
def _grad_output_transform(g, base, tw, dm):
    """``dm[:, lr * tw + tx, :] = A dY A^T`` for the 2x2 output-gradient tiles of the block's tile rows ``lr``.

    ``g`` ``(rows, 2, tw, O)`` holds output-gradient rows with even and odd columns apart (zero beyond an odd
    edge); tile row ``lr`` is its rows ``base[lr]`` and ``base[lr] + 1``.
    """
    o = g.shape[3]
    n = tw * o
    half = np.empty((2, 4, n), dtype=g.dtype)
    for lr in range(base.shape[0]):
        # dY A^T for each of the tile's two rows, then A times that for every column.
        for a in range(2):
            h = half[a]
            _a_rows(h[0], h[1], h[2], h[3], g[base[lr] + a, 0].reshape(n), g[base[lr] + a, 1].reshape(n))
        for j in range(4):
            _a_rows(
                _run(dm[j], lr * tw, tw, n),
                _run(dm[4 + j], lr * tw, tw, n),
                _run(dm[8 + j], lr * tw, tw, n),
                _run(dm[12 + j], lr * tw, tw, n),
                half[0, j],
                half[1, j],
            )


# -- one block of tile rows, each step compiled into one call (no Python between them) -----------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def _correlate_block(p, base, u, th, tw, r0, v, m, out):
    """Tile rows ``r0 .. r0 + len(base)`` of the correlation: ``V`` (input transform of ``p``, ``base`` as for
    :func:`_input_transform`), ``M[xi] = V[xi] @ u[xi]`` with ``u`` ``(16, C, O)``, and ``A^T M A`` into
    ``out``. ``v`` and ``m`` are ``(16, tiles, C)`` and ``(16, tiles, O)``, C-contiguous."""
    _input_transform(p, base, tw, v)
    matmul_into(v, u, m, False, False)
    _output_transform(m, th, tw, r0, r0 + base.shape[0], out)


@njit(cache=True, nogil=True, error_model="numpy")
def _weight_grad_block(p, p_base, g, g_base, tw, v, dm, du, accumulate):
    """``du[xi] (+)= dM[xi]^T @ V[xi]`` over the tiles of one block: ``V`` the input transform of ``p``, ``dM`` the
    output-gradient transform of ``g`` (each with its row starts, see :func:`_input_transform` and
    :func:`_grad_output_transform`). ``+=`` when ``accumulate``."""
    _input_transform(p, p_base, tw, v)
    _grad_output_transform(g, g_base, tw, dm)
    # dm (16, tiles, O) read in place as its transpose (O, tiles): the tiles are the long reduction.
    matmul_into(dm, v, du, accumulate, True)


# -- layout copies and the kernel transform (NumPy) --------------------------------------------------------------


def _fill_even_odd(dst, x, offset):
    """``dst[b, r, k, q, c] = x[b, c, r - top, 2 q + k - left]``, zero outside ``x``: channels-last with even
    and odd columns apart, one NumPy transposing copy per parity (NumPy's blocked copy loop measured faster
    than a compiled element loop)."""
    _, rows, _, half_cols, _ = dst.shape
    h, w = x.shape[2:]
    top, left = offset
    src_rows, dst_rows = overlap(h, top, rows)
    # Scratch buffers are reused from call to call: zero the border every time, then overwrite the interior.
    dst[:, : dst_rows.start] = 0
    dst[:, dst_rows.stop :] = 0
    for k in (0, 1):
        # Half-columns q whose source column 2 q + k - left lies in [0, w).
        q0 = max(0, -((k - left) // 2))
        q1 = max(q0, min(half_cols, (w - 1 + left - k) // 2 + 1))
        plane = dst[:, dst_rows, k]
        plane[:, :, :q0] = 0
        plane[:, :, q1:] = 0
        if q1 > q0:
            i0 = 2 * q0 + k - left
            plane[:, :, q0:q1] = np.transpose(x[:, :, src_rows, i0 : i0 + 2 * (q1 - q0) - 1 : 2], (0, 2, 3, 1))


def _pieces(r0: int, r1: int, th: int):
    """Tile rows ``r0 <= r < r1`` as ``(first image, end image, first tile row, end tile row)`` pieces: a run of
    whole images in one piece, partial images at either end in their own."""
    r = r0
    while r < r1:
        b, ty = divmod(r, th)
        images = (r1 - r) // th if ty == 0 else 0
        if images:
            yield b, b + images, 0, th
            r += images * th
        else:
            end = min(r1 - b * th, th)
            yield b, b + 1, ty, end
            r = b * th + end


def _gather_rows(x, offset, th: int, half_cols: int, halo: int, block: tuple[int, int], key: str):
    """The rows that tile rows ``block = (r0, r1)`` read (``2 th'`` per tile row plus ``halo`` below each
    piece), copied by :func:`_fill_even_odd` into scratch ``(rows, 2, half_cols, C)``, and each tile row's
    first row in it. Copying per block keeps the copy in cache until the transform reads it."""
    r0, r1 = block
    c = x.shape[1]
    pieces = list(_pieces(r0, r1, th))
    rows = sum((b1 - b0) * (2 * (t1 - t0) + halo) for b0, b1, t0, t1 in pieces)
    buf = scratch(np, key, (rows, 2, half_cols, c), x.dtype)
    base = np.empty(r1 - r0, dtype=np.int64)
    row = lr = 0
    for b0, b1, t0, t1 in pieces:
        span = 2 * (t1 - t0) + halo
        part = buf[row : row + (b1 - b0) * span].reshape(b1 - b0, span, 2, half_cols, c)
        _fill_even_odd(part, x[b0:b1], (offset[0] - 2 * t0, offset[1]))
        starts = row + span * np.arange(b1 - b0)[:, None] + 2 * np.arange(t1 - t0)
        base[lr : lr + starts.size] = starts.ravel()
        row, lr = row + (b1 - b0) * span, lr + starts.size
    return buf, base


def _kernel_transform(w, flip: bool):
    """``(16, O, C)`` with ``[:, o, c] = vec(G k G^T)`` for the kernel ``k = w[o, c]``, rotated by 180 degrees
    when ``flip``: one GEMM with ``kron(G, G)`` that reads ``w`` ``(O, C, 3, 3)`` in place as its transposed
    operand (rotating the kernel reverses its 9 taps, so it reverses the columns of ``kron(G, G)`` instead)."""
    o, c = w.shape[:2]
    taps = _KRON_G[:, ::-1] if flip else _KRON_G
    u = scratch(np, "numba.winograd.u", (16, o, c), w.dtype)
    matmul(np.ascontiguousarray(taps, dtype=w.dtype), w.reshape(o * c, 9).T, out=u.reshape(16, o * c))
    return u


# -- drivers -----------------------------------------------------------------------------------------------------


def _block_rows(channels: int, tw: int, total: int) -> int:
    """Tile rows per block: ``total`` rows in as few near-equal blocks as keep a ``(16, rows * tw, channels)``
    matrix within :data:`BLOCK_ELEMENTS`."""
    most = max(1, min(total, BLOCK_ELEMENTS // (16 * channels * tw)))
    return -(-total // -(-total // most))


def _blocks(first: int, stop: int, c: int, o: int, tw: int, dtype):
    """``(r0, r1, v, m)`` for the blocks of tile rows covering ``first..stop``: ``v`` ``(16, tiles, c)`` and ``m``
    ``(16, tiles, o)`` are contiguous prefixes of this thread's scratch buffers, for the block's GEMMs."""
    rows = _block_rows(max(c, o), tw, stop - first)
    v_buf = scratch(np, "numba.winograd.v", (16 * rows * tw * c,), dtype)
    m_buf = scratch(np, "numba.winograd.m", (16 * rows * tw * o,), dtype)
    for r0 in range(first, stop, rows):
        r1 = min(stop, r0 + rows)
        t = (r1 - r0) * tw
        yield r0, r1, v_buf[: 16 * t * c].reshape(16, t, c), m_buf[: 16 * t * o].reshape(16, t, o)


def _correlate(x, u, offset, out_hw):
    """``out[n, o, y, z] = sum_(c, i, j) k[o, c, i, j] * x[n, c, y + i - top, z + j - left]`` for ``(y, z) <
    out_hw``, zeros outside ``x``, where ``u[:, c, o] = vec(G k[o, c] G^T)`` (a ``(16, C, O)`` array of any
    strides). ``offset = (top, left)`` may be negative (a crop). Returns a new ``(N, O) + out_hw`` array."""
    n, c = x.shape[:2]
    o = u.shape[2]
    ho, wo = out_hw
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    out = np.empty((n, o, ho, wo), dtype=x.dtype)
    if out.size == 0:
        return out
    u = np.ascontiguousarray(u)  # the compiled GEMM reads C-contiguous operands; u is small

    def share(first: int, stop: int) -> None:
        """Tile rows ``first..stop``, block by block, on the calling thread (see :mod:`.shares`)."""
        for r0, r1, v, m in _blocks(first, stop, c, o, tw, x.dtype):
            p, base = _gather_rows(x, offset, th, tw + 1, 2, (r0, r1), "numba.winograd.input")
            _correlate_block(p, base, u, th, tw, r0, v, m, out)

    run_shares(share, n * th)
    return out


def conv2d(x, w, padding):
    """Cross-correlation of ``x`` ``(N, C, H, W)`` with ``w`` ``(O, C, 3, 3)`` (stride 1), padded by ``padding``."""
    ho, wo = x.shape[2] + 2 * padding[0] - 2, x.shape[3] + 2 * padding[1] - 2
    # The kernel transform comes out (16, O, C); the correlation wants (16, C, O).
    return _correlate(x, _kernel_transform(w, False).transpose(0, 2, 1), padding, (ho, wo))


def conv2d_grad_input(grad_out, w, input_hw, padding):
    """Gradient of :func:`conv2d` with respect to its input, ``(N, C) + input_hw``.

    dx[y] = sum_i g[y + p - i] w[i] = sum_i' g[y - (2 - p) + i'] w[2 - i']: a correlation of ``grad_out`` with
    the rotated kernel, input and output channels swapped, at offset ``2 - p`` (negative when ``p > 2``).
    """
    u = _kernel_transform(w, True)  # (16, O, C): rows are this correlation's input channels
    return _correlate(grad_out, u, (2 - padding[0], 2 - padding[1]), tuple(input_hw))


def conv2d_grad_weight(x, grad_out, padding):
    """Gradient of :func:`conv2d` with respect to its weight, ``(O, C, 3, 3)``, for ``grad_out`` ``(N, O, Ho,
    Wo)`` (the output geometry is taken from ``grad_out``)."""
    n, c = x.shape[:2]
    o, ho, wo = grad_out.shape[1:]
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    total = n * th
    if total == 0 or wo == 0:
        return np.zeros((o, c, 3, 3), dtype=x.dtype)

    def share(first: int, stop: int):
        """``dU`` summed over tile rows ``first..stop``, on the calling thread (see :mod:`.shares`)."""
        # A fresh array, not a scratch buffer: a pool thread's result is read after the thread has moved on, and
        # another call may already be using its scratch.
        du = np.empty((16, o, c), dtype=x.dtype)
        for r0, r1, v, dm in _blocks(first, stop, c, o, tw, x.dtype):
            p, p_base = _gather_rows(x, padding, th, tw + 1, 2, (r0, r1), "numba.winograd.input")
            g, g_base = _gather_rows(grad_out, (0, 0), th, tw, 0, (r0, r1), "numba.winograd.grad")
            _weight_grad_block(p, p_base, g, g_base, tw, v, dm, du, r0 > first)
        return du

    # The shares' partial dU are summed in share order.
    shares = run_shares(share, total)
    du = shares[0]
    for part in shares[1:]:
        du += part
    # dW[o, c] = G^T dU[:, o, c] G, for every pair at once: vec(dW) = kron(G, G)^T vec(dU).
    return matmul(du.reshape(16, o * c).T, _KRON_G.astype(x.dtype)).reshape(o, c, 3, 3)
