"""A batched matrix product compiled by Numba for the host's widest vectors: ``out[b] = a[b] @ b[b]``.

Why not NumPy's ``matmul``: it calls OpenBLAS, which picks its kernels from the CPU model it recognises. On
CPUs it does not know yet it falls back to an older kernel set; on the AMD Zen 5 VMs we measure on (AVX-512)
OpenBLAS 0.3.31 and 0.3.34 both choose their Haswell (AVX2) kernels and reach about 250 GFLOP/s on two
cores, half of what the cores can do. LLVM, through Numba, compiles for the host it runs on, so a register
tile written with explicit vectors uses AVX-512 wherever the CPU has it. The tile below ran at 270 GFLOP/s on
one core and 530 on two with its operands in cache.

The algorithm is the usual blocked one (Goto and van de Geijn, "Anatomy of high-performance matrix
multiplication", 2008), reduced to what the convolution kernels need:

* the register tile: ``MR`` rows of ``out`` by ``NR`` columns (``NV`` vectors), kept in registers for a whole
  run over ``KC`` values of the reduction index, one broadcast of an ``a`` element and ``NV`` fused
  multiply-adds per row and step (an LLVM-IR intrinsic: Numba does not keep an array of accumulators in
  registers);
* ``a`` is read in place through its strides (a broadcast load costs the same from anywhere in cache), so any
  view works, a transposed one included; rows past the end of ``a`` come from a zero-padded copy;
* ``b`` is read in place when its rows are contiguous, else copied first into ``KC x NR`` panels (as is a
  last partial panel of columns, zero-padded);
* ``out`` is C-contiguous; full tiles are written in place, partial ones through a small buffer.

Work is split across threads by matrix of the batch and block of ``NC`` columns (and, when that gives fewer
pieces than threads, by bands of rows), each piece in one parallel loop: one parallel region per call.

Accumulation order: each element is a sum over ``k`` in increasing order within a ``KC`` block, blocks in
increasing order, so a result does not depend on the thread count.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import binding, ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["matmul", "matmul_into", "VECTOR_BYTES", "tile_shape"]


def _host_vector_bytes() -> int:
    features = binding.get_host_cpu_features()
    if features.get("avx512f", False):
        return 64
    if features.get("avx", False):
        return 32
    return 16


#: Width of the host's vector registers: 64 bytes with AVX-512, 32 with AVX/AVX2, else 16.
VECTOR_BYTES = _host_vector_bytes()

# Register tile: MR rows by NV vectors. With 32 vector registers (AVX-512) 12 x 2 accumulators leave room
# for the two ``b`` vectors and a broadcast; with 16 (AVX, SSE) 6 x 2 do.
_MR = 12 if VECTOR_BYTES == 64 else 6
_NV = 2
# Reduction run per tile visit: a 12 x 256 float32 band of ``a`` is 12 KiB and a 256 x 32 panel of ``b`` 32 KiB,
# which fit the 48 KiB level-1 cache together.
_KC = 256
# Columns per piece of work: big enough that the ``b`` panels copied for it serve many rows.
_NC = 512


def tile_shape(dtype) -> tuple[int, int]:
    """``(MR, NR)``: the register tile, in rows and columns of ``out``, for ``dtype`` on this host."""
    return _MR, _NV * VECTOR_BYTES // np.dtype(dtype).itemsize


def _tile_function(
    module,
    pointer,
    size: int,
    index,
    flag,
    row_table: bool = False,
    step_tables: bool = False,
    unit_step: bool = False,
    unit_rows: bool = False,
):
    """The register tile as an LLVM function of ``module`` (made on first use), kept out of line. With
    ``row_table`` the rows of ``a`` start at offsets read from a table (see :func:`_tile_rows`) instead of at
    equal steps; with ``step_tables`` the rows of ``b`` (one per step of the reduction) are read from a table
    (see :func:`_tile_gathered_b`); with ``unit_step`` each row of ``a`` is contiguous along the reduction
    (no ``sak`` operand); with ``unit_rows`` the rows of ``a`` are adjacent (no ``sam`` operand).

    Why ``unit_step``: with a step known only at run time, LLVM kept one pointer per row of ``a`` and advanced
    all twelve every step; with the other operands they did not fit the integer registers, and the loop moved
    pointers to and from the stack (about 60 scalar instructions per two steps, against 48 multiply-adds).
    With a unit step all rows share one index register: four scalar instructions per two steps, and the
    implicit-GEMM products ran 4-11% faster (rate-6 forward products 12.75 against 11.43 ms and 12.26 against
    11.77 ms in two runs, stride 2 2.37 against 2.18-2.21 ms; float64 11% and 5%; bit-identical results). With
    ``unit_rows`` likewise: LLVM advanced the rows of ``a`` by a chain of twelve dependent additions per step;
    the weight gradient ran 2.19 against 2.32 ms (stride 2), unchanged at rate 6. The plain tile keeps its
    run-time steps: a unit-step variant of it spilled accumulators and ran at half speed.

    Why out of line: inlined into a caller that passes constant strides and block sizes, LLVM re-optimised
    the loop for those constants and spilled accumulators to the stack; the tile then ran at about half speed
    (90 to 150 against 250 GFLOP/s on one core, a GEMM called from a compiled block loop). As its own function,
    never inlined nor specialised, it compiles to the same loop for every caller.
    """
    scalar = pointer.pointee
    lanes = VECTOR_BYTES // size
    suffix = "f32" if size == 4 else "f64"
    name = f"segcore_gemm_tile_{_MR}x{_NV}_v{lanes}{suffix}" + ("_rows" if row_table else "")
    name += "_steps" if step_tables else ""
    name += "_unit" if unit_step else ""
    name += "_adjacent" if unit_rows else ""
    if name in module.globals:
        return module.globals[name]
    table_type = index.as_pointer()
    # How the rows of ``a`` are found: (a0, sam), or (table, first entry, offset added to every entry).
    row_operands = [table_type, index, index] if row_table else [index, index]
    if unit_rows:
        row_operands = row_operands[:1]  # a0 only
    # How the reduction steps: ``sak``, ``b``, ``b0``, ``sbk``; or ``sak``, a table of the rows of ``b`` and its
    # first entry, ``b``, and an offset added to every row. No ``sak`` with a unit step.
    step_operands = [index, table_type, index, pointer, index] if step_tables else [index, pointer, index, index]
    if unit_step:
        step_operands = step_operands[1:]
    operands = [pointer, *row_operands, *step_operands, pointer, index, index, index, flag]
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), operands), name)
    # linkonce_odr: modules that each define it link without a clash, and, unlike an internal function, LLVM
    # may not specialise its body for a caller's constant arguments.
    function.linkage = "linkonce_odr"
    function.attributes.add("noinline")
    args = list(function.args)
    a_data, row_args = args[0], args[1 : 1 + len(row_operands)]
    step_args = args[1 + len(row_operands) : 1 + len(row_operands) + len(step_operands)]
    c_data, c0v, ldcv, kcv, acc_flag = args[-5:]
    if unit_step:
        step_args = [None, *step_args]  # no sak
    if step_tables:
        sakv, b_rows, first_step, b_data, b_offset = step_args
    else:
        sakv, b_data, b0v, sbkv = step_args
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    vec = ir.VectorType(scalar, lanes)
    fma = cgutils.get_or_insert_function(module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fma.v{lanes}{suffix}")
    zero_vec = ir.Constant(vec, [0.0] * lanes)
    undefined = ir.Constant(vec, ir.Undefined)
    splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)

    def const(v):
        return ir.Constant(index, v)

    def vector_at(data, offset):
        return builder.bitcast(builder.gep(data, [offset]), vec.as_pointer())

    # Row starts of ``a`` are loop-invariant: table[first + i] + offset, or a0 + i*sam.
    if row_table:
        table, first, offset = row_args
        entries = [builder.load(builder.gep(table, [builder.add(first, const(i))])) for i in range(_MR)]
        rows = [builder.add(entry, offset) for entry in entries]
    elif unit_rows:
        (a0v,) = row_args
        rows = [builder.add(a0v, const(i)) for i in range(_MR)]
    else:
        a0v, samv = row_args
        rows = [builder.add(a0v, builder.mul(const(i), samv)) for i in range(_MR)]
    entry = builder.block
    loop = function.append_basic_block("tile_k")
    after = function.append_basic_block("tile_store")
    builder.branch(loop)

    builder.position_at_end(loop)
    k = builder.phi(index)
    k.add_incoming(const(0), entry)
    accumulators = [builder.phi(vec) for _ in range(_MR * _NV)]
    for phi in accumulators:
        phi.add_incoming(zero_vec, entry)
    a_step = k if unit_step else builder.mul(k, sakv)
    if step_tables:
        b_row = builder.add(builder.load(builder.gep(b_rows, [builder.add(first_step, k)])), b_offset)
    else:
        b_row = builder.add(b0v, builder.mul(k, sbkv))
    b_vectors = [
        builder.load(vector_at(b_data, builder.add(b_row, const(v * lanes))), align=size) for v in range(_NV)
    ]
    updated = []
    for i in range(_MR):
        element = builder.load(builder.gep(a_data, [builder.add(rows[i], a_step)]))
        splat = builder.shuffle_vector(
            builder.insert_element(undefined, element, ir.Constant(ir.IntType(32), 0)), undefined, splat_mask
        )
        for v in range(_NV):
            updated.append(builder.call(fma, [splat, b_vectors[v], accumulators[i * _NV + v]]))
    for phi, value in zip(accumulators, updated):
        phi.add_incoming(value, loop)
    following = builder.add(k, const(1))
    k.add_incoming(following, loop)
    builder.cbranch(builder.icmp_signed("<", following, kcv), loop, after)

    builder.position_at_end(after)
    store_set = function.append_basic_block("tile_set")
    store_add = function.append_basic_block("tile_add")
    done = function.append_basic_block("tile_done")
    builder.cbranch(acc_flag, store_add, store_set)
    for block, add in ((store_set, False), (store_add, True)):
        builder.position_at_end(block)
        for i in range(_MR):
            row = builder.add(c0v, builder.mul(const(i), ldcv))
            for v in range(_NV):
                pointer = vector_at(c_data, builder.add(row, const(v * lanes)))
                value = updated[i * _NV + v]
                if add:
                    value = builder.fadd(builder.load(pointer, align=size), value)
                builder.store(value, pointer, align=size)
        builder.branch(done)
    builder.position_at_end(done)
    builder.ret_void()
    return function


def _is_vector(x, dtype) -> bool:
    return isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C" and x.dtype == dtype


def _typed_tile(arguments, floats, tables, **variant):
    """Typing and code generation of a tile intrinsic whose arguments are the tile function's operands in
    order (see :func:`_tile_function`, ``variant`` its flags): the arrays at positions ``floats`` (``a``,
    ``b``, ``c``) are 1-D C-contiguous of one float type, those at ``tables`` 1-D C-contiguous intp, the last
    argument is the accumulate flag and every other one an index. None when the arguments do not fit."""
    a = arguments[floats[0]]
    if not isinstance(a, types.Array) or a.dtype not in (types.float32, types.float64):
        return None
    if not all(_is_vector(arguments[p], a.dtype) for p in floats):
        return None
    if not all(_is_vector(arguments[p], types.intp) for p in tables):
        return None
    arrays = set(floats) | set(tables)
    sig = types.void(*[arguments[p] if p in arrays else types.intp for p in range(len(arguments) - 1)], types.boolean)

    def codegen(context, builder, signature, args):
        operands = [
            context.make_array(signature.args[p])(context, builder, value).data if p in arrays else value
            for p, value in enumerate(args)
        ]
        size = context.get_abi_sizeof(context.get_data_type(a.dtype))
        index = context.get_value_type(types.intp)
        function = _tile_function(builder.module, operands[floats[0]].type, size, index, operands[-1].type, **variant)
        builder.call(function, operands)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _tile(typingctx, a, a0, sam, sak, b, b0, sbk, c, c0, ldc, kc, accumulate):
    """``c[c0 + i*ldc + j] (+)= sum_{k<kc} a[a0 + i*sam + k*sak] * b[b0 + k*sbk + j]`` for ``i < MR``,
    ``j < NR``, ``k`` increasing; ``+=`` when ``accumulate``. ``kc >= 1``. Arrays are 1-D, C-contiguous, of one
    float type; nothing is bounds-checked (the drivers pass offsets inside the arrays)."""
    return _typed_tile((a, a0, sam, sak, b, b0, sbk, c, c0, ldc, kc, accumulate), floats=(0, 4, 7), tables=())


@intrinsic
def _tile_rows(typingctx, a, table, first, offset, b, b0, sbk, c, c0, ldc, kc, accumulate):
    """:func:`_tile` with the rows of ``a`` at ``table[first + i] + offset`` (``i < MR``) instead of at equal
    steps, each contiguous along the reduction:
    ``c[c0 + i*ldc + j] (+)= sum_{k<kc} a[table[first + i] + offset + k] * b[b0 + k*sbk + j]``. For products
    whose rows are gathered from elsewhere, such as a convolution's windows read in its input (the table is
    then the windows' origins). ``table`` is a 1-D C-contiguous intp array; nothing is bounds-checked."""
    arguments = (a, table, first, offset, b, b0, sbk, c, c0, ldc, kc, accumulate)
    return _typed_tile(arguments, floats=(0, 4, 7), tables=(1,), row_table=True, unit_step=True)


@intrinsic
def _tile_gathered_b(typingctx, a, a0, sak, b_rows, first, b, b_offset, c, c0, ldc, kc, accumulate):
    """:func:`_tile` with adjacent rows of ``a`` and the rows of ``b`` read from a table:
    ``c[c0 + i*ldc + j] (+)= sum_{k<kc} a[a0 + i + k*sak] * b[b_rows[first + k] + b_offset + j]``. For products
    whose reduction runs over gathered items, such as a convolution's weight gradient summed over pixels
    (``a`` then holds ``grad_out`` as one row per pixel, ``sak`` apart, ``b`` the channels-last input,
    ``b_rows`` each pixel's window). ``b_rows`` is a 1-D C-contiguous intp array; nothing is bounds-checked."""
    arguments = (a, a0, sak, b_rows, first, b, b_offset, c, c0, ldc, kc, accumulate)
    return _typed_tile(arguments, floats=(0, 5, 7), tables=(3,), step_tables=True, unit_rows=True)


@njit(nogil=True, cache=True)
def _pack(src, start, s_outer, s_inner, outer, inner, outer_total, inner_total, dst):
    """``dst[o*inner_total + i] = src[start + o*s_outer + i*s_inner]`` for ``o < outer``, ``i < inner``, and
    zeros in the rest of the ``outer_total x inner_total`` block: a panel of ``b`` or an edge band of ``a``."""
    for o in range(outer):
        for i in range(inner):
            dst[o * inner_total + i] = src[start + o * s_outer + i * s_inner]
        for i in range(inner, inner_total):
            dst[o * inner_total + i] = 0
    for o in range(outer, outer_total):
        for i in range(inner_total):
            dst[o * inner_total + i] = 0


@njit(nogil=True, cache=True)
def _gemm_piece(piece, m, k_total, n, out, scb, scm, a, sab, sam, sak, b, sbb, sbk, sbn, mr, nr, kc_max, nc, m_split,
                add):
    """Piece ``piece`` of ``out[p] = a[p] @ b[p]`` (``+=`` when ``add``) for ``(m, k_total) @ (k_total, n)``
    matrices: one matrix of the batch, one block of ``nc`` columns, one of ``m_split`` bands of its row panels.
    ``out``, ``a`` and ``b`` are 1-D views of the result's and the operands' memory from their first element,
    the ``s*`` their element strides (batch, row, column; the result's columns are contiguous)."""
    column_blocks = (n + nc - 1) // nc
    row_panels = (m + mr - 1) // mr
    p = piece // (column_blocks * m_split)
    rest = piece % (column_blocks * m_split)
    jc = (rest // m_split) * nc
    part = rest % m_split
    # Row panels of this piece: a contiguous share of the matrix's panels.
    first = part * row_panels // m_split
    last = (part + 1) * row_panels // m_split
    columns = min(nc, n - jc)
    panels = (columns + nr - 1) // nr
    packed = np.empty(panels * kc_max * nr, dtype=out.dtype)
    edge_rows = np.empty(mr * kc_max, dtype=out.dtype)
    tile = np.empty(mr * nr, dtype=out.dtype)
    for k0 in range(0, k_total, kc_max):
        kc = min(kc_max, k_total - k0)
        accumulate = add or k0 > 0
        # b's panels for this column block: in place when whole and row-contiguous, else copied.
        for q in range(panels):
            j0 = jc + q * nr
            width = min(nr, n - j0)
            if width < nr or sbn != 1:
                panel = packed[q * kc_max * nr : (q + 1) * kc_max * nr]
                _pack(b, p * sbb + k0 * sbk + j0 * sbn, sbk, sbn, kc, width, kc, nr, panel)
        # Row panel outermost: its band of ``a`` (MR x KC) stays in the level-1 cache while it meets every
        # column panel of the piece (those stay in level 2).
        for r in range(first, last):
            i0 = r * mr
            height = min(mr, m - i0)
            a_start = p * sab + i0 * sam + k0 * sak
            if height < mr:
                _pack(a, a_start, sam, sak, height, kc, mr, kc, edge_rows)
                a_src, a_start, a_row, a_col = edge_rows, 0, kc, 1
            else:
                a_src, a_row, a_col = a, sam, sak
            for q in range(panels):
                j0 = jc + q * nr
                width = min(nr, n - j0)
                if width < nr or sbn != 1:
                    b_src, b_start, b_step = packed, q * kc_max * nr, nr
                else:
                    b_src, b_start, b_step = b, p * sbb + k0 * sbk + j0, sbk
                c_start = p * scb + i0 * scm + j0
                if height == mr and width == nr:
                    _tile(a_src, a_start, a_row, a_col, b_src, b_start, b_step, out, c_start, scm, kc, accumulate)
                else:
                    _tile(a_src, a_start, a_row, a_col, b_src, b_start, b_step, tile, 0, nr, kc, False)
                    for i in range(height):
                        for j in range(width):
                            if accumulate:
                                out[c_start + i * scm + j] += tile[i * nr + j]
                            else:
                                out[c_start + i * scm + j] = tile[i * nr + j]


@njit(nogil=True, parallel=True, cache=True)
def _gemm_parallel(pieces, m, k, n, out, scb, scm, a, sab, sam, sak, b, sbb, sbk, sbn, mr, nr, kc_max, nc, m_split,
                   add):
    """Every piece of the product (see :func:`_gemm_piece`), shared among Numba's threads."""
    for piece in prange(pieces):
        _gemm_piece(piece, m, k, n, out, scb, scm, a, sab, sam, sak, b, sbb, sbk, sbn, mr, nr, kc_max, nc, m_split, add)


@njit(nogil=True, cache=True)
def _gemm_serial(pieces, m, k, n, out, scb, scm, a, sab, sam, sak, b, sbb, sbk, sbn, mr, nr, kc_max, nc, m_split,
                 add):
    """Every piece of the product, in order, on the calling thread (no parallel region: safe to call from
    several Python threads at once under any threading layer)."""
    for piece in range(pieces):
        _gemm_piece(piece, m, k, n, out, scb, scm, a, sab, sam, sak, b, sbb, sbk, sbn, mr, nr, kc_max, nc, m_split, add)


@njit(nogil=True, cache=True)
def matmul_into(a, b, out, add, a_transposed):
    """``out[p] = A[p] @ b[p]`` (``+=`` when ``add``) on the calling thread, with ``A = a`` or, when
    ``a_transposed``, ``A[p] = a[p].T`` (read in place). For compiled callers: C-contiguous 3-D arrays of one
    float dtype whose shapes match, and a reduction of at least one term (not checked; :func:`matmul` is the
    checked entry).

    Numba's on-disk cache keeps a compiled caller's copy of this code and checks only the caller's own source
    file: after editing this module, delete the ``__pycache__`` ``.nbi``/``.nbc`` files of its callers.
    """
    if a_transposed:
        batch, k, m = a.shape
        sam, sak = 1, m
    else:
        batch, m, k = a.shape
        sam, sak = k, 1
    n = b.shape[2]
    nr = _NV * VECTOR_BYTES // a.itemsize
    pieces = batch * ((n + _NC - 1) // _NC)
    flat_out, flat_a, flat_b = out.reshape(out.size), a.reshape(a.size), b.reshape(b.size)
    _gemm_serial(
        pieces, m, k, n, flat_out, m * n, n, flat_a, m * k, sam, sak, flat_b, k * n, n, 1, _MR, nr, _KC, _NC, 1, add
    )


def matmul(a, b, out=None, accumulate: bool = False, parallel: bool = True):
    """``a @ b`` for 2-D or 3-D (batched) float32/float64 arrays of one dtype, written to ``out`` (new when
    ``None``), or added to it when ``accumulate``. Operands may be any views with non-negative strides
    (transposed, sliced); ``out`` may be any view whose rows are contiguous and do not overlap (a slice of
    rows, or of columns, of a larger array); the operands must not overlap ``out``. ``parallel=False`` runs on
    the calling thread only, for callers that share the work among threads themselves."""
    if a.ndim != b.ndim or a.ndim not in (2, 3):
        raise ValueError(f"matmul expects two 2-D or two 3-D arrays, got {a.ndim}-D and {b.ndim}-D")
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"matmul expects float32 or float64 operands of one dtype, got {a.dtype} and {b.dtype}")
    squeeze = a.ndim == 2
    a3, b3 = (a[None], b[None]) if squeeze else (a, b)
    if a3.shape[0] != b3.shape[0] or a3.shape[2] != b3.shape[1]:
        raise ValueError(f"matmul shapes {a.shape} and {b.shape} do not match")
    shape = (a3.shape[0], a3.shape[1], b3.shape[2])
    if accumulate and out is None:
        raise ValueError("matmul accumulate=True needs an out array to add to")
    if out is None:
        out = np.empty(shape[1:] if squeeze else shape, dtype=a.dtype)
    out3 = out[None] if squeeze else out
    if out3.shape != shape or out.dtype != a.dtype or not _rows_contiguous(out3):
        raise ValueError(
            f"matmul out must be a {a.dtype} array of shape {shape[1:] if squeeze else shape} with contiguous,"
            f" non-overlapping rows, got {out.dtype} {out.shape} with strides {out.strides}"
        )
    if out.size == 0:
        return out
    if a3.shape[2] == 0:
        if not accumulate:
            out[...] = 0
        return out
    if any(s < 0 for s in a3.strides + b3.strides):
        raise ValueError("matmul operands must not have negative strides")
    mr, nr = tile_shape(a.dtype)
    a_flat, sa = _flat(a3)
    b_flat, sb = _flat(b3)
    batch, m, n = shape
    threads = numba.get_num_threads() if parallel else 1
    nc = _column_block(batch, n, nr, threads)
    row_panels = -(-m // mr)
    # Matrices and column blocks, and when they do not divide among the threads evenly (7 blocks on 2 threads:
    # 4 against 3), each also split into one band of rows per thread.
    whole = batch * -(-n // nc)
    m_split = 1 if whole % threads == 0 else max(1, min(row_panels, threads))
    pieces = whole * m_split
    run = _gemm_parallel if threads > 1 else _gemm_serial
    k = a3.shape[2]
    out_flat, (scb, scm, _) = _flat(out3)
    run(pieces, m, k, n, out_flat, scb, scm, a_flat, *sa, b_flat, *sb, mr, nr, _KC, nc, m_split, accumulate)
    return out


def _column_block(batch: int, n: int, nr: int, threads: int) -> int:
    """Width of the column blocks, a multiple of ``nr`` of at most :data:`_NC`: blocks of equal width, and when
    there are several, as many as let the threads share the batch's blocks evenly.

    Why not ``_NC`` and a remainder: a 576-column product on 2 threads was one 512- and one 64-column block,
    one thread doing 8/9 of the work (the weight gradient of a 64-channel 3x3 convolution ran 1.65x slower
    than with two 288-column blocks). A single block is left whole: the caller splits its rows among the
    threads, so that each reads half of ``a`` rather than all of it (two 128-column blocks in place of one
    256-column block made a convolution's forward product 7% slower).
    """
    blocks = -(-n // _NC)
    if blocks > 1:
        # More, narrower blocks until batch * blocks divides among the threads, while blocks keep 4 panels.
        while (batch * blocks) % threads and -(-n // (blocks + 1)) >= 4 * nr:
            blocks += 1
    width = -(-n // blocks)
    return -(-width // nr) * nr


def _rows_contiguous(out3) -> bool:
    """Whether a 3-D array's rows are contiguous and no two elements share memory (strides in bytes)."""
    if out3.size == 0:
        return True  # nothing is written (NumPy gives empty arrays arbitrary strides)
    batch, m, n = out3.shape
    sb, sm, sn = out3.strides
    item = out3.itemsize
    return (
        (sn == item or n <= 1)
        and (sm >= n * item or m <= 1)
        and (sb >= max(sm * m, n * item) or batch <= 1)
        and min(sb, sm, sn) >= 0
    )


def _flat(x):
    """(1-D view of the memory ``x`` spans, starting at ``x``'s first element; ``x``'s element strides).
    Strides must be non-negative."""
    itemsize = x.itemsize
    if any(s % itemsize for s in x.strides):
        raise ValueError(f"matmul operand strides {x.strides} are not multiples of the item size {itemsize}")
    strides = tuple(s // itemsize for s in x.strides)
    extent = 1 + sum(s * (d - 1) for s, d in zip(strides, x.shape))
    return np.lib.stride_tricks.as_strided(x, shape=(extent,), strides=(itemsize,)), strides
