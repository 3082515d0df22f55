"""The quant type registry: every ggml type id with its geometry and what kiln can do with it.

`quant_type(id_or_name)` gives a `QuantType`; `dequantize(type, raw, shape)`
turns a tensor's raw bytes into float32 values. Types whose dequantization
kiln does not have yet are known (their sizes are) but raise
`UnsupportedTypeError` when used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedTypeError
from ..gguf.types import GGML_TYPES, GGML_TYPES_BY_NAME, GGMLType
from . import floats, interleaved, iqk, iquants, kquants, legacy, trellis

FAMILIES = (floats, legacy, kquants, iquants, iqk, trellis, interleaved)

# A dequantizer takes a tensor's bytes as rows, uint8 [n_rows, row_bytes] (row metadata
# included), and the values per row; it returns the n_rows * n_per_row float32 values in
# row-major order (any shape). Each family module has a DEQUANTIZERS table by type name.
Dequantizer = Callable[[np.ndarray, int], np.ndarray]

_DEQUANTIZERS: dict[str, Dequantizer] = {}
for _family in FAMILIES:
    _DEQUANTIZERS.update(_family.DEQUANTIZERS)


@dataclass(frozen=True)
class QuantType:
    """A ggml type and the operations kiln has for it."""

    geometry: GGMLType
    dequantizer: Dequantizer | None

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

    def bits_per_weight(self) -> float:
        return 8.0 * self.type_size / self.block_size


QUANT_TYPES: dict[int, QuantType] = {
    t.id: QuantType(t, _DEQUANTIZERS.get(t.name)) for t in GGML_TYPES.values()
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
    if row_len % t.block_size:
        raise UnsupportedTypeError(
            f"row size {row_len} not divisible by block size {t.block_size} for {t.name}{where}"
        )
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
    expected = t.geometry.tensor_bytes(tuple(shape))
    if raw.size != expected:
        raise UnsupportedTypeError(f"{t.name}{where}: {raw.size} bytes given, shape {list(shape)} needs {expected}")
    n_rows = n // row_len if row_len else 1
    rows = raw.reshape(n_rows, -1)
    out = t.dequantizer(rows, row_len)
    return np.ascontiguousarray(out, dtype=np.float32).reshape(tuple(reversed(shape)) if shape else ())
