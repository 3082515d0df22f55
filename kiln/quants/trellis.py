"""ik_llama.cpp's trellis quants IQ1_KT..IQ4_KT: values generated from a seed by an integer recurrence.

Each row starts with a float32 row scale `d`, then 256-value super-blocks.
A super-block holds one seed per group of values (8 values per group, 4 for
IQ4_KT) and a scale per 32 values. A value is produced from its seed by

    x = seed + offset                  (uint32; offset 4096, IQ4_KT may add 32768)
    repeated per value:  x = x * 0xCBAC1FED (mod 2**32)
                         v = sum of the 4 bytes of (x & 0x3f3f3f3f) - 126
    value = scale * v                  (IQ3_KT: scale * |v|, then a sign bit)

with the block scale `scale = d * s` (float32), where `s` is the 4-bit code
mapped through the IQ4_K non-linear table (IQ1_KT, IQ2_KT), the plain 4-bit
code (IQ3_KT), or a 7-bit code minus 64 (IQ4_KT). All float arithmetic is
float32 in ik_llama.cpp's order, so results are bit-identical.

Super-block layouts (ggml-common.h):
- IQ1_KT (56 bytes): sh[8] (low nibble: scale code; bits 4..7: bit 12 of the
  seeds of the block's 4 groups), ql[32] (seed bits 0..7), qh[16] (seed bits
  8..11: low nibbles for blocks 0..3, high nibbles for blocks 4..7). 13-bit seeds.
- IQ2_KT (68 bytes): scales[4] (low nibble: first half, high: second half),
  then 32 little-endian uint16 seeds, 16 per half of the super-block.
- IQ3_KT (100 bytes): as IQ2_KT (plain 4-bit scales), then qh[32]: value p of
  the super-block is negated when bit p // 32 of qh[p % 32] is set.
- IQ4_KT (128 bytes): 8 uint32 words per 32-value block (bit 0: offset
  +32768, bits 1..7: scale code, bits 8+3g..10+3g: seed bits 12..14 of group g),
  ql[64] (seed bits 0..7), qh[32] (seed bits 8..11, as in IQ1_KT). 15-bit seeds.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedTypeError

QK_K = 256
ROW_META = 4  # the float32 row scale in front of each row

TRELLIS_MUL = np.uint32(0xCBAC1FED)
TRELLIS_MASK = np.uint32(0x3F3F3F3F)
TRELLIS_BIAS = np.float32(126.0)
SEED_OFFSET = 4096

# ik_llama.cpp's IQ4_K non-linear values (first half of iq4k_values): scale codes of IQ1_KT/IQ2_KT.
IQ4K_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)

BLOCK_BYTES = {"IQ1_KT": 56, "IQ2_KT": 68, "IQ3_KT": 100, "IQ4_KT": 128}

# Super-blocks dequantized at once: bounds the temporaries to a few MB.
_CHUNK_BLOCKS = 4096


def trellis_values(seeds: np.ndarray, group_size: int, offset: int | np.ndarray = SEED_OFFSET) -> np.ndarray:
    """The unscaled trellis values of each seed: float32 [..., group_size], each an integer in -126..126."""
    x = np.asarray(seeds, dtype=np.uint32) + np.asarray(offset, dtype=np.uint32)
    out = np.empty(x.shape + (group_size,), dtype=np.float32)
    for k in range(group_size):
        x = x * TRELLIS_MUL
        s = x & TRELLIS_MASK
        total = (s & 0xFF) + ((s >> 8) & 0xFF) + ((s >> 16) & 0xFF) + (s >> 24)
        out[..., k] = total.astype(np.float32) - TRELLIS_BIAS
    return out


def _check(name: str, rows: np.ndarray, n_per_row: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate the rows; return the row scales [n_rows], the super-blocks [n_rows, nb, bytes] and nb."""
    rows = np.asarray(rows)
    if rows.dtype != np.uint8 or rows.ndim != 2:
        raise UnsupportedTypeError(f"{name}: expected a uint8 array [n_rows, row_bytes], got {rows.dtype} {list(rows.shape)}")
    if n_per_row <= 0 or n_per_row % QK_K:
        raise UnsupportedTypeError(f"{name}: row size {n_per_row} is not a positive multiple of the block size {QK_K}")
    nb = n_per_row // QK_K
    row_bytes = ROW_META + nb * BLOCK_BYTES[name]
    if rows.shape[1] != row_bytes:
        raise UnsupportedTypeError(
            f"{name}: rows of {n_per_row} values take {row_bytes} bytes (4-byte row scale + {nb} blocks of "
            f"{BLOCK_BYTES[name]}), got {rows.shape[1]}"
        )
    d = np.ascontiguousarray(rows[:, :ROW_META]).view("<f4").reshape(-1)
    blocks = rows[:, ROW_META:].reshape(rows.shape[0], nb, BLOCK_BYTES[name])
    return d, blocks, nb


def _u16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<u2").astype(np.uint32)


def _seeds_iq1(b: np.ndarray) -> np.ndarray:
    """[n, 56] super-blocks -> [n, 32] 13-bit seeds, group g = 4*block + j."""
    sh, ql, qh = b[:, 0:8].astype(np.uint32), b[:, 8:40].astype(np.uint32), b[:, 40:56].astype(np.uint32)
    hi = np.concatenate([qh & 0xF, qh >> 4], axis=1)  # blocks 0..3 from low nibbles, 4..7 from high
    bit12 = (sh[:, :, None] >> (4 + np.arange(4, dtype=np.uint32))) & 1  # [n, 8 blocks, 4 groups]
    return ql | (hi << 8) | (bit12.reshape(-1, 32) << 12)


def _scales_two_halves(sc: np.ndarray) -> np.ndarray:
    """[n, 4] scale bytes -> [n, 32] per-group codes: low nibbles for groups 0..15, high for 16..31."""
    codes = np.concatenate([sc & 0xF, sc >> 4], axis=1)  # [n, 8], one per 32-value block
    return np.repeat(codes, 4, axis=1)


def _blocks_iq1(b: np.ndarray, d: np.ndarray) -> np.ndarray:
    scale = d[:, None] * IQ4K_VALUES[np.repeat(b[:, 0:8] & 0xF, 4, axis=1)]
    return scale[:, :, None] * trellis_values(_seeds_iq1(b), 8)


def _blocks_iq2(b: np.ndarray, d: np.ndarray) -> np.ndarray:
    scale = d[:, None] * IQ4K_VALUES[_scales_two_halves(b[:, 0:4])]
    return scale[:, :, None] * trellis_values(_u16(b[:, 4:68]), 8)


def _blocks_iq3(b: np.ndarray, d: np.ndarray) -> np.ndarray:
    scale = d[:, None] * _scales_two_halves(b[:, 0:4]).astype(np.float32)
    y = (scale[:, :, None] * np.abs(trellis_values(_u16(b[:, 4:68]), 8))).reshape(-1, QK_K)
    qh = b[:, 68:100]
    sign = (np.tile(qh, (1, 8)) >> np.repeat(np.arange(8, dtype=np.uint8), 32)) & 1
    return np.where(sign.astype(bool), -y, y)


def _blocks_iq4(b: np.ndarray, d: np.ndarray) -> np.ndarray:
    words = np.ascontiguousarray(b[:, 0:32]).view("<u4")  # [n, 8]
    ql, qh = b[:, 32:96].astype(np.uint32), b[:, 96:128].astype(np.uint32)
    hi = np.concatenate([qh & 0xF, qh >> 4], axis=1)  # groups 0..31 low nibbles, 32..63 high
    top = (words[:, :, None] >> (8 + 3 * np.arange(8, dtype=np.uint32))) & 7  # [n, 8 blocks, 8 groups]
    seeds = ql | (hi << 8) | (top.reshape(-1, 64) << 12)
    offset = SEED_OFFSET + 32768 * np.repeat(words & 1, 8, axis=1)
    codes = ((words & 0xFF) >> 1).astype(np.int32) - 64
    scale = d[:, None] * np.repeat(codes, 8, axis=1).astype(np.float32)
    return scale[:, :, None] * trellis_values(seeds, 4, offset)


_BLOCK_FNS = {"IQ1_KT": _blocks_iq1, "IQ2_KT": _blocks_iq2, "IQ3_KT": _blocks_iq3, "IQ4_KT": _blocks_iq4}


def _dequantizer(name: str):
    block_fn = _BLOCK_FNS[name]

    def dequantize(rows: np.ndarray, n_per_row: int) -> np.ndarray:
        d, blocks, nb = _check(name, rows, n_per_row)
        flat = blocks.reshape(-1, BLOCK_BYTES[name])
        d_per_block = np.repeat(d, nb)
        out = np.empty((flat.shape[0], QK_K), dtype=np.float32)
        for start in range(0, flat.shape[0], _CHUNK_BLOCKS):
            stop = start + _CHUNK_BLOCKS
            out[start:stop] = block_fn(flat[start:stop], d_per_block[start:stop]).reshape(-1, QK_K)
        return out.reshape(rows.shape[0], n_per_row)

    dequantize.__name__ = f"dequantize_{name.lower()}"
    dequantize.__doc__ = f"{name} rows (float32 row scale + super-blocks) -> float32 [n_rows, n_per_row]."
    return dequantize


DEQUANTIZERS = {name: _dequantizer(name) for name in _BLOCK_FNS}
