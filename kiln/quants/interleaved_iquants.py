"""Interleaved layouts of the i-quants: IQ2_XXS_R4, IQ2_XS_R4, IQ2_S_R4, IQ3_XXS_R4,
IQ3_S_R4, IQ4_XS_R8, IQ1_S_R4, IQ1_M_R4.

Facts from ik_llama.cpp (iqk_quantize.cpp, ggml-common.h), for row k of a group and
sub-block ib (32 values) of a 256-value super-block:

- IQ2_XXS_R4 / IQ3_XXS_R4: grid bytes regrouped (16ib+4k+i, resp. 32ib+8k+i); each 32-bit
  signs+scale word becomes 4 bytes (index 4ib+k), byte g = (T[s_g] << 1) | bit g of the 4-bit
  scale, s_g the g-th 7-bit sign field and T the "scrambled sign" bijection of 0..127: bit j
  of T[s] is the xor of sign bits 0..j of s, so that T[s] ^ (T[s] << 1) gives the 8 signs
  back (the 8th being the parity of the 7). IQ2_XS_R4 applies T to the 7 sign bits of each
  16-bit grid word (index 16ib+4k+i) and interleaves the scale bytes (4ib+k).
- IQ2_S_R4: grid bytes, sign bytes (16ib+4k+i), qh and scale bytes (4ib+k) interleaved.
- IQ3_S_R4: qs byte 32ib+8i+4h+k = qs[8ib+4h+i] of row k (row index innermost); qh at 4ib+k;
  sign byte 16ib+4k+j holds, at bit 2m+h, bit 4h+j of the row's sign byte 4ib+m; the 4-bit
  scales of sub-block s get position 4s+k and are stored as nibble planes (16 bytes).
- IQ4_XS_R8 (8 rows): 6-bit scales at position 8ib+k in planes (scales_l: nibbles, 32 bytes;
  scales_h: 2-bit fields, 16 bytes); byte 128ib+32l+4k+i holds values 8l+i (low nibble) and
  8l+4+i (high nibble) of sub-block ib.
- IQ1_S_R4 / IQ1_M_R4 are not repacks in ik_llama.cpp: they are quantized directly, in
  blocks of 32 with one f16 scale per row (the 4 rows' scales lead the group). IQ1_S_R4's
  per-32 data (4 grid bytes at 4i+k, the 16-bit qh word at k) equals IQ1_S's, so IQ1_S_R4 ->
  IQ1_S is lossless (rows of 256k values) and IQ1_S -> IQ1_S_R4 works when all super-block
  scales of a row are equal. IQ1_M_R4 keeps 4-bit sub-scales used as d*s where IQ1_M has
  3-bit ones used as d*(2s+1): conversion needs odd sub-scales (to IQ1_M) and one scale per
  row (from IQ1_M). Both dequantize directly with ik_llama.cpp's formulas; the IQ1_S grid
  is read out of kiln's IQ1_S dequantizer.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from ..errors import UnsupportedTypeError
from .interleaved_common import (
    QUAD,
    U8,
    Layout,
    as_bytes,
    blockwise,
    cat,
    gather_pack,
    index_table,
    pack_le,
    planes,
    ri,
    scatter_unpack,
    split,
    u16,
    u32,
    unpack_le,
    unplanes,
    unri,
)


def _scramble_table() -> np.ndarray:
    s = np.arange(128)
    signs = (s[:, None] >> np.arange(7)) & 1
    return (np.bitwise_xor.accumulate(signs, axis=1) << np.arange(7)).sum(1).astype(U8)


SCRAMBLE = _scramble_table()
UNSCRAMBLE = np.argsort(SCRAMBLE).astype(U8)


def _rows_back(a: np.ndarray, rows: int = 4) -> np.ndarray:
    return unri(a, rows, (a.shape[-1] // rows,), 1)[..., 0]


def _sas(aux: np.ndarray) -> np.ndarray:
    """Signs+scale words [..., n] (u32) -> their R4 form, bytes [..., n, 4]."""
    shifts = np.arange(4, dtype=np.uint32)
    signs = SCRAMBLE[(aux[..., None] >> (7 * shifts)) & 127]
    scale = ((aux[..., None] >> 28) >> shifts) & 1
    return (signs << U8(1)) | scale.astype(U8)


def _unsas(b: np.ndarray) -> np.ndarray:
    """Inverse of `_sas`: bytes [..., n, 4] -> u32 words [..., n]."""
    shifts = np.arange(4, dtype=np.uint32)
    signs = UNSCRAMBLE[b >> U8(1)].astype(np.uint32)
    scale = (b & U8(1)).astype(np.uint32)
    return np.bitwise_or.reduce((signs << (7 * shifts)) | (scale << (28 + shifts)), axis=-1).astype("<u4")


def _iq2_xxs_fwd(x):
    d, qs = split(x, 2, 64)
    q = qs.reshape(*qs.shape[:-1], 8, 8)
    sas = _sas(u32(q[..., 4:])[..., 0])  # [M, 4, 8, 4]
    return cat(ri(d), ri(sas), ri(q[..., :4]))


def _iq2_xxs_inv(y):
    d, sas, qs = split(y, 8, 128, 128)
    aux = as_bytes(_unsas(unri(sas, 4, (8,), 4))[..., None])  # [M, 4, 8, 4]
    grid = unri(qs, 4, (8,), 4)
    return cat(unri(d, 4, (), 2), np.concatenate([grid, aux], axis=-1).reshape(y.shape[0], 4, 64))


def _iq3_xxs_fwd(x):
    d, grid, sas = split(x, 2, 64, 32)
    return cat(ri(d), ri(_sas(u32(sas))), ri(grid.reshape(*grid.shape[:-1], 8, 8)))


def _iq3_xxs_inv(y):
    d, sas, qs = split(y, 8, 128, 256)
    aux = as_bytes(_unsas(unri(sas, 4, (8,), 4)))
    return cat(unri(d, 4, (), 2), unri(qs, 4, (8,), 8).reshape(y.shape[0], 4, 64), aux)


def _xs_words(v: np.ndarray, table: np.ndarray) -> np.ndarray:
    return (v & np.uint16(511)) | (table[v >> 9].astype(np.uint16) << 9)


def _iq2_xs_fwd(x):
    d, qs, scales = split(x, 2, 64, 8)
    w = as_bytes(_xs_words(u16(qs), SCRAMBLE).reshape(*qs.shape[:-1], 8, 4))  # [M, 4, 8, 8]
    return cat(ri(d), ri(w), ri(scales[..., None]))


def _iq2_xs_inv(y):
    d, qs, scales = split(y, 8, 256, 32)
    w = _xs_words(u16(unri(qs, 4, (8,), 8)), UNSCRAMBLE)  # [M, 4, 8, 4]
    return cat(unri(d, 4, (), 2), as_bytes(w.reshape(y.shape[0], 4, 32)), _rows_back(scales))


def _iq2_s_fwd(x):
    d, grid, signs, qh, scales = split(x, 2, 32, 32, 8, 8)
    lead = x.shape[:-1]
    return cat(ri(d), ri(grid.reshape(*lead, 8, 4)), ri(qh[..., None]), ri(signs.reshape(*lead, 8, 4)),
               ri(scales[..., None]))


def _iq2_s_inv(y):
    d, grid, qh, signs, scales = split(y, 8, 128, 32, 128, 32)
    m = y.shape[0]
    return cat(unri(d, 4, (), 2), unri(grid, 4, (8,), 4).reshape(m, 4, 32),
               unri(signs, 4, (8,), 4).reshape(m, 4, 32), _rows_back(qh), _rows_back(scales))


def _iq3_s_fwd(x):
    d, qs, qh, signs, scales = split(x, 2, 64, 8, 32, 4)
    m = x.shape[0]
    q = qs.reshape(m, 4, 8, 2, 4).transpose(0, 2, 4, 3, 1).reshape(m, 256)  # [ib, i, h, k]
    bits = np.unpackbits(signs.reshape(m, 4, 8, 4), axis=-1, bitorder="little")  # [k, ib, m, 4h+j]
    bits = bits.reshape(m, 4, 8, 4, 2, 4).transpose(0, 1, 2, 5, 3, 4)  # [k, ib, j, m, h]
    sb = np.packbits(bits.reshape(m, 4, 8, 4, 8), axis=-1, bitorder="little")[..., 0]  # [k, ib, j]
    nib = ri(unpack_le(scales, 4)[..., None])  # 32 sub-block scales, position 4s+k
    return cat(ri(d), q, ri(qh[..., None]), ri(sb), planes(nib, 4))


def _iq3_s_inv(y):
    d, qs, qh, sb, scales = split(y, 8, 256, 32, 128, 16)
    m = y.shape[0]
    q = qs.reshape(m, 8, 4, 2, 4).transpose(0, 4, 1, 3, 2).reshape(m, 4, 64)
    bits = np.unpackbits(unri(sb, 4, (8,), 4)[..., None], axis=-1, bitorder="little")  # [k, ib, j, 2m+h]
    bits = bits.reshape(m, 4, 8, 4, 4, 2).transpose(0, 1, 2, 4, 5, 3)  # [k, ib, m, h, j]
    signs = np.packbits(bits.reshape(m, 4, 8, 4, 8), axis=-1, bitorder="little").reshape(m, 4, 32)
    sc = pack_le(_rows_back(unplanes(scales, 4)), 4)
    return cat(unri(d, 4, (), 2), q, _rows_back(qh), signs, sc)


_IDX_XS8 = index_table(np.arange(8) * 32, [0, 8, 16, 24], [0, 4], QUAD)  # [ib, l, f, i]


def _iq4_xs_fwd(x):
    d, sh, sl, qs = split(x, 2, 2, 4, 128)
    s6 = unpack_le(sl, 4) | (unpack_le(sh, 2) << U8(4))  # [M, 8, 8]
    pos = ri(s6[..., None])  # position 8ib + k
    v = unplanes(qs.reshape(*qs.shape[:-1], 8, 16), 4).reshape(*qs.shape[:-1], 256)
    return cat(ri(d), planes(pos >> U8(4), 2), planes(pos, 4), ri(gather_pack(v, _IDX_XS8, 4)))


def _iq4_xs_inv(y):
    d, sh, sl, qs = split(y, 16, 16, 32, 1024)
    s6 = _rows_back(unplanes(sl, 4) | (unplanes(sh, 2) << U8(4)), 8)
    v = scatter_unpack(unri(qs, 8, (8, 4), 4), _IDX_XS8, 4, 256)
    q = planes(v.reshape(y.shape[0], 8, 8, 32), 4).reshape(y.shape[0], 8, 128)
    return cat(unri(d, 8, (), 2), pack_le(s6 >> U8(4), 2), pack_le(s6, 4), q)


# --- IQ1_S_R4 / IQ1_M_R4 -------------------------------------------------------------------


def _row_scale(name: str, d: np.ndarray) -> np.ndarray:
    """[G, 4, nb, 2] f16 super-block scales -> [G, 4, 2], insisting they agree along a row."""
    if not (d == d[:, :, :1]).all():
        raise UnsupportedTypeError(
            f"{name} keeps one scale per row, but this tensor's rows have different super-block "
            f"scales; quantize to {name} from float (kiln quantize) instead of repacking"
        )
    return d[:, :, 0]


def _iq1_s_to_r(p: np.ndarray, n: int) -> np.ndarray:
    g = p.shape[0]
    b = p.reshape(g, 4, n // 256, 50)
    d = _row_scale("IQ1_S_R4", b[..., :2])
    qs = b[..., 2:34].reshape(g, 4, n // 32, 4).transpose(0, 2, 1, 3)  # [G, nb32, k, i]
    qh = b[..., 34:].reshape(g, 4, n // 32, 2).transpose(0, 2, 1, 3)
    m = g * (n // 32)
    blocks = cat(ri(qs.reshape(m, 4, 4)[..., None]), ri(qh.reshape(m, 4, 2)))
    return cat(d.reshape(g, 8), blocks.reshape(g, -1))


def _iq1_s_from_r(y: np.ndarray, n: int) -> np.ndarray:
    if n % 256:
        raise UnsupportedTypeError(f"IQ1_S_R4 rows of {n} values cannot become IQ1_S (needs a multiple of 256)")
    g, nb = y.shape[0], n // 32
    d, blocks = split(y, 8, 24 * nb)
    qs, qh = split(blocks.reshape(g * nb, 24), 16, 8)
    qs = unri(qs, 4, (4,), 1).reshape(g, nb, 4, 4).transpose(0, 2, 1, 3).reshape(g, 4, n // 256, 32)
    qh = unri(qh, 4, (), 2).reshape(g, nb, 4, 2).transpose(0, 2, 1, 3).reshape(g, 4, n // 256, 16)
    dd = np.broadcast_to(d.reshape(g, 4, 1, 2), (g, 4, n // 256, 2))
    return cat(dd, qs, qh).reshape(g, 4, -1)


def _iq1_m_to_r(p: np.ndarray, n: int) -> np.ndarray:
    g, nb = p.shape[0], n // 256
    qs, qh, sc = split(p.reshape(g, 4, nb, 56), 32, 16, 8)
    w = u16(sc)  # [G, 4, nb, 4]
    d16 = (w[..., 0] >> 12) | (w[..., 1] >> 8 & 0x00F0) | (w[..., 2] >> 4 & 0x0F00) | (w[..., 3] & 0xF000)
    d = _row_scale("IQ1_M_R4", as_bytes(d16.astype("<u2")[..., None]))
    s3 = ((w[..., None] >> (3 * np.arange(4, dtype=np.uint16))) & 7).astype(U8)  # [.., 4 words, 4]
    s4 = (2 * s3 + 1).reshape(g, 4, nb * 8, 2)  # per 32-block: two 16-value halves
    packed = s4[..., 0] | (s4[..., 1] << U8(4))  # [G, 4, nb32]
    m = g * nb * 8
    qs = qs.reshape(g, 4, nb * 8, 4).transpose(0, 2, 1, 3).reshape(m, 4, 4)
    qh = qh.reshape(g, 4, nb * 8, 2).transpose(0, 2, 1, 3).reshape(m, 4, 2)
    packed = packed.transpose(0, 2, 1).reshape(m, 4, 1)
    blocks = cat(ri(qs[..., None]), ri(qh[..., None]), ri(packed))
    return cat(d.reshape(g, 8), blocks.reshape(g, -1))


def _iq1_m_from_r(y: np.ndarray, n: int) -> np.ndarray:
    if n % 256:
        raise UnsupportedTypeError(f"IQ1_M_R4 rows of {n} values cannot become IQ1_M (needs a multiple of 256)")
    g, nb = y.shape[0], n // 32
    d, blocks = split(y, 8, 28 * nb)
    qs, qh, sc = split(blocks.reshape(g * nb, 28), 16, 8, 4)

    def per_row(a, w):
        return unri(a, 4, (w,), 1).reshape(g, nb, 4, w).transpose(0, 2, 1, 3)  # [G, 4, nb32, w]

    qs, qh, sc = per_row(qs, 4), per_row(qh, 2), per_row(sc, 1)[..., 0]
    s4 = np.stack([sc & U8(15), sc >> U8(4)], axis=-1)  # [G, 4, nb32, 2]
    if not (s4 & U8(1)).all():
        raise UnsupportedTypeError(
            "IQ1_M_R4 -> IQ1_M: this tensor has even 4-bit sub-scales, which IQ1_M's d*(2s+1) "
            "cannot represent; dequantize it instead"
        )
    s3 = (s4 >> U8(1)).reshape(g, 4, n // 256, 4, 4).astype(np.uint16)  # [.., word, field]
    d16 = np.ascontiguousarray(d.reshape(g, 4, 2)).view("<u2")  # [G, 4, 1]
    dn = (d16 >> (4 * np.arange(4, dtype=np.uint16))) & 0xF  # nibble j of d goes to word j
    words = (s3 << (3 * np.arange(4, dtype=np.uint16))).sum(-1, dtype=np.uint16) | (dn[:, :, None, :] << 12)
    qs = qs.reshape(g, 4, n // 256, 32)
    qh = qh.reshape(g, 4, n // 256, 16)
    return cat(qs, qh, as_bytes(words.astype("<u2"))).reshape(g, 4, -1)


@cache
def _iq1s_grid() -> np.ndarray:
    """ggml's 2048 x 8 IQ1_S grid (values -1, 0, 1), read out of kiln's IQ1_S dequantizer:
    blocks with d = 1, sub-scale 0 (dl = 1) and positive delta give grid + 1/8."""
    from .registry import quant_type  # registry imports this module

    deq = quant_type("IQ1_S").dequantizer
    if deq is None:
        raise UnsupportedTypeError("IQ1_S_R4/IQ1_M_R4 need the IQ1_S grid, and this kiln cannot dequantize IQ1_S yet")
    idx = np.arange(2048, dtype=np.uint16).reshape(64, 8, 4)  # 64 blocks, 8 sub-blocks, 4 groups
    qs = (idx & 255).astype(U8).reshape(64, 32)
    qh = ((idx >> 8) << (3 * np.arange(4, dtype=np.uint16))).sum(-1, dtype=np.uint16)
    d = np.full((64, 1), 1.0, dtype="<f2")
    rows = cat(as_bytes(d), qs, as_bytes(qh.astype("<u2")))
    vals = np.asarray(deq(rows, 256), dtype=np.float32).reshape(2048, 8)
    return np.rint(vals - np.float32(0.125)).astype(np.int8)


_DELTA = np.float32(0.125)  # IQ1S_DELTA = IQ1M_DELTA


def _row_d(y: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(y[:, :8]).view("<f2").astype(np.float32)  # [G, 4]


def _iq1_s_values(y: np.ndarray, n: int) -> np.ndarray:
    grid = _iq1s_grid()
    g, nb = y.shape[0], n // 32
    b = y[:, 8:].reshape(g, nb, 24)
    qs = b[..., :16].reshape(g, nb, 4, 4).transpose(0, 1, 3, 2)  # [G, nb, k, i]
    qh = u16(b[..., 16:])  # [G, nb, k]
    idx = qs.astype(np.uint16) | (((qh[..., None] >> (3 * np.arange(4, dtype=np.uint16))) & 7) << 8)
    dl = _row_d(y)[:, None, :] * (2 * ((qh >> 12) & 7) + 1).astype(np.float32)
    delta = np.where(qh & 0x8000, -_DELTA, _DELTA)
    v = dl[..., None, None] * (grid[idx].astype(np.float32) + delta[..., None, None])  # [G, nb, k, i, 8]
    return v.transpose(0, 2, 1, 3, 4).reshape(g, 4, n)


def _iq1_m_values(y: np.ndarray, n: int) -> np.ndarray:
    grid = _iq1s_grid()
    g, nb = y.shape[0], n // 32
    b = y[:, 8:].reshape(g, nb, 28)
    qs = b[..., :16].reshape(g, nb, 4, 4).transpose(0, 1, 3, 2)  # [G, nb, k, group]
    qh = b[..., 16:24].reshape(g, nb, 2, 4).transpose(0, 1, 3, 2)  # [G, nb, k, half]
    sc = b[..., 24:]  # [G, nb, k]
    qh_g = np.repeat(qh, 2, axis=-1) >> (U8(4) * (np.arange(4, dtype=U8) % U8(2)))  # [.., k, group]
    idx = qs.astype(np.uint16) | ((qh_g & U8(7)).astype(np.uint16) << 8)
    delta = np.where(qh_g & U8(8), -_DELTA, _DELTA)
    s4 = np.stack([sc & U8(15), sc >> U8(4)], axis=-1).astype(np.float32)  # [G, nb, k, half]
    dl = np.repeat(_row_d(y)[:, None, :, None] * s4, 2, axis=-1)  # [G, nb, k, group]
    v = dl[..., None] * (grid[idx].astype(np.float32) + delta[..., None])
    return v.transpose(0, 2, 1, 3, 4).reshape(g, 4, n)


LAYOUTS = [
    blockwise("IQ2_XXS_R4", "IQ2_XXS", 4, 256, 66, _iq2_xxs_fwd, _iq2_xxs_inv),
    blockwise("IQ2_XS_R4", "IQ2_XS", 4, 256, 74, _iq2_xs_fwd, _iq2_xs_inv),
    blockwise("IQ2_S_R4", "IQ2_S", 4, 256, 82, _iq2_s_fwd, _iq2_s_inv),
    blockwise("IQ3_XXS_R4", "IQ3_XXS", 4, 256, 98, _iq3_xxs_fwd, _iq3_xxs_inv),
    blockwise("IQ3_S_R4", "IQ3_S", 4, 256, 110, _iq3_s_fwd, _iq3_s_inv),
    blockwise("IQ4_XS_R8", "IQ4_XS", 8, 256, 136, _iq4_xs_fwd, _iq4_xs_inv),
    Layout("IQ1_S_R4", "IQ1_S", 4, _iq1_s_to_r, _iq1_s_from_r, direct=_iq1_s_values,
           note="quantized directly by ik_llama.cpp (one scale per row); repack from IQ1_S needs "
                "equal super-block scales along each row, unpack needs rows of 256k values"),
    Layout("IQ1_M_R4", "IQ1_M", 4, _iq1_m_to_r, _iq1_m_from_r, direct=_iq1_m_values,
           note="quantized directly by ik_llama.cpp (one scale per row, 4-bit sub-scales); repack "
                "from IQ1_M needs equal super-block scales along each row, unpack needs odd sub-scales"),
]
