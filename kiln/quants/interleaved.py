"""Row-interleaved layouts (_R4, _R8): several rows' blocks stored side by side; repack to and
from the plain layout, and dequantize through it.

ik_llama.cpp stores R = 4 or 8 consecutive rows of a weight as one group: block `ib` of every
row of the group together, with the scales and bit planes of those R blocks regrouped so that
SIMD code reads all R rows at once. The facts of each layout are written down in the family
modules (interleaved_legacy, interleaved_kquants, interleaved_iquants, interleaved_iqk).

API (rows are uint8 arrays [n_rows, row_bytes], row_bytes including any per-row metadata):

- `repack(name, rows_plain)` -> rows of type `name` (an _R4/_R8 type) from rows of its plain
  type `plain_type(name)`;
- `unpack(name, rows_interleaved)` -> rows of the plain type;
- `DEQUANTIZERS[name](rows, n_per_row)` -> float32 values, row-major.

Both are lossless byte shuffles except where a layout note says otherwise (`note(name)`):
Q8_K_R8 (f16 scale), Q8_KV_R8 (row sum dropped), IQ1_S_R4 and IQ1_M_R4 (one scale per row;
not repacks in ik_llama.cpp, converted here only when the values are representable).
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedTypeError
from ..gguf.types import GGML_TYPES_BY_NAME, GGMLType
from . import interleaved_iqk, interleaved_iquants, interleaved_kquants, interleaved_legacy
from .interleaved_common import Layout

LAYOUTS: dict[str, Layout] = {
    lay.name: lay
    for mod in (interleaved_legacy, interleaved_kquants, interleaved_iquants, interleaved_iqk)
    for lay in mod.LAYOUTS
}


def _layout(name: str) -> Layout:
    lay = LAYOUTS.get(str(name).upper())
    if lay is None:
        raise UnsupportedTypeError(
            f"{name!r} is not a row-interleaved type kiln can repack; known: {', '.join(LAYOUTS)}"
        )
    return lay


def plain_type(name: str) -> str:
    """The plain type an interleaved type repacks from (Q4_K for Q4_K_R4)."""
    return _layout(name).plain


def rows_per_group(name: str) -> int:
    """How many consecutive rows one interleaved group holds (4 or 8)."""
    return _layout(name).rows


def note(name: str) -> str:
    """Where repack/unpack of this type is not a lossless byte shuffle; empty when it is."""
    return _layout(name).note


def _as_rows(name: str, rows: np.ndarray) -> np.ndarray:
    a = np.asarray(rows)
    if a.ndim != 2:
        raise UnsupportedTypeError(f"{name}: rows must be a 2-D uint8 array [n_rows, row_bytes], got shape {a.shape}")
    if a.dtype != np.uint8:
        raise UnsupportedTypeError(f"{name}: rows must be uint8 bytes, got {a.dtype}")
    return np.ascontiguousarray(a)


def _n_per_row(lay: Layout, geo: GGMLType, row_bytes: int) -> int:
    """Values per row from the byte length of a row of type `geo`."""
    data = row_bytes - geo.row_meta_size
    if data <= 0 or data % geo.type_size:
        raise UnsupportedTypeError(
            f"{lay.name}: a row of {row_bytes} bytes is not a whole number of {geo.name} blocks "
            f"({geo.row_meta_size} + k*{geo.type_size} bytes)"
        )
    n = data // geo.type_size * geo.block_size
    for t in (lay.name, lay.plain):
        bs = GGML_TYPES_BY_NAME[t].block_size
        if n % bs:
            raise UnsupportedTypeError(f"{lay.name}: row size {n} not divisible by block size {bs} of {t}")
    return n


def _check_group(lay: Layout, n_rows: int) -> None:
    if n_rows % lay.rows:
        raise UnsupportedTypeError(
            f"{lay.name} interleaves {lay.rows} rows; {n_rows} rows is not a multiple of {lay.rows}"
        )


def repack(name: str, rows_plain: np.ndarray) -> np.ndarray:
    """Rows of the plain type -> rows of the interleaved type `name` (same row count)."""
    lay = _layout(name)
    rows = _as_rows(lay.name, rows_plain)
    n = _n_per_row(lay, GGML_TYPES_BY_NAME[lay.plain], rows.shape[1])
    _check_group(lay, rows.shape[0])
    y = lay.to_r(rows.reshape(-1, lay.rows, rows.shape[1]), n)
    return y.reshape(rows.shape[0], GGML_TYPES_BY_NAME[lay.name].row_bytes(n))


def unpack(name: str, rows_interleaved: np.ndarray) -> np.ndarray:
    """Rows of the interleaved type `name` -> rows of its plain type (same row count)."""
    lay = _layout(name)
    rows = _as_rows(lay.name, rows_interleaved)
    n = _n_per_row(lay, GGML_TYPES_BY_NAME[lay.name], rows.shape[1])
    _check_group(lay, rows.shape[0])
    p = lay.from_r(rows.reshape(-1, lay.rows * rows.shape[1]), n)
    return p.reshape(rows.shape[0], GGML_TYPES_BY_NAME[lay.plain].row_bytes(n))


def _make_dequantizer(lay: Layout):
    geo = GGML_TYPES_BY_NAME[lay.name]

    def dequantize(rows: np.ndarray, n_per_row: int) -> np.ndarray:
        rows = _as_rows(lay.name, rows)
        if n_per_row <= 0 or n_per_row % geo.block_size:
            raise UnsupportedTypeError(f"row size {n_per_row} not divisible by block size {geo.block_size} for {lay.name}")
        if rows.shape[1] != geo.row_bytes(n_per_row):
            raise UnsupportedTypeError(
                f"{lay.name}: rows of {rows.shape[1]} bytes given, {n_per_row} values per row need "
                f"{geo.row_bytes(n_per_row)}"
            )
        _check_group(lay, rows.shape[0])
        groups = rows.reshape(-1, lay.rows * rows.shape[1])
        if lay.direct is not None:
            return lay.direct(groups, n_per_row).reshape(-1)
        from .registry import quant_type  # registry imports this module

        plain = quant_type(lay.plain)
        if plain.dequantizer is None:
            raise UnsupportedTypeError(
                f"{lay.name} is dequantized through {lay.plain}, which this version of kiln cannot dequantize yet"
            )
        n_plain = GGML_TYPES_BY_NAME[lay.plain].block_size
        if n_per_row % n_plain:
            raise UnsupportedTypeError(f"{lay.name}: row size {n_per_row} not divisible by block size {n_plain} of {lay.plain}")
        p = lay.from_r(groups, n_per_row).reshape(rows.shape[0], -1)
        return plain.dequantizer(p, n_per_row)

    dequantize.__name__ = f"dequantize_{lay.name.lower()}"
    return dequantize


DEQUANTIZERS = {name: _make_dequantizer(lay) for name, lay in LAYOUTS.items()}
