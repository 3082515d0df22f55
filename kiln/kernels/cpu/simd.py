"""The inner step of every quantized CPU dot product, written as LLVM vector IR.

LLVM does not vectorize a plain Numba loop over int8 blocks (DESIGN.md: it compiles to
scalar code at 1-2 GB/s), so the step is an intrinsic. For one weight row (int8 values w)
and one activation row (int16 values x, `activations.py`) it sums, over blocks b of 32:

    float(sum of pair products over values 0..15 of b) * s0 * dx[b]
  + float(sum of pair products over values 16..31 of b) * s1 * dx[b]

where s0, s1 are the weight scales of the two halves (16-value sub-blocks: sw[8b], sw[8b+4]
of the repeated layout; 32-value blocks: both sw[b]) and dx the activation scale of the
block. The pair sums are `vpmaddwd` on AVX2 (elsewhere the same arithmetic is spelled
with generic vector operations and LLVM picks the instructions); int8 times int16
products summed in pairs fit in int32 with room to spare.

16-bit rather than 8-bit activations: on AVX2 the two cost the same instructions per
block (one `vpmaddwd` per 16 values against `vpmaddubsw` + `vpmaddwd` + sign fixes per
32), and 8-bit activations moved the default model's perplexity by 0.37% over 20 chunks,
more than issue 8 allows (0.3%); 16-bit ones move it by less than 0.01%.

The other intrinsics here are the byte-vector steps of the block decoders.
"""

from __future__ import annotations

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_FEATURES = llvm_binding.get_host_cpu_features().flatten()
HAS_AVX2 = "+avx2" in _FEATURES
HAS_AVX512 = "+avx512bw" in _FEATURES  # 512-bit vpmaddwd: one instruction per 32 values

_I8x32 = ir.VectorType(ir.IntType(8), 32)
_I16x32 = ir.VectorType(ir.IntType(16), 32)
_I32x8 = ir.VectorType(ir.IntType(32), 8)
_I32x32 = ir.VectorType(ir.IntType(32), 32)
_F32x8 = ir.VectorType(ir.FloatType(), 8)
_I32x16 = ir.VectorType(ir.IntType(32), 16)
_F32x16 = ir.VectorType(ir.FloatType(), 16)


def _function(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    # declared by their mangled names: llvmlite's declare_intrinsic cannot mangle vector types
    return cgutils.get_or_insert_function(module, ir.FunctionType(ret, args), name)


_I16x8 = ir.VectorType(ir.IntType(16), 8)


def _half_sums(builder: ir.IRBuilder, w: ir.Value, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """<32 x i8> w, <32 x i16> x -> pair sums <8 x i32> of values 0..15 and of 16..31."""
    w16 = builder.sext(w, _I16x32)
    halves = []
    for h in range(2):
        pick = ir.Constant(ir.VectorType(ir.IntType(32), 16), list(range(16 * h, 16 * h + 16)))
        wh = builder.shuffle_vector(w16, w16, pick)
        xh = builder.shuffle_vector(x, x, pick)
        if HAS_AVX2:
            fn = _function(builder.module, "llvm.x86.avx2.pmadd.wd", _I32x8, [wh.type, xh.type])
            halves.append(builder.call(fn, [wh, xh]))
        else:
            p = builder.mul(builder.sext(wh, _I32x16), builder.sext(xh, _I32x16))
            even = builder.shuffle_vector(p, p, ir.Constant(_I32x8, [2 * i for i in range(8)]))
            odd = builder.shuffle_vector(p, p, ir.Constant(_I32x8, [2 * i + 1 for i in range(8)]))
            halves.append(builder.add(even, odd))
    return halves[0], halves[1]


def _sum8(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """The sum of the 8 lanes of a <8 x float> (once per row, so plain scalar adds)."""
    result = builder.extract_element(v, ir.Constant(ir.IntType(32), 0))
    for lane in range(1, 8):
        result = builder.fadd(result, builder.extract_element(v, ir.Constant(ir.IntType(32), lane)))
    return result


def _data_pointer(context, builder, array_type, value, offset, element: ir.Type) -> ir.Value:
    data = context.make_array(array_type)(context, builder, value).data
    return builder.gep(builder.bitcast(data, element.as_pointer()), [offset])


@intrinsic
def f16_at(typingctx, row, at):
    """The little-endian f16 at byte `at` of a uint8 array, as float32 (vcvtph2ps with F16C)."""
    sig = types.float32(row, at)

    def codegen(context, builder, signature, args):
        p = _data_pointer(context, builder, signature.args[0], args[0], args[1], ir.IntType(8))
        h = builder.load(builder.bitcast(p, ir.HalfType().as_pointer()), align=1)
        return builder.fpext(h, ir.FloatType())

    return sig, codegen


def _block_products_512(builder, w, x, s0, s1, acc, fma16):
    """AVX-512: acc + float(pair sums of the 32 products) * scales (s0 for values 0..15,
    s1 for 16..31; the same value for one scale per block), as <16 x float>."""
    fn = _function(builder.module, "llvm.x86.avx512.pmaddw.d.512", _I32x16, [_I16x32, _I16x32])
    p = builder.sitofp(builder.call(fn, [builder.sext(w, _I16x32), x]), _F32x16)
    if s1 is None:
        scale = _splat(builder, s0, 16)
    else:
        v = builder.insert_element(ir.Constant(_F32x16, ir.Undefined), s0, ir.Constant(ir.IntType(32), 0))
        v = builder.insert_element(v, s1, ir.Constant(ir.IntType(32), 8))
        scale = builder.shuffle_vector(v, v, ir.Constant(_I32x16, [0] * 8 + [8] * 8))
    return builder.call(fma16, [p, scale, acc])


def _make_row_dot(per_block: bool):
    @intrinsic
    def row_dot(typingctx, w, w_off, sw, sw_off, x, x_off, dx, dx_off, n_blocks):
        sig = types.float32(w, w_off, sw, sw_off, x, x_off, dx, dx_off, n_blocks)

        def codegen(context, builder, signature, args):
            aw, aw_off, asw, asw_off, ax, ax_off, adx, adx_off, an = args
            tw, _, tsw, _, tx, _, tdx, _, tn = signature.args
            i8, i16, f32 = ir.IntType(8), ir.IntType(16), ir.FloatType()
            wp = _data_pointer(context, builder, tw, aw, aw_off, i8)
            xp = _data_pointer(context, builder, tx, ax, ax_off, i16)
            sp = _data_pointer(context, builder, tsw, asw, asw_off, f32)
            dp = _data_pointer(context, builder, tdx, adx, adx_off, f32)
            acc_type = _F32x16 if HAS_AVX512 else _F32x8
            acc = cgutils.alloca_once_value(builder, ir.Constant(acc_type, [0.0] * acc_type.count))
            count = context.cast(builder, an, tn, types.intp)
            fma = _function(builder.module, "llvm.fma.v8f32", _F32x8, [_F32x8, _F32x8, _F32x8])
            fma16 = _function(builder.module, "llvm.fma.v16f32", _F32x16, [_F32x16, _F32x16, _F32x16])
            with cgutils.for_range(builder, count) as loop:
                b = loop.index
                at = builder.mul(b, ir.Constant(b.type, 32))
                wv = builder.load(builder.bitcast(builder.gep(wp, [at]), _I8x32.as_pointer()), align=1)
                xv = builder.load(builder.bitcast(builder.gep(xp, [at]), _I16x32.as_pointer()), align=2)
                d = builder.load(builder.gep(dp, [b]))
                if per_block:
                    s0, s1 = builder.fmul(builder.load(builder.gep(sp, [b])), d), None
                else:
                    s8 = builder.mul(b, ir.Constant(b.type, 8))
                    s0 = builder.fmul(builder.load(builder.gep(sp, [s8])), d)
                    s1 = builder.fmul(builder.load(builder.gep(sp, [builder.add(s8, ir.Constant(b.type, 4))])), d)
                if HAS_AVX512:
                    total = _block_products_512(builder, wv, xv, s0, s1, builder.load(acc), fma16)
                else:
                    lo, hi = _half_sums(builder, wv, xv)
                    if s1 is None:
                        total = builder.call(fma, [builder.sitofp(builder.add(lo, hi), _F32x8), _splat(builder, s0, 8),
                                                   builder.load(acc)])
                    else:
                        total = builder.call(fma, [builder.sitofp(lo, _F32x8), _splat(builder, s0, 8), builder.load(acc)])
                        total = builder.call(fma, [builder.sitofp(hi, _F32x8), _splat(builder, s1, 8), total])
                builder.store(total, acc)
            total = builder.load(acc)
            if HAS_AVX512:
                lo = builder.shuffle_vector(total, total, ir.Constant(_I32x8, list(range(8))))
                hi = builder.shuffle_vector(total, total, ir.Constant(_I32x8, list(range(8, 16))))
                total = builder.fadd(lo, hi)
            return _sum8(builder, total)

        return sig, codegen

    return row_dot


row_dot_sub16 = _make_row_dot(per_block=False)
row_dot_sub16.__doc__ = """Dot of an int8 weight row (16-value sub-block scales, repeated layout) with an int16
activation row: w, x read from w_off, x_off; sw, dx float32; n_blocks blocks of 32."""
row_dot_block32 = _make_row_dot(per_block=True)
row_dot_block32.__doc__ = """As row_dot_sub16 with one weight scale per block of 32: sw[sw_off + b]."""


# Byte-vector steps of the block decoders: each works on 16 or 32 bytes at once.

_I8 = ir.IntType(8)


def _bytes_at(context, builder, array_type, value, offset, n: int):
    """Pointer to n bytes of an (u)int8 array from `offset`, as <n x i8>*."""
    return builder.bitcast(_data_pointer(context, builder, array_type, value, offset, _I8), ir.VectorType(_I8, n).as_pointer())


def _splat(builder, scalar, n: int):
    vt = ir.VectorType(scalar.type, n)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))


def _byte(context, builder, value, value_type):
    return builder.trunc(context.cast(builder, value, value_type, types.int64), _I8)


def _make_nibbles(n: int):
    @intrinsic
    def nibbles(typingctx, src, src_off, dst, lo_off, hi_off, offset):
        """dst[lo_off + i] = (src[src_off + i] & 15) - offset, dst[hi_off + i] = (src[...] >> 4) - offset."""
        sig = types.void(src, src_off, dst, lo_off, hi_off, offset)

        def codegen(context, builder, signature, args):
            ts, _, td, _, _, toff = signature.args
            s, so, d, lo, hi, off = args
            v = builder.load(_bytes_at(context, builder, ts, s, so, n), align=1)
            sub = _splat(builder, _byte(context, builder, off, toff), n)
            low = builder.sub(builder.and_(v, ir.Constant(v.type, [15] * n)), sub)
            high = builder.sub(builder.lshr(v, ir.Constant(v.type, [4] * n)), sub)
            builder.store(low, _bytes_at(context, builder, td, d, lo, n), align=1)
            builder.store(high, _bytes_at(context, builder, td, d, hi, n), align=1)
            return context.get_dummy_value()

        return sig, codegen

    return nibbles


nibbles32 = _make_nibbles(32)


def _pshufb32(builder, table16, idx):
    """table16[idx[i]] for the 32 lanes of idx (indices < 16)."""
    if HAS_AVX2:
        tab = builder.shuffle_vector(table16, table16, ir.Constant(ir.VectorType(ir.IntType(32), 32), list(range(16)) * 2))
        return builder.call(_function(builder.module, "llvm.x86.avx2.pshuf.b", _I8x32, [_I8x32, _I8x32]), [tab, idx])
    out = ir.Constant(_I8x32, ir.Undefined)
    for i in range(32):
        k = builder.extract_element(idx, ir.Constant(ir.IntType(32), i))
        out = builder.insert_element(out, builder.extract_element(table16, k), ir.Constant(ir.IntType(32), i))
    return out


def _joined_nibbles(context, builder, ts, s, so):
    """16 bytes from src -> <32 x i8>: the low nibbles, then the high nibbles."""
    v = builder.load(_bytes_at(context, builder, ts, s, so, 16), align=1)
    low = builder.and_(v, ir.Constant(v.type, [15] * 16))
    high = builder.lshr(v, ir.Constant(v.type, [4] * 16))
    return builder.shuffle_vector(low, high, ir.Constant(ir.VectorType(ir.IntType(32), 32), list(range(32))))


# Decoders write a block's 32 values with one 32-byte store: a 32-byte load of data stored
# as two 16-byte halves just before cannot be forwarded from the store buffer and stalls.


@intrinsic
def nibbles16_joined(typingctx, src, src_off, dst, dst_off, offset):
    """dst[dst_off + i] = (nibble i of the 16 bytes at src_off, lows then highs) - offset."""
    sig = types.void(src, src_off, dst, dst_off, offset)

    def codegen(context, builder, signature, args):
        ts, _, td, _, toff = signature.args
        s, so, d, do, off = args
        v = builder.sub(_joined_nibbles(context, builder, ts, s, so), _splat(builder, _byte(context, builder, off, toff), 32))
        builder.store(v, _bytes_at(context, builder, td, d, do, 32), align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def nibbles16_lookup(typingctx, src, src_off, dst, dst_off, table, table_off):
    """dst[dst_off + i] = table[table_off + nibble i of the 16 bytes at src_off] (lows, highs)."""
    sig = types.void(src, src_off, dst, dst_off, table, table_off)

    def codegen(context, builder, signature, args):
        ts, _, td, _, tt, _ = signature.args
        s, so, d, do, t, to = args
        tab16 = builder.load(_bytes_at(context, builder, tt, t, to, 16), align=1)
        v = _pshufb32(builder, tab16, _joined_nibbles(context, builder, ts, s, so))
        builder.store(v, _bytes_at(context, builder, td, d, do, 32), align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def q6_0_high_bits(typingctx, src, qh_off, dst, dst_off):
    """Q6_0's bits 4-5 of the 32 values from its 8 qh bytes, or-ed into dst, then minus 32:
    value j < 8 takes bits 0-1 of qh[j], 8 <= j < 16 bits 4-5 of qh[j-8], 16 + j bits 2-3 and
    6-7 likewise."""
    sig = types.void(src, qh_off, dst, dst_off)

    def codegen(context, builder, signature, args):
        ts, _, td, _ = signature.args
        s, so, d, do = args
        qh = builder.load(_bytes_at(context, builder, ts, s, so, 8), align=1)
        spread = builder.shuffle_vector(qh, qh, ir.Constant(ir.VectorType(ir.IntType(32), 32), list(range(8)) * 4))
        shifts = ir.Constant(_I8x32, [0] * 8 + [4] * 8 + [2] * 8 + [6] * 8)
        bits = builder.shl(builder.and_(builder.lshr(spread, shifts), ir.Constant(_I8x32, [3] * 32)), ir.Constant(_I8x32, [4] * 32))
        p = _bytes_at(context, builder, td, d, do, 32)
        v = builder.sub(builder.or_(builder.load(p, align=1), bits), ir.Constant(_I8x32, [32] * 32))
        builder.store(v, p, align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def fields32(typingctx, src, src_off, shift, mask, dst, dst_off):
    """dst[dst_off + i] = (src[src_off + i] >> shift) & mask for 32 bytes."""
    sig = types.void(src, src_off, shift, mask, dst, dst_off)

    def codegen(context, builder, signature, args):
        ts, _, tsh, tm, td, _ = signature.args
        s, so, sh, m, d, do = args
        v = builder.load(_bytes_at(context, builder, ts, s, so, 32), align=1)
        v = builder.and_(builder.lshr(v, _splat(builder, _byte(context, builder, sh, tsh), 32)), _splat(builder, _byte(context, builder, m, tm), 32))
        builder.store(v, _bytes_at(context, builder, td, d, do, 32), align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def or_fields32(typingctx, src, src_off, shift, mask, up, dst, dst_off):
    """dst[dst_off + i] |= ((src[src_off + i] >> shift) & mask) << up for 32 bytes."""
    sig = types.void(src, src_off, shift, mask, up, dst, dst_off)

    def codegen(context, builder, signature, args):
        ts, _, tsh, tm, tu, td, _ = signature.args
        s, so, sh, m, u, d, do = args
        v = builder.load(_bytes_at(context, builder, ts, s, so, 32), align=1)
        v = builder.and_(builder.lshr(v, _splat(builder, _byte(context, builder, sh, tsh), 32)), _splat(builder, _byte(context, builder, m, tm), 32))
        v = builder.shl(v, _splat(builder, _byte(context, builder, u, tu), 32))
        p = _bytes_at(context, builder, td, d, do, 32)
        builder.store(builder.or_(builder.load(p, align=1), v), p, align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def add32(typingctx, dst, dst_off, value):
    """dst[dst_off + i] += value for 32 bytes (wrapping int8)."""
    sig = types.void(dst, dst_off, value)

    def codegen(context, builder, signature, args):
        td, _, tv = signature.args
        d, do, v = args
        p = _bytes_at(context, builder, td, d, do, 32)
        builder.store(builder.add(builder.load(p, align=1), _splat(builder, _byte(context, builder, v, tv), 32)), p, align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def or_bits32(typingctx, word, value, dst, dst_off):
    """dst[dst_off + i] |= value where bit i of the 32-bit `word` is set."""
    sig = types.void(word, value, dst, dst_off)

    def codegen(context, builder, signature, args):
        tw, tv, td, _ = signature.args
        w, v, d, do = args
        i32 = ir.IntType(32)
        wv = _splat(builder, builder.trunc(context.cast(builder, w, tw, types.int64), i32), 32)
        bits = builder.and_(wv, ir.Constant(ir.VectorType(i32, 32), [1 << i if i < 31 else -(1 << 31) for i in range(32)]))
        on = builder.icmp_unsigned("!=", bits, ir.Constant(ir.VectorType(i32, 32), [0] * 32))
        add = builder.select(on, _splat(builder, _byte(context, builder, v, tv), 32), ir.Constant(ir.VectorType(_I8, 32), [0] * 32))
        p = _bytes_at(context, builder, td, d, do, 32)
        builder.store(builder.or_(builder.load(p, align=1), add), p, align=1)
        return context.get_dummy_value()

    return sig, codegen


def _make_lookup(n: int):
    @intrinsic
    def lookup(typingctx, dst, dst_off, table, table_off):
        """dst[dst_off + i] = table[table_off + dst[dst_off + i]] for n bytes, indices < 16
        (table must hold 16 bytes from table_off)."""
        sig = types.void(dst, dst_off, table, table_off)

        def codegen(context, builder, signature, args):
            td, _, tt, _ = signature.args
            d, do, t, to = args
            vt = ir.VectorType(_I8, n)
            p = _bytes_at(context, builder, td, d, do, n)
            idx = builder.load(p, align=1)
            tab16 = builder.load(_bytes_at(context, builder, tt, t, to, 16), align=1)
            if HAS_AVX2 and n == 32:
                tab = builder.shuffle_vector(tab16, tab16, ir.Constant(ir.VectorType(ir.IntType(32), 32), list(range(16)) * 2))
                out = builder.call(_function(builder.module, "llvm.x86.avx2.pshuf.b", vt, [vt, vt]), [tab, idx])
            else:
                out = ir.Constant(vt, ir.Undefined)
                for i in range(n):
                    k = builder.extract_element(idx, ir.Constant(ir.IntType(32), i))
                    out = builder.insert_element(out, builder.extract_element(tab16, k), ir.Constant(ir.IntType(32), i))
            builder.store(out, p, align=1)
            return context.get_dummy_value()

        return sig, codegen

    return lookup


lookup32 = _make_lookup(32)


@intrinsic
def lookup32_split(typingctx, dst, dst_off, table, lo_off, hi_off):
    """As lookup32, the first 16 bytes through table[lo_off:], the last 16 through table[hi_off:]
    (two 16-value sub-blocks with their own grid halves, in one 32-byte step)."""
    sig = types.void(dst, dst_off, table, lo_off, hi_off)

    def codegen(context, builder, signature, args):
        td, _, tt, _, _ = signature.args
        d, do, t, lo, hi = args
        p = _bytes_at(context, builder, td, d, do, 32)
        idx = builder.load(p, align=1)
        t_lo = builder.load(_bytes_at(context, builder, tt, t, lo, 16), align=1)
        t_hi = builder.load(_bytes_at(context, builder, tt, t, hi, 16), align=1)
        if HAS_AVX2:  # vpshufb looks up each 128-bit lane in its own half of the table
            tab = builder.shuffle_vector(t_lo, t_hi, ir.Constant(ir.VectorType(ir.IntType(32), 32), list(range(32))))
            out = builder.call(_function(builder.module, "llvm.x86.avx2.pshuf.b", _I8x32, [_I8x32, _I8x32]), [tab, idx])
        else:
            out = ir.Constant(_I8x32, ir.Undefined)
            for i in range(32):
                k = builder.extract_element(idx, ir.Constant(ir.IntType(32), i))
                src = t_lo if i < 16 else t_hi
                out = builder.insert_element(out, builder.extract_element(src, k), ir.Constant(ir.IntType(32), i))
        builder.store(out, p, align=1)
        return context.get_dummy_value()

    return sig, codegen


_F16x8 = ir.VectorType(ir.HalfType(), 8)


def _f32x8_at(context, builder, array_type, value, offset):
    p = _data_pointer(context, builder, array_type, value, offset, ir.FloatType())
    return builder.bitcast(p, _F32x8.as_pointer())


def _halves8_at(context, builder, array_type, value, offset):
    p = _data_pointer(context, builder, array_type, value, offset, ir.IntType(16))
    return builder.bitcast(p, ir.VectorType(ir.IntType(16), 8).as_pointer())


def _to_f32x8(builder, bits, kind: str):
    """8 16-bit floats (their bits, <8 x i16>) as <8 x float>: f16 by conversion, bf16 as
    the high half of an f32."""
    if kind == "f16":
        return builder.fpext(builder.bitcast(bits, _F16x8), _F32x8)
    wide = builder.shl(builder.zext(bits, _I32x8), ir.Constant(_I32x8, [16] * 8))
    return builder.bitcast(wide, _F32x8)


def _make_dot(kind: str):
    @intrinsic
    def dot(typingctx, a, a_off, b, b_off, n):
        """sum of a[a_off + i] * b[b_off + i] for i < n (a multiple of 8): a float32, b the bits
        of 16-bit floats (an int16 array), converted 8 at a time."""
        sig = types.float32(a, a_off, b, b_off, n)

        def codegen(context, builder, signature, args):
            ta, _, tb, _, tn = signature.args
            av, ao, bv, bo, nv = args
            pa = _f32x8_at(context, builder, ta, av, ao)
            pb = _halves8_at(context, builder, tb, bv, bo)
            acc = cgutils.alloca_once_value(builder, ir.Constant(_F32x8, [0.0] * 8))
            count = builder.udiv(context.cast(builder, nv, tn, types.intp), ir.Constant(ir.IntType(64), 8))
            fma = _function(builder.module, "llvm.fma.v8f32", _F32x8, [_F32x8, _F32x8, _F32x8])
            with cgutils.for_range(builder, count) as loop:
                x = builder.load(builder.gep(pa, [loop.index]), align=4)
                y = _to_f32x8(builder, builder.load(builder.gep(pb, [loop.index]), align=2), kind)
                builder.store(builder.call(fma, [x, y, builder.load(acc)]), acc)
            return _sum8(builder, builder.load(acc))

        return sig, codegen

    return dot


def _make_scale_add(kind: str):
    @intrinsic
    def scale_add(typingctx, acc, acc_off, keep, b, b_off, add, n):
        """acc[acc_off + i] = acc[acc_off + i] * keep + b[b_off + i] * add for i < n (a multiple
        of 8; b the bits of 16-bit floats)."""
        sig = types.void(acc, acc_off, keep, b, b_off, add, n)

        def codegen(context, builder, signature, args):
            ta, _, tk, tb, _, tad, tn = signature.args
            av, ao, kv, bv, bo, adv, nv = args
            pa = _f32x8_at(context, builder, ta, av, ao)
            pb = _halves8_at(context, builder, tb, bv, bo)
            keep = _splat(builder, context.cast(builder, kv, tk, types.float32), 8)
            add = _splat(builder, context.cast(builder, adv, tad, types.float32), 8)
            count = builder.udiv(context.cast(builder, nv, tn, types.intp), ir.Constant(ir.IntType(64), 8))
            fma = _function(builder.module, "llvm.fma.v8f32", _F32x8, [_F32x8, _F32x8, _F32x8])
            with cgutils.for_range(builder, count) as loop:
                p = builder.gep(pa, [loop.index])
                y = _to_f32x8(builder, builder.load(builder.gep(pb, [loop.index]), align=2), kind)
                builder.store(builder.call(fma, [y, add, builder.fmul(builder.load(p, align=4), keep)]), p, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return scale_add


dot_f32_f16 = _make_dot("f16")
dot_f32_bf16 = _make_dot("bf16")
scale_add_f16 = _make_scale_add("f16")
scale_add_bf16 = _make_scale_add("bf16")


@intrinsic
def f16_bits(typingctx, value):
    """A float32 rounded to f16 (nearest even, as torch's .half()), as its int16 bits."""
    sig = types.int16(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return sig, codegen


@intrinsic
def bf16_bits(typingctx, value):
    """A float32 rounded to bf16 (nearest even, NaN to 0x7fc0, as torch's .bfloat16()), as
    its int16 bits."""
    sig = types.int16(types.float32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        odd = builder.and_(builder.lshr(bits, ir.Constant(i32, 16)), ir.Constant(i32, 1))
        rounded = builder.lshr(builder.add(builder.add(bits, ir.Constant(i32, 0x7FFF)), odd), ir.Constant(i32, 16))
        is_nan = builder.fcmp_unordered("uno", args[0], args[0])
        return builder.select(is_nan, ir.Constant(ir.IntType(16), 0x7FC0), builder.trunc(rounded, ir.IntType(16)))

    return sig, codegen


@intrinsic
def f16_value(typingctx, bits):
    """The f16 whose bits are an int16, as float32 (exact)."""
    sig = types.float32(types.int16)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


@intrinsic
def not_finite(typingctx, value):
    """Whether a float32 is NaN or +-Inf, read from its bits (a fast-math compile may assume
    floats are never NaN and fold a float comparison away; an integer test it cannot)."""
    sig = types.boolean(types.float32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        exponent = builder.and_(builder.bitcast(args[0], i32), ir.Constant(i32, 0x7F800000))
        return builder.icmp_unsigned("==", exponent, ir.Constant(i32, 0x7F800000))

    return sig, codegen
