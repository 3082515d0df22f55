"""Write GGUF files by streaming: metadata first, then each tensor's bytes one by one.

Tensors are registered with their shape, type and a `source` (bytes, an array,
or a function returning one, or returning an iterator of pieces, e.g. one expert
at a time) that is read only when that tensor's turn comes,
so a whole model never has to be in memory. The file is written to a temporary
name beside the target and renamed when complete: a failure leaves no
half-written file.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import GGUFError
from .constants import (
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    KEY_ALIGNMENT,
    SCALAR_DTYPES,
    SCALAR_FORMATS,
    ItemType,
    ValueType,
)
from .types import ggml_type, ggml_type_name

TensorSource = Union[bytes, bytearray, memoryview, np.ndarray, Callable[[], Any]]


def infer_value_type(value: Any) -> ValueType:
    """The GGUF type a Python value is written as when no type is given."""
    if isinstance(value, bool):
        return ValueType.BOOL
    if isinstance(value, (int, np.integer)):
        return ValueType.INT32 if -(2**31) <= int(value) < 2**31 else ValueType.INT64
    if isinstance(value, (float, np.floating)):
        return ValueType.FLOAT32
    if isinstance(value, str):
        return ValueType.STRING
    if isinstance(value, (list, tuple, np.ndarray)):
        return ValueType.ARRAY
    raise GGUFError(f"cannot store a {type(value).__name__} as GGUF metadata")


@dataclass
class _PendingTensor:
    name: str
    shape: tuple[int, ...]
    type_id: int
    nbytes: int
    source: TensorSource


class GGUFWriter:
    """Streaming GGUF v3 writer.

    >>> with GGUFWriter("out.gguf") as w:
    ...     w.add("general.architecture", "llama")
    ...     w.add("llama.context_length", 2048, ValueType.UINT32)
    ...     w.add_tensor("output_norm.weight", (576,), 0, lambda: np.ones(576, np.float32))
    """

    def __init__(self, path: str | os.PathLike, alignment: int = GGUF_DEFAULT_ALIGNMENT):
        self.path = Path(path)
        self.alignment = alignment
        self._kv: dict[str, tuple[Any, ValueType, ItemType | None]] = {}
        self._tensors: dict[str, _PendingTensor] = {}
        if alignment != GGUF_DEFAULT_ALIGNMENT:
            self.add(KEY_ALIGNMENT, alignment, ValueType.UINT32)

    # ----- registration -----

    def add(self, key: str, value: Any, vtype: ValueType | None = None, item_type: ItemType | None = None) -> None:
        """Set a metadata key. Without `vtype` the type is inferred (int -> INT32, float -> FLOAT32)."""
        vtype = infer_value_type(value) if vtype is None else ValueType(vtype)
        if vtype == ValueType.ARRAY:
            value = list(value.tolist() if isinstance(value, np.ndarray) else value)
            if item_type is None:
                item_type = _infer_item_type(value)
        self._kv[key] = (value, vtype, item_type)

    def add_tensor(self, name: str, shape: tuple[int, ...], type_id: int, source: TensorSource) -> None:
        """Register a tensor; `shape` in ggml order (row length first). Data is read at write time."""
        if name in self._tensors:
            raise GGUFError(f"tensor {name} added twice to {self.path}")
        t = ggml_type(type_id)
        if t is None:
            raise GGUFError(f"cannot write tensor {name}: unknown type id {type_id}")
        if shape and shape[0] % t.block_size:
            raise GGUFError(
                f"cannot write tensor {name}: row size {shape[0]} is not divisible by the block size "
                f"{t.block_size} of {t.name}; choose another type for it"
            )
        self._tensors[name] = _PendingTensor(name, tuple(int(d) for d in shape), type_id, t.tensor_bytes(shape), source)

    # ----- output -----

    def write(self) -> None:
        """Write the file (header, then each tensor in registration order), atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".part", dir=self.path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make every model file private
        try:
            with os.fdopen(fd, "wb") as fh:
                self._write_header(fh)
                for t in self._tensors.values():
                    self._write_tensor(fh, t)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def __enter__(self) -> GGUFWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.write()

    def planned_size(self) -> int:
        """The size in bytes of the file `write()` will produce, without writing anything."""
        return len(self._header_bytes()) + sum(_padded(t.nbytes, self.alignment) for t in self._tensors.values())

    def _write_header(self, fh) -> None:
        fh.write(self._header_bytes())

    def _header_bytes(self) -> bytes:
        out = bytearray()
        out += GGUF_MAGIC
        out += struct.pack("<IQQ", 3, len(self._tensors), len(self._kv))
        for key, (value, vtype, item_type) in self._kv.items():
            out += _pack_string(key)
            out += struct.pack("<I", vtype)
            out += _pack_value(key, value, vtype, item_type)
        offset = 0
        for t in self._tensors.values():
            out += _pack_string(t.name)
            out += struct.pack("<I", len(t.shape))
            out += struct.pack(f"<{len(t.shape)}Q", *t.shape)
            out += struct.pack("<IQ", t.type_id, offset)
            offset += _padded(t.nbytes, self.alignment)
        out += b"\0" * (_padded(len(out), self.alignment) - len(out))
        return bytes(out)

    def _write_tensor(self, fh, t: _PendingTensor) -> None:
        data = t.source() if callable(t.source) else t.source
        pieces = data if isinstance(data, Iterator) else (data,)
        written = 0
        for piece in pieces:
            buf = _as_bytes(piece)
            written += buf.nbytes
            if written > t.nbytes:
                break
            fh.write(buf)
        if written != t.nbytes:
            raise GGUFError(
                f"tensor {t.name}: got {'more than ' if written > t.nbytes else ''}"
                f"{min(written, t.nbytes) if written > t.nbytes else written} bytes of data, "
                f"a {ggml_type_name(t.type_id)} tensor of shape {list(t.shape)} takes {t.nbytes}"
            )
        fh.write(b"\0" * (_padded(t.nbytes, self.alignment) - t.nbytes))


def _as_bytes(data) -> memoryview:
    if hasattr(data, "detach"):  # a torch tensor
        data = data.detach().cpu().contiguous().numpy()
    return memoryview(np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data).cast("B")


def _infer_item_type(values: list) -> ItemType:
    if not values:
        return ValueType.INT32
    first = values[0]
    if isinstance(first, (list, tuple, np.ndarray)):
        return (ValueType.ARRAY, _infer_item_type(list(first)))
    if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
        big = any(not -(2**31) <= int(v) < 2**31 for v in values)
        return ValueType.INT64 if big else ValueType.INT32
    return infer_value_type(first)


def _padded(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _pack_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _pack_value(key: str, value: Any, vtype: ValueType, item_type: ItemType | None) -> bytes:
    try:
        if vtype == ValueType.STRING:
            return _pack_string(value)
        if vtype == ValueType.ARRAY:
            if isinstance(item_type, tuple):  # arrays of arrays
                head = struct.pack("<IQ", ValueType.ARRAY, len(value))
                return head + b"".join(_pack_value(key, v, ValueType.ARRAY, item_type[1]) for v in value)
            head = struct.pack("<IQ", item_type, len(value))
            if item_type in SCALAR_DTYPES:
                return head + np.asarray(value, dtype=SCALAR_DTYPES[item_type]).tobytes()
            if item_type == ValueType.STRING:
                return head + b"".join(_pack_string(v) for v in value)
            raise GGUFError(f"metadata key {key}: bad array item type {item_type!r}")
        return struct.pack("<" + SCALAR_FORMATS[vtype], value)
    except (struct.error, TypeError, ValueError, OverflowError) as e:
        raise GGUFError(f"metadata key {key}: cannot store {value!r} as {vtype.name}: {e}") from None


def copy_metadata(writer: GGUFWriter, metadata: dict[str, Any], value_types: dict, skip=()) -> None:
    """Copy the metadata of a read file into a writer, keeping every value's type."""
    for key, value in metadata.items():
        if key in skip:
            continue
        vtype, item_type = value_types[key]
        writer.add(key, value, vtype, item_type)
