"""Any importance matrix file, legacy `.dat` or GGUF: read it (for quantizing or for
merging), write one, pick the format from the output name.

- `read_imatrix(path)`: the per-column weights llama-quantize uses (an `Imatrix`), from
  either format (the format is told by the file's first bytes, not its name);
- `read_imatrix_stats(path, tokens_per_call)`: the sums and counts, to merge;
- `write_imatrix(path, stats, fmt)`: write `.dat` or GGUF atomically, returning the
  warnings (entries left out or with missing experts) to print.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import KilnError
from .imatrix import GGUF_MAGIC, Imatrix, read_imatrix_dat, write_imatrix_dat
from .imatrix_gguf import read_imatrix_gguf, write_imatrix_gguf
from .imatrix_stats import ImatrixStats, legacy_entries, stats_from_dat

FORMATS = ("dat", "gguf")


def is_gguf(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError as e:
        raise KilnError(f"{path}: cannot read the imatrix file: {e.strerror or e}") from None


def read_imatrix(path: str | os.PathLike) -> Imatrix:
    """An imatrix file of either format as per-column weights."""
    if is_gguf(path):
        return read_imatrix_gguf(path).to_imatrix(Path(path))
    return read_imatrix_dat(path)


def read_imatrix_stats(path: str | os.PathLike, tokens_per_call: int) -> ImatrixStats:
    """An imatrix file of either format as sums and counts (a `.dat` file's calls taken as
    `tokens_per_call` rows each)."""
    if is_gguf(path):
        return read_imatrix_gguf(path)
    return stats_from_dat(read_imatrix_dat(path), tokens_per_call)


def output_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """`fmt` when given, else gguf for a name ending in .gguf and dat for any other."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise KilnError(f"imatrix format {fmt!r}: use one of {', '.join(FORMATS)}")
        return fmt
    return "gguf" if str(path).lower().endswith(".gguf") else "dat"


def write_imatrix(path: str | os.PathLike, stats: ImatrixStats, fmt: str) -> list[str]:
    """Write `stats` in format `fmt`; returns the warnings about incomplete entries."""
    if fmt == "gguf":
        return write_imatrix_gguf(path, stats)
    legacy = legacy_entries(stats)
    if not legacy.entries:
        raise KilnError(f"{path}: no imatrix entry has data to store")
    write_imatrix_dat(path, legacy.entries, stats.chunks, stats.dataset())
    return legacy.warnings
