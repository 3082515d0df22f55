"""Importance matrices in the legacy binary `.dat` format of llama-imatrix: read and write.

Layout (little-endian, int = int32), as ik_llama.cpp's examples/imatrix writes it:

    int n_entries
    n_entries times:
        int len; char name[len]          (no terminating zero)
        int ncall
        int nval; float values[nval]
    int last_call                        \\ optional trailer (every current
    int len; char dataset[len]           / writer adds it)

Each stored value is a column's sum of squared activations averaged over the times
the column was seen and scaled back to `ncall` calls. llama-quantize divides the values
by `ncall` (when positive) and uses the result as per-column weights, one value per
element of a row, repeated for every row; a 3D (expert) tensor has n_expert * n_per_row
values, one row-length slice per expert.

`read_imatrix_dat(path)` returns an `Imatrix`; `imatrix.weights(name)` gives what
llama-quantize feeds to the quantizer for that tensor. `write_imatrix_dat` writes the
format (with the trailer). The GGUF imatrix format, the accumulated sums behind both and
merging live in imatrix_gguf.py, imatrix_stats.py and imatrix_files.py.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import KilnError

GGUF_MAGIC = b"GGUF"
MAX_NAME = 1 << 16


@dataclass(frozen=True)
class ImatrixEntry:
    """One tensor's data: the stored values and the number of calls they cover."""

    values: np.ndarray  # float32, as stored in the file
    ncall: int

    @property
    def weights(self) -> np.ndarray:
        """values / ncall in float32 (values unchanged when ncall <= 0), as llama-quantize does."""
        if self.ncall > 0:
            return self.values / np.float32(self.ncall)
        return self.values.copy()


@dataclass
class Imatrix:
    """An importance matrix: entries by tensor name, the chunk count and the dataset name."""

    path: Path
    entries: dict[str, ImatrixEntry] = field(default_factory=dict)
    chunks: int = 0  # `last_call`: chunks the matrix was computed on (0 when the file has no trailer)
    dataset: str | None = None  # the text file it was computed on (None when the file has no trailer)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def ncall(self, name: str) -> int:
        return self.entries[name].ncall

    def weights(self, name: str) -> np.ndarray | None:
        """The per-column weights for tensor `name` (float32), or None when it has no entry."""
        entry = self.entries.get(name)
        return None if entry is None else entry.weights

    def as_weights(self) -> dict[str, np.ndarray]:
        """{tensor name: per-column weights}, for every entry."""
        return {name: e.weights for name, e in self.entries.items()}


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, problem: str) -> KilnError:
        return KilnError(f"{self.path}: not a valid legacy imatrix (.dat) file: {problem}")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(
                f"truncated at byte {self.pos} while reading {what} ({len(self.data)} bytes in the file)"
            )
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def i32(self, what: str) -> int:
        return struct.unpack("<i", self.take(4, what))[0]

    def left(self) -> int:
        return len(self.data) - self.pos


def read_imatrix_dat(path: str | os.PathLike) -> Imatrix:
    """Read a legacy `.dat` imatrix file; raise `KilnError` naming the file and the problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KilnError(f"{path}: cannot read the imatrix file: {e.strerror or e}") from None
    r = _Reader(data, path)
    if data[:4] == GGUF_MAGIC:
        raise r.fail("it is a GGUF file (the newer imatrix format); read it as GGUF instead")
    n_entries = r.i32("the entry count")
    if n_entries < 1:
        raise r.fail(f"entry count {n_entries} (needs at least 1)")
    # each entry takes at least 16 bytes: a cheap guard against garbage counts
    if n_entries > r.left() // 16:
        raise r.fail(f"entry count {n_entries} does not fit in {len(data)} bytes")
    out = Imatrix(path=path)
    for i in range(n_entries):
        what = f"entry {i + 1} of {n_entries}"
        n = r.i32(f"the name length of {what}")
        if not 0 < n <= MAX_NAME:
            raise r.fail(f"name length {n} of {what} is out of range")
        raw_name = r.take(n, f"the name of {what}")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise r.fail(f"the name of {what} is not UTF-8 text") from None
        ncall = r.i32(f"the call count of {what} ({name})")
        nval = r.i32(f"the value count of {what} ({name})")
        if nval < 1:
            raise r.fail(f"value count {nval} of {what} ({name}) (needs at least 1)")
        values = np.frombuffer(r.take(4 * nval, f"the {nval} values of {what} ({name})"), dtype="<f4").astype(
            np.float32
        )
        if not np.isfinite(values).all():
            raise r.fail(f"{what} ({name}) holds non-finite values")
        if name in out.entries:
            raise r.fail(f"tensor {name} appears twice")
        out.entries[name] = ImatrixEntry(values=values, ncall=ncall)
    if r.left():
        out.chunks = r.i32("the chunk count of the trailer")
        n = r.i32("the dataset name length of the trailer")
        if not 0 <= n <= r.left():
            raise r.fail(f"dataset name length {n} at byte {r.pos - 4} does not fit in the file")
        out.dataset = r.take(n, "the dataset name").decode("utf-8", errors="replace")
        if r.left():
            raise r.fail(f"{r.left()} unexpected bytes after the dataset name")
    return out


def write_imatrix_dat(
    path: str | os.PathLike, entries: Iterable[tuple[str, int, np.ndarray]], chunks: int, dataset: str
) -> None:
    """Write a legacy `.dat` file: (name, ncall, values) per entry, then the trailer (chunk
    count, dataset name). Written to a temporary file renamed at the end."""
    out = bytearray()
    n = 0
    for name, ncall, values in entries:
        raw = name.encode("utf-8")
        v = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", int(ncall), v.size) + v.tobytes()
        n += 1
    ds = dataset.encode("utf-8")
    data = struct.pack("<i", n) + bytes(out) + struct.pack("<ii", int(chunks), len(ds)) + ds
    write_atomically(path, data)


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    except OSError as e:
        raise KilnError(f"{path}: cannot write the imatrix file: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise KilnError(f"{path}: cannot write the imatrix file: {e.strerror or e}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
