"""Interleaved layouts of the 32-value block types and of the 8-bit activation-style types:
Q4_0_R8, Q8_0_R8, Q5_0_R4, Q6_0_R4, IQ4_NL_R4, Q8_K_R8, Q8_KV_R8.

Facts from ik_llama.cpp (iqk_quantize.cpp, repack_* functions; ggml-common.h):

- Q4_0_R8: the 8 rows' f16 scales, then 4 chunks of 4 bytes per row: byte 32l+4k+i is byte
  4l+i of row k's qs (the nibble pairs are kept as they are).
- Q8_0_R8: the 8 scales, then byte 32l+4k+i is byte 4l+i of row k's 32 quants (l = 0..7).
- Q5_0_R4, Q6_0_R4, IQ4_NL_R4: the 4 scales, then the 4-bit parts regrouped so that byte
  16l+4k+i holds values A[l]+i (low nibble) and A[l]+8+i (high nibble), A = 0, 16, 4, 20;
  Q5_0_R4's 16 high-bit bytes: byte 4k+i, bit l and l+4 for those two values; Q6_0_R4's
  32 high-bit bytes: byte 16(l%2)+4k+i, 2-bit fields at 2(l/2) and 2(l/2)+4.
- Q8_K_R8 (from Q8_K): the f32 block scale becomes f16 (round to nearest even: not
  lossless), then byte 32j+4k+i is quant 4j+i of row k. Q8_K's sum and bsums are dropped;
  unpack recomputes them (bsums per 16 quants, sum = d * total) with d the f16 value.
  ik_llama.cpp quantizes Q8_K_R8 from float with its Q8_K32 variant (same scale and quants),
  not through a Q8_K file, so there is no plain golden file to repack.
- Q8_KV_R8 (from Q8_KV): the rows' f32 scales side by side, then per 16 values byte
  128j+32l+4k+i is quant 16j+4l+i of row k. Q8_KV's per-row int32 quant sum is dropped;
  unpack recomputes it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .interleaved_common import (
    NIB_R4_STARTS,
    QUAD,
    U8,
    Layout,
    as_bytes,
    blockwise,
    cat,
    gather_pack,
    index_table,
    planes,
    ri,
    scatter_unpack,
    split,
    unplanes,
    unri,
)

# [l, f, i]: the nibble pairs of one 32-value block in R4 order.
_NIB = index_table(NIB_R4_STARTS, [0, 8], QUAD)
# Q5_0_R4 high bits [f = 4h + l, i]: value A[l] + 8h + i at bit f.
_Q5_HIGH = index_table([0, 8], NIB_R4_STARTS, QUAD).reshape(8, 4)
# Q6_0_R4 high 2-bit fields [m, f, i]: bits 2f of byte 16m+4k+i hold value
# A[m] + i, A[m+2] + i, A[m] + 8 + i, A[m+2] + 8 + i for f = 0..3 (A[m+2] = A[m] + 4).
_Q6_HIGH = index_table(NIB_R4_STARTS[:2], [0, 4, 8, 12], QUAD)
# Q6_0's qh: byte b holds the high 2 bits of values b, b+16, b+8, b+24 at bits 0, 2, 4, 6.
_Q6_PLAIN_ORDER = np.concatenate([np.arange(8) + o for o in (0, 16, 8, 24)])


def _ileave_bytes(x: np.ndarray, w: int = 4) -> np.ndarray:
    """[M, R, n] -> [M, n*R]: chunks of w bytes of the rows side by side."""
    m, r, n = x.shape
    return ri(x.reshape(m, r, n // w, w))


def _unileave_bytes(y: np.ndarray, rows: int, w: int = 4) -> np.ndarray:
    m = y.shape[0]
    n = y.shape[1] // rows
    return unri(y, rows, (n // w,), w).reshape(m, rows, n)


# --- Q4_0_R8, Q8_0_R8: scales, then 4-byte chunks --------------------------------------------


def _q_r8(block_bytes: int):
    def fwd(x):
        d, qs = split(x, 2, block_bytes - 2)
        return cat(ri(d), _ileave_bytes(qs))

    def inv(y):
        d, qs = split(y, 16, 8 * (block_bytes - 2))
        return cat(unri(d, 8, (), 2), _unileave_bytes(qs, 8))

    return fwd, inv


# --- 32-value blocks with nibbles (+ high bits), R4 ------------------------------------------


def _nib_r4(v: np.ndarray) -> np.ndarray:
    """values [M, 4, 32] -> their 64 low-nibble bytes in R4 order."""
    return ri(gather_pack(v, _NIB, 4))


def _un_nib_r4(qs: np.ndarray) -> np.ndarray:
    return scatter_unpack(unri(qs, 4, (4,), 4), _NIB, 4, 32)


def _iq4_nl_fwd(x):
    d, qs = split(x, 2, 16)
    return cat(ri(d), _nib_r4(unplanes(qs, 4)))


def _iq4_nl_inv(y):
    d, qs = split(y, 8, 64)
    return cat(unri(d, 4, (), 2), planes(_un_nib_r4(qs), 4))


def _q5_0_fwd(x):
    d, qh, qs = split(x, 2, 4, 16)
    v = unplanes(qs, 4) | (np.unpackbits(qh, axis=-1, bitorder="little") << U8(4))
    return cat(ri(d), ri(gather_pack(v >> U8(4), _Q5_HIGH, 1)), _nib_r4(v))


def _q5_0_inv(y):
    d, qh, qs = split(y, 8, 16, 64)
    v = _un_nib_r4(qs) | (scatter_unpack(unri(qh, 4, (), 4), _Q5_HIGH, 1, 32) << U8(4))
    return cat(unri(d, 4, (), 2), np.packbits(v >> U8(4), axis=-1, bitorder="little"), planes(v, 4))


def _q6_0_fwd(x):
    d, qh, qs = split(x, 2, 8, 16)
    high = np.empty(qs.shape[:-1] + (32,), dtype=U8)
    high[..., _Q6_PLAIN_ORDER] = unplanes(qh, 2)
    v = unplanes(qs, 4) | (high << U8(4))
    return cat(ri(d), ri(gather_pack(v >> U8(4), _Q6_HIGH, 2)), _nib_r4(v))


def _q6_0_inv(y):
    d, qh, qs = split(y, 8, 32, 64)
    v = _un_nib_r4(qs) | (scatter_unpack(unri(qh, 4, (2,), 4), _Q6_HIGH, 2, 32) << U8(4))
    return cat(unri(d, 4, (), 2), planes((v >> U8(4))[..., _Q6_PLAIN_ORDER], 2), planes(v, 4))


# --- Q8_K_R8 -------------------------------------------------------------------------------


def _q8_k_fwd(x):
    d, _sum, qs, _bsums = split(x, 4, 4, 256, 32)
    with np.errstate(over="ignore"):  # a scale beyond f16 range becomes inf, as in ggml
        d16 = np.ascontiguousarray(d).view("<f4").astype("<f2")
    return cat(ri(as_bytes(d16)), _ileave_bytes(qs))


def _q8_k_inv(y):
    d16, qs = split(y, 16, 8 * 256)
    d = np.ascontiguousarray(unri(d16, 8, (), 2)).view("<f2").astype("<f4")  # [M, 8, 1]
    q = _unileave_bytes(qs, 8)
    qi = q.view(np.int8).astype(np.int32)
    bsums = qi.reshape(*qi.shape[:-1], 16, 16).sum(-1).astype("<i2")
    total = qi.sum(-1, keepdims=True).astype(np.float32)
    with np.errstate(invalid="ignore"):
        s = (d * total).astype("<f4")
    return cat(as_bytes(d), as_bytes(s), q, as_bytes(bsums))


# --- Q8_KV_R8: row scales up front, 16 values per chunk ------------------------------------


def _q8_kv_to_r(p: np.ndarray, n: int) -> np.ndarray:
    g = p.shape[0]
    d, _isum, qs = split(p, 4, 4, n)
    return cat(d.reshape(g, 32), _ileave_bytes(qs))


def _q8_kv_from_r(y: np.ndarray, n: int) -> np.ndarray:
    g = y.shape[0]
    d, qs = split(y, 32, 8 * n)
    q = _unileave_bytes(qs, 8)
    isum = q.view(np.int8).sum(-1, dtype=np.int32, keepdims=True).astype("<i4")
    return cat(d.reshape(g, 8, 4), as_bytes(isum), q)


def _offset_values(bits: int):
    """Q5_0_R4 / Q6_0_R4 dequantization as ik_llama.cpp writes it: d*q + (-2**(bits-1)*d).
    Same magnitudes as the plain types' (q - 2**(bits-1))*d, but q = 2**(bits-1) gives +0
    where the plain formula gives -0 for a negative d: the golden sums differ there."""
    qh_bytes = 16 if bits == 5 else 32

    def values(y: np.ndarray, n: int) -> np.ndarray:
        g, nb = y.shape[0], n // 32
        d, qh, qs = split(y.reshape(g * nb, -1), 8, qh_bytes, 64)
        if bits == 5:
            high = scatter_unpack(unri(qh, 4, (), 4), _Q5_HIGH, 1, 32)
        else:
            high = scatter_unpack(unri(qh, 4, (2,), 4), _Q6_HIGH, 2, 32)
        q = (_un_nib_r4(qs) | (high << U8(4))).astype(np.float32)
        d = np.ascontiguousarray(d).view("<f2").astype(np.float32)[:, :, None]
        v = d * q + np.float32(-(1 << (bits - 1))) * d
        return v.reshape(g, nb, 4, 32).transpose(0, 2, 1, 3)

    return values


def _q8_k_r8_values(y: np.ndarray, n: int) -> np.ndarray:
    g, nb = y.shape[0], n // 256
    d16, qs = split(y.reshape(g * nb, -1), 16, 8 * 256)
    d = np.ascontiguousarray(d16).view("<f2").astype(np.float32)  # [M, 8]
    q = _unileave_bytes(qs, 8).view(np.int8)
    v = d[:, :, None] * q.astype(np.float32)
    return v.reshape(g, nb, 8, 256).transpose(0, 2, 1, 3)


def _q8_kv_r8_values(y: np.ndarray, n: int) -> np.ndarray:
    d, qs = split(y, 32, 8 * n)
    d = np.ascontiguousarray(d).view("<f4")  # [G, 8]
    return d[:, :, None] * _unileave_bytes(qs, 8).view(np.int8).astype(np.float32)


LAYOUTS = [
    blockwise("Q4_0_R8", "Q4_0", 8, 32, 18, *_q_r8(18)),
    blockwise("Q8_0_R8", "Q8_0", 8, 32, 34, *_q_r8(34)),
    replace(blockwise("Q5_0_R4", "Q5_0", 4, 32, 22, _q5_0_fwd, _q5_0_inv), direct=_offset_values(5)),
    replace(blockwise("Q6_0_R4", "Q6_0", 4, 32, 26, _q6_0_fwd, _q6_0_inv), direct=_offset_values(6)),
    blockwise("IQ4_NL_R4", "IQ4_NL", 4, 32, 18, _iq4_nl_fwd, _iq4_nl_inv),
    replace(blockwise("Q8_K_R8", "Q8_K", 8, 256, 296, _q8_k_fwd, _q8_k_inv,
                      note="block scale stored as f16 (repack rounds Q8_K's f32 scale); Q8_K's sums are recomputed"),
            direct=_q8_k_r8_values),
    Layout("Q8_KV_R8", "Q8_KV", 8, _q8_kv_to_r, _q8_kv_from_r, direct=_q8_kv_r8_values,
           note="Q8_KV's per-row quant sum is not stored; unpack recomputes it"),
]
