"""The quant type registry: every ggml type id with its geometry and what kiln can do with it.

`quant_type(id_or_name)` gives a `QuantType`; `dequantize(type, raw, shape)`
turns a tensor's raw bytes into float32 values; `quantize(type, x, imatrix)` turns
float values into a tensor's bytes; `repack(raw, shape, from_type, to_type)` moves
a tensor between a plain type and its row-interleaved `_R4`/`_R8` variant. Types
that kiln cannot compute with are known (their sizes are) but raise
`UnsupportedTypeError` when used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import QuantizeError, UnsupportedTypeError
from ..gguf.types import GGML_TYPES, GGML_TYPES_BY_NAME, GGMLType
from . import (
    floats,
    interleaved,
    iq2_quantize,
    iq3_quantize,
    iqk,
    iqk_k_quantize,
    iqk_ks_quantize,
    iquants,
    kquants,
    kquants_quantize,
    legacy,
    legacy_quantize,
    trellis,
    trellis_quantize,
)

FAMILIES = (floats, legacy, kquants, iquants, iqk, trellis, interleaved)
QUANTIZER_MODULES = (
    floats,
    legacy_quantize,
    kquants_quantize,
    iq2_quantize,
    iq3_quantize,
    iqk_k_quantize,
    iqk_ks_quantize,
    trellis_quantize,
)

# A dequantizer takes a tensor's bytes as rows, uint8 [n_rows, row_bytes] (row metadata
# included), and the values per row; it returns the n_rows * n_per_row float32 values in
# row-major order (any shape). Each family module has a DEQUANTIZERS table by type name.
Dequantizer = Callable[[np.ndarray, int], np.ndarray]

_DEQUANTIZERS: dict[str, Dequantizer] = {}
for _family in FAMILIES:
    _DEQUANTIZERS.update(_family.DEQUANTIZERS)

# A quantizer takes float32 rows [n_rows, n_per_row] and the importance weights of one row
# (float32 [n_per_row]) or None, with keyword `name` (the tensor, for messages); it returns
# uint8 [n_rows, row_bytes]. Its compiled kernels release the GIL, so `quantize` runs row
# ranges of one tensor in threads.
Quantizer = Callable[..., np.ndarray]

_QUANTIZERS: dict[str, Quantizer] = {}
for _module in QUANTIZER_MODULES:
    _QUANTIZERS.update(_module.QUANTIZERS)

# Types whose quantization ggml refuses without importance weights (ggml.c:
# ggml_quantize_requires_imatrix); their _R4 forms are quantized through them.
REQUIRES_IMATRIX = frozenset({"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_XXS_R4", "IQ2_XS_R4", "IQ1_S_R4"})


@dataclass(frozen=True)
class QuantType:
    """A ggml type and the operations kiln has for it."""

    geometry: GGMLType
    dequantizer: Dequantizer | None
    quantizer: Quantizer | None = None

    @property
    def id(self) -> int:
        return self.geometry.id

    @property
    def name(self) -> str:
        return self.geometry.name

    @property
    def block_size(self) -> int:
        return self.geometry.block_size

    @property
    def type_size(self) -> int:
        return self.geometry.type_size

    @property
    def can_dequantize(self) -> bool:
        return self.dequantizer is not None

    @property
    def can_quantize(self) -> bool:
        return self.quantizer is not None or self.repacked_from is not None

    @property
    def repacked_from(self) -> str | None:
        """The plain type this row-interleaved type is quantized through (None otherwise)."""
        if self.quantizer is not None or self.name not in interleaved.LAYOUTS:
            return None
        plain = interleaved.plain_type(self.name)
        return plain if plain in _QUANTIZERS else None

    def bits_per_weight(self) -> float:
        return 8.0 * self.type_size / self.block_size


QUANT_TYPES: dict[int, QuantType] = {
    t.id: QuantType(t, _DEQUANTIZERS.get(t.name), _QUANTIZERS.get(t.name)) for t in GGML_TYPES.values()
}


def quant_type(key: int | str) -> QuantType:
    """The registry entry for a type id or name (case-insensitive)."""
    if isinstance(key, str):
        g = GGML_TYPES_BY_NAME.get(key.upper())
        if g is None:
            raise UnsupportedTypeError(f"unknown tensor type {key!r}; known types: {', '.join(GGML_TYPES_BY_NAME)}")
        return QUANT_TYPES[g.id]
    t = QUANT_TYPES.get(int(key))
    if t is None:
        raise UnsupportedTypeError(f"unknown type id {key}; this file needs a newer kiln")
    return t


def dequantize(type_key: int | str, raw: np.ndarray, shape: tuple[int, ...], tensor_name: str = "") -> np.ndarray:
    """Dequantize a tensor's raw bytes to float32.

    `shape` is in ggml order (row length first); the result has the reversed
    (numpy/torch) order, so a ggml (in, out) weight comes back as [out, in].
    """
    t = quant_type(type_key)
    where = f" in tensor {tensor_name}" if tensor_name else ""
    if t.dequantizer is None:
        raise UnsupportedTypeError(
            f"tensor type {t.name}{where} cannot be dequantized by this version of kiln; "
            "requantize the tensor to a supported type"
        )
    n = 1
    for d in shape:
        n *= d
    row_len = shape[0] if shape else 1
    _check_row_length(t, row_len, where)
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
    expected = t.geometry.tensor_bytes(tuple(shape))
    if raw.size != expected:
        raise UnsupportedTypeError(f"{t.name}{where}: {raw.size} bytes given, shape {list(shape)} needs {expected}")
    n_rows = n // row_len if row_len else 1
    rows = raw.reshape(n_rows, -1)
    out = t.dequantizer(rows, row_len)
    return np.ascontiguousarray(out, dtype=np.float32).reshape(tuple(reversed(shape)) if shape else ())


def _check_row_length(t: QuantType, row_len: int, where: str) -> None:
    if row_len % t.block_size:
        raise UnsupportedTypeError(
            f"row size {row_len} not divisible by block size {t.block_size} for {t.name}{where}; "
            f"a {t.name} row holds whole blocks of {t.block_size} values: keep this tensor in a type "
            "with smaller blocks (Q8_0, Q6_0, IQ4_NL, Q5_0, Q4_0 use 32) or in F16"
        )


def _row_group(t: QuantType) -> int:
    return interleaved.rows_per_group(t.name) if t.name in interleaved.LAYOUTS else 1


def _guard_zero_blocks(w: np.ndarray) -> np.ndarray:
    """Importance weights of one row with no all-zero 32-column block.

    An expert that no token reached while the imatrix was made has zero importance; several
    of ggml's searches then divide 0 by 0 and write NaN scales (or stop). kiln gives such
    blocks a weight a million times below the row's mean, which leaves every weighted
    error as it was while keeping the searches defined; an all-zero row becomes uniform."""
    if w.size % 32 or not (w.reshape(-1, 32) == 0).all(axis=1).any():
        return w
    positive = w[w > 0]
    tiny = np.float32(positive.mean() * 1e-6) if positive.size else np.float32(1.0)
    blocks = w.reshape(-1, 32).copy()
    blocks[(blocks == 0).all(axis=1)] = tiny
    return blocks.reshape(-1)


def _imatrix_per_matrix(imatrix: np.ndarray | None, n_mat: int, row_len: int, where: str) -> list:
    if imatrix is None:
        return [None] * n_mat
    w = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
    if w.size == row_len:
        return [_guard_zero_blocks(w)] * n_mat
    if w.size == n_mat * row_len:
        return [_guard_zero_blocks(row) for row in w.reshape(n_mat, row_len)]
    raise QuantizeError(
        f"imatrix{where} has {w.size} values, the tensor needs {row_len} per matrix "
        f"({n_mat} matrices); the imatrix was made for another model"
    )


def quantize(
    type_key: int | str,
    x: np.ndarray,
    imatrix: np.ndarray | None = None,
    tensor_name: str = "",
    n_threads: int | None = None,
) -> np.ndarray:
    """Quantize float values to a tensor's bytes (uint8, flat, in file order).

    `x` is in numpy order: rows last, e.g. [out, in] for a 2D weight or
    [n_expert, out, in] for a 3D expert tensor. `imatrix` holds one importance
    weight per column ([in]), or one row of them per matrix ([n_expert * in]),
    as llama-imatrix stores them. Rows are spread over `n_threads` threads
    (default: all cores).
    """
    t = quant_type(type_key)
    where = f" in tensor {tensor_name}" if tensor_name else ""
    name = tensor_name or "tensor"
    x = np.asarray(x)
    if x.ndim == 0 or x.size == 0:
        raise QuantizeError(f"nothing to quantize{where}: shape {list(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise QuantizeError(f"cannot quantize {x.dtype} values{where}; give float32, float16 or bfloat16 values")
    row_len = x.shape[-1]
    _check_row_length(t, row_len, where)
    if not t.can_quantize:
        raise UnsupportedTypeError(f"kiln cannot quantize to {t.name}{where}; choose another type")
    if imatrix is None and t.name in REQUIRES_IMATRIX:
        raise QuantizeError(
            f"{t.name}{where} needs an importance matrix (as in ik_llama.cpp: without one the result "
            "is garbage); make one with `kiln imatrix` or choose a type of more bits"
        )
    x3 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-2] if x.ndim > 1 else 1, row_len)
    n_mat, n_rows = x3.shape[0], x3.shape[1]
    group = _row_group(t)
    if n_rows % group:
        raise QuantizeError(
            f"{t.name}{where} interleaves {group} rows; {n_rows} rows is not a multiple of {group}: "
            f"use {interleaved.plain_type(t.name)} for this tensor"
        )
    if not np.isfinite(x3).all():
        raise QuantizeError(f"{tensor_name or 'the tensor'} holds NaN or Inf values; they cannot be quantized")
    weights = _imatrix_per_matrix(imatrix, n_mat, row_len, where)
    plain = t.repacked_from
    fn = t.quantizer if plain is None else _QUANTIZERS[plain]
    threads = max(1, n_threads or os.cpu_count() or 1)
    # chunks of whole interleave groups, at least a few per thread so the threads stay busy
    step = max(group, -(-n_rows // (4 * threads)) // group * group or group)

    def one_matrix(i: int) -> np.ndarray:
        m = x3[i]
        if threads == 1 or n_rows <= step:
            q = fn(m, weights[i], name=name)
        else:
            with ThreadPoolExecutor(threads) as pool:
                parts = list(pool.map(lambda r: fn(m[r : r + step], weights[i], name=name), range(0, n_rows, step)))
            q = np.concatenate(parts, axis=0)
        return interleaved.repack(t.name, q) if plain is not None else q

    out = np.concatenate([one_matrix(i).reshape(-1) for i in range(n_mat)])
    expected = t.geometry.tensor_bytes(tuple(reversed(x.shape)))
    if out.size != expected:
        raise QuantizeError(f"internal error quantizing{where} to {t.name}: {out.size} bytes, expected {expected}")
    return out


def repack(raw: np.ndarray, shape: tuple[int, ...], from_type: int | str, to_type: int | str, tensor_name: str = "") -> np.ndarray:
    """Move a tensor's bytes between a plain type and its row-interleaved variant
    (Q4_K <-> Q4_K_R4, ...), in either direction; `shape` is in ggml order."""
    src, dst = quant_type(from_type), quant_type(to_type)
    where = f" in tensor {tensor_name}" if tensor_name else ""
    if dst.name in interleaved.LAYOUTS and interleaved.plain_type(dst.name) == src.name:
        op, name = interleaved.repack, dst.name
    elif src.name in interleaved.LAYOUTS and interleaved.plain_type(src.name) == dst.name:
        op, name = interleaved.unpack, src.name
    else:
        raise UnsupportedTypeError(
            f"cannot repack {src.name} to {dst.name}{where}: repacking goes between a plain type "
            "and its _R4/_R8 variant (e.g. Q4_K <-> Q4_K_R4)"
        )
    row_len = shape[0] if shape else 1
    _check_row_length(src, row_len, where)
    _check_row_length(dst, row_len, where)
    n_rows = 1
    for d in shape[1:]:
        n_rows *= d
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
    expected = src.geometry.tensor_bytes(tuple(shape))
    if raw.size != expected:
        raise UnsupportedTypeError(f"{src.name}{where}: {raw.size} bytes given, shape {list(shape)} needs {expected}")
    group = interleaved.rows_per_group(name)
    rows_per_matrix = shape[1] if len(shape) > 1 else 1
    if rows_per_matrix % group:
        raise UnsupportedTypeError(
            f"{name}{where} interleaves {group} rows; the tensor has {rows_per_matrix} rows per matrix"
        )
    return op(name, raw.reshape(n_rows, -1)).reshape(-1)
