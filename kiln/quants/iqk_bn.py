"""IQ1_BN and IQ2_BN: ternary weights (BitNet b1.58, TriLM) in 64-value blocks, with one
row scale `d` at the start of each row (f16 for IQ1_BN, f32 for IQ2_BN). Value = d * t for
a ternary digit t in -1, 0, 1.

Facts from ik_llama.cpp (ggml-common.h: block_iq1_bn, block_iq2_bn; iqk_quantize.cpp:
quantize_one_row_1bn/2bn, dequantize_row_iq1_bn/iq2_bn; ggml-cuda/convert.cu):

- IQ1_BN (ql[12], extra): for each 16 values i16, bytes ql[3*i16 + k] hold values
  16*i16 + 5k + j (j < 5), `extra` holds value 16*i16 + 15 as its digit i16. Digit j of a
  byte q: v = (q * K_MULT[j]) mod 256, t = ((v + (v >> 1)) >> 7) - 1.
- IQ2_BN (qs[16]): value 16l + j is bits 2l of qs[j], minus 1.

The scaled values are what ik_llama.cpp's matrix multiplications and its CUDA dequantizer
compute. Its CPU `to_float` for these two types (used by llama-quantize to requantize to
F32, hence the golden set's figures) instead reads the blocks from the row's first byte,
over the row scale, and does not apply the scale; `dequantize_like_ik_cpu` reproduces that
bit for bit, only to check the bit layout against those figures.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedTypeError
from ..gguf.types import GGML_TYPES_BY_NAME
from .iqk_common import fields, row_scale, split_rows
from .iqk_tables import IQ1BN_DIGITS


def _iq1_digits(b: np.ndarray) -> np.ndarray:
    """Ternary digits of IQ1_BN blocks [n, 13] -> [n, 64] int8."""
    n = len(b)
    main = IQ1BN_DIGITS[b[:, :12].reshape(n, 4, 3)].reshape(n, 4, 15)
    last = IQ1BN_DIGITS[b[:, 12], :4][:, :, None]
    return np.concatenate([main, last], axis=2).reshape(n, 64)


def _iq2_digits(b: np.ndarray) -> np.ndarray:
    """Digits minus one of IQ2_BN blocks [n, 16] -> [n, 64] int8 (-1..2)."""
    return fields(b, 2, inner=False).reshape(len(b), 64).astype(np.int8) - 1


def dequantize_iq1_bn(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    meta, b = split_rows(rows, n_per_row, "IQ1_BN")
    d = row_scale(meta, "<f2", n_per_row, 64)
    with np.errstate(over="ignore", invalid="ignore"):
        return (d[:, None] * _iq1_digits(b).astype(np.float32)).reshape(-1)


def dequantize_iq2_bn(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    meta, b = split_rows(rows, n_per_row, "IQ2_BN")
    d = row_scale(meta, "<f4", n_per_row, 64)
    with np.errstate(over="ignore", invalid="ignore"):
        return (d[:, None] * _iq2_digits(b).astype(np.float32)).reshape(-1)


def dequantize_like_ik_cpu(name: str, rows: np.ndarray, n_per_row: int) -> np.ndarray:
    """ik_llama.cpp's CPU `to_float` of IQ1_BN/IQ2_BN rows: blocks read from each row's
    first byte (the row scale's bytes taken as block data, the row's last bytes unread),
    no scale applied."""
    if name not in ("IQ1_BN", "IQ2_BN"):
        raise UnsupportedTypeError(f"dequantize_like_ik_cpu is for IQ1_BN and IQ2_BN, not {name}")
    split_rows(rows, n_per_row, name)
    g = GGML_TYPES_BY_NAME[name]
    nb = n_per_row // g.block_size
    b = np.ascontiguousarray(rows[:, : nb * g.type_size]).reshape(-1, g.type_size)
    digits = _iq1_digits(b) if name == "IQ1_BN" else _iq2_digits(b)
    return digits.astype(np.float32).reshape(-1)


DEQUANTIZERS = {
    "IQ1_BN": dequantize_iq1_bn,
    "IQ2_BN": dequantize_iq2_bn,
}
