"""Read GGUF files: header, metadata, tensor infos, and tensor data as mmap views.

`GGUFFile(path)` opens one file or a whole split set
(`name-00001-of-00005.gguf`: pass any part, the others are found beside it).
Nothing but the header is read at open; `tensor_bytes(name)` returns a
zero-copy uint8 view of the mapped file. A tensor whose type id is unknown
is only an error when its data is asked for.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GGUFError, UnsupportedTypeError
from .constants import (
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_VERSIONS,
    KEY_ALIGNMENT,
    KEY_SPLIT_COUNT,
    KEY_SPLIT_NO,
    SCALAR_DTYPES,
    SCALAR_FORMATS,
    ItemType,
    ValueType,
)
from .types import ggml_type, ggml_type_name

SPLIT_NAME = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_path(prefix: str | os.PathLike, no: int, count: int) -> Path:
    """The path of part `no` (1-based) of a `count`-part split set, as llama.cpp names it."""
    return Path(f"{os.fspath(prefix)}-{no:05d}-of-{count:05d}.gguf")


@dataclass
class TensorInfo:
    """One tensor of a GGUF file. `shape` is in ggml order: shape[0] is the row length."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int  # absolute byte offset in its file
    nbytes: int | None  # None when the type id is unknown
    file_index: int = 0

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.type_id)

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class _Cursor:
    """Sequential little-endian decoding over a mapped file, with truncation checks."""

    def __init__(self, buf: mmap.mmap | bytes, path: Path):
        self.buf = buf
        self.pos = 0
        self.path = path
        self.size = len(buf)

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(
                f"{self.path}: truncated GGUF header (reading {what} at byte {self.pos}, file has "
                f"{self.size} bytes); the file is incomplete or corrupt: download or convert it again"
            )

    def scalar(self, vtype: ValueType, what: str = "a value") -> Any:
        fmt = "<" + SCALAR_FORMATS[vtype]
        n = struct.calcsize(fmt)
        self._need(n, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return self.scalar(ValueType.UINT32, what)

    def u64(self, what: str) -> int:
        return self.scalar(ValueType.UINT64, what)

    def string(self, what: str) -> str:
        n = self.u64(what + " length")
        self._need(n, what)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def array(self, what: str) -> tuple[list, ItemType]:
        item_type = self._value_type(what + " item type")
        count = self.u64(what + " length")
        if item_type in SCALAR_DTYPES:
            dtype = np.dtype(SCALAR_DTYPES[item_type])
            self._need(count * dtype.itemsize, what)
            values = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).tolist()
            self.pos += count * dtype.itemsize
            return values, item_type
        if item_type == ValueType.STRING:
            return [self.string(what) for _ in range(count)], item_type
        # arrays of arrays: the item type is (ARRAY, type of the inner items)
        values, inner = [], ValueType.INT32
        for _ in range(count):
            v, inner = self.value(item_type, what)
            values.append(v)
        return values, (ValueType.ARRAY, inner)

    def _value_type(self, what: str) -> ValueType:
        raw = self.u32(what)
        try:
            return ValueType(raw)
        except ValueError:
            raise GGUFError(
                f"{self.path}: unknown metadata value type {raw} ({what}); the file is corrupt or "
                "from a newer GGUF version"
            ) from None

    def value(self, vtype: ValueType, what: str) -> tuple[Any, ItemType | None]:
        """A value and, for arrays, the type of its items."""
        if vtype == ValueType.STRING:
            return self.string(what), None
        if vtype == ValueType.ARRAY:
            return self.array(what)
        return self.scalar(vtype, what), None


@dataclass
class _Part:
    path: Path
    mm: mmap.mmap | None
    size: int


class GGUFFile:
    """An opened GGUF model: one file or all parts of a split set.

    Attributes:
        path: the path given (for a split set, its first part).
        version: GGUF version of the (first) file.
        metadata: key -> Python value (str, int, float, bool, or list of those / of lists).
        value_types: key -> (ValueType, item type or None), to write values back unchanged; the
            item type of an array of arrays is (ValueType.ARRAY, item type of the inner arrays).
        tensors: name -> TensorInfo, in file order.
        alignment: the data alignment in bytes.
    """

    def __init__(self, path: str | os.PathLike):
        given = Path(path)
        self._parts: list[_Part] = []
        self.metadata: dict[str, Any] = {}
        self.value_types: dict[str, tuple[ValueType, ItemType | None]] = {}
        self.tensors: dict[str, TensorInfo] = {}
        paths = self._split_paths(given)
        self.path = paths[0]
        try:
            for index, part_path in enumerate(paths):
                self._read_part(part_path, index, first=index == 0)
        except BaseException:
            self.close()
            raise
        self._check_split(paths)

    # ----- opening -----

    @staticmethod
    def _split_paths(given: Path) -> list[Path]:
        m = SPLIT_NAME.match(given.name)
        if not m:
            return [given]
        count = int(m.group("count"))
        prefix = given.with_name(m.group("prefix"))
        paths = [split_path(prefix, i, count) for i in range(1, count + 1)]
        missing = [p for p in paths if not p.exists()]
        if missing and given.exists():
            raise GGUFError(
                f"{missing[0]}: split file missing ({len(missing)} of {count} parts of "
                f"{paths[0].name} are absent); put all {count} parts in {given.parent}"
            )
        return paths

    def _read_part(self, path: Path, index: int, first: bool) -> None:
        if not path.exists():
            raise GGUFError(f"{path}: no such file; check the path (and for a split model, give its first part)")
        if path.is_dir():
            raise GGUFError(f"{path}: is a directory, not a GGUF file; give the path of the .gguf file")
        size = path.stat().st_size
        if size < 4:
            raise GGUFError(f"{path}: not a GGUF file (only {size} bytes); give a .gguf model file")
        with open(path, "rb") as fh:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        part = _Part(path, mm, size)
        self._parts.append(part)
        cur = _Cursor(mm, path)
        magic = bytes(mm[:4])
        if magic != GGUF_MAGIC:
            raise GGUFError(
                f"{path}: not a GGUF file (starts with {magic!r}, expected b'GGUF'); "
                "convert the model with `kiln convert` first"
            )
        cur.pos = 4
        version = cur.u32("version")
        if version not in GGUF_VERSIONS:
            raise GGUFError(
                f"{path}: GGUF version {version} is not supported (kiln reads versions 2 and 3); "
                "re-convert the model with a current converter"
            )
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("metadata count")
        if n_tensors > size or n_kv > size:
            raise GGUFError(f"{path}: corrupt GGUF header ({n_tensors} tensors, {n_kv} keys); download it again")
        metadata: dict[str, Any] = {}
        types: dict[str, tuple[ValueType, ItemType | None]] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            vtype = cur._value_type(f"type of {key}")
            value, item_type = cur.value(vtype, key)
            metadata[key] = value
            types[key] = (vtype, item_type)
        alignment = metadata.get(KEY_ALIGNMENT, GGUF_DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFError(f"{path}: general.alignment = {alignment!r} is not a power of two; the file is corrupt")
        infos = []
        for i in range(n_tensors):
            name = cur.string(f"name of tensor #{i}")
            n_dims = cur.u32(f"dimension count of {name}")
            if n_dims > 8:
                raise GGUFError(f"{path}: tensor {name} has {n_dims} dimensions; the file is corrupt")
            shape = tuple(cur.u64(f"shape of {name}") for _ in range(n_dims))
            type_id = cur.u32(f"type of {name}")
            offset = cur.u64(f"offset of {name}")
            infos.append((name, shape, type_id, offset))
        data_start = -(-cur.pos // alignment) * alignment
        for name, shape, type_id, offset in infos:
            if name in self.tensors:
                raise GGUFError(f"{path}: tensor {name} appears twice; the file is corrupt")
            t = ggml_type(type_id)
            nbytes = t.tensor_bytes(shape) if t else None
            info = TensorInfo(name, shape, type_id, data_start + offset, nbytes, index)
            if nbytes is not None and info.offset + nbytes > size:
                raise GGUFError(
                    f"{path}: data of tensor {name} ({nbytes} bytes at offset {info.offset}) runs past "
                    f"the end of the file ({size} bytes); the file is truncated: download it again"
                )
            self.tensors[name] = info
        if first:
            self.version = version
            self.metadata = metadata
            self.value_types = types
            self.alignment = alignment
        else:
            self._check_part_number(path, metadata, index)

    def _check_part_number(self, path: Path, metadata: dict[str, Any], index: int) -> None:
        no = metadata.get(KEY_SPLIT_NO)
        if no is not None and no != index:
            raise GGUFError(f"{path}: split.no is {no}, expected {index}; the split set is mixed up")

    def _check_split(self, paths: list[Path]) -> None:
        count = self.metadata.get(KEY_SPLIT_COUNT)
        if not count:  # absent, or 0 as in files merged by llama-gguf-split
            return
        if count != len(paths):
            raise GGUFError(
                f"{self.path}: split.count says {count} parts but {len(paths)} were found "
                f"({', '.join(p.name for p in paths)}); name the parts NAME-0000i-of-{count:05d}.gguf"
            )

    # ----- access -----

    @property
    def paths(self) -> list[Path]:
        return [p.path for p in self._parts]

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFError(f"{self.path}: no tensor named {name}") from None

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The raw bytes of a tensor as a read-only uint8 view of the mapped file (no copy)."""
        info = self.tensor(name)
        if info.nbytes is None:
            raise UnsupportedTypeError(
                f"unknown type id {info.type_id} in tensor {name} of {self._parts[info.file_index].path}; "
                "this file needs a newer kiln"
            )
        part = self._parts[info.file_index]
        if part.mm is None:
            raise GGUFError(f"{part.path}: file already closed")
        return np.frombuffer(part.mm, dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def close(self) -> None:
        for part in self._parts:
            if part.mm is not None:
                try:
                    part.mm.close()
                except BufferError:
                    pass  # views still alive: the map is released when they are
                part.mm = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, {len(self.tensors)} tensors, {len(self.metadata)} keys)"
