"""Importance matrices in the GGUF format of mainline llama.cpp's llama-imatrix.

Layout (a GGUF file with no model in it):

    general.type         = "imatrix"
    imatrix.datasets     = [text files the data was computed on]      (array of strings)
    imatrix.chunk_count  = chunks computed                             (uint32)
    imatrix.chunk_size   = tokens per chunk                            (uint32)
    per entry, tensor names sorted:
        <name>.in_sum2   F32, ggml shape [n_columns, n_matrices]: sum of squared activations
        <name>.counts    F32, ggml shape [1, n_matrices]: rows (tokens) seen per matrix

(newer mainline files may add `<name>.in_sum`, the plain sums; they are read and ignored.)
ik_llama.cpp's llama-quantize reads only `.dat` files; its `convert_imatrix_gguf_to_dat.py`
turns a GGUF imatrix into one, and `kiln imatrix --in-file X.gguf -o X.dat` does too.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import KilnError
from ..gguf import GGUFFile, GGUFWriter, ValueType
from .imatrix_stats import ImatrixData, ImatrixStats

KEY_TYPE = "general.type"
KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
SUM2, COUNTS, SUM = ".in_sum2", ".counts", ".in_sum"
F32 = 0
DEFAULT_CHUNK_SIZE = 512  # when the file does not say (mainline's assumption too)


def write_imatrix_gguf(path: str | os.PathLike, stats: ImatrixStats) -> list[str]:
    """Write `stats` as a GGUF imatrix (atomically); returns the warnings to print (entries
    with experts that saw no token are written all the same, as mainline does)."""
    w = GGUFWriter(path)
    w.add(KEY_TYPE, "imatrix")
    w.add(KEY_DATASETS, list(stats.datasets), ValueType.ARRAY, ValueType.STRING)
    w.add(KEY_CHUNK_COUNT, int(stats.chunks), ValueType.UINT32)
    w.add(KEY_CHUNK_SIZE, int(stats.chunk_size), ValueType.UINT32)
    warnings = []
    for name in sorted(stats.entries):
        d = stats.entries[name]
        n_mat = d.n_matrices
        missing = int((d.counts <= 0).sum())
        if missing:
            warnings.append(f"entry '{name:>40}' has partial data ({100.0 * (n_mat - missing) / n_mat:.2f}%)")
        w.add_tensor(name + SUM2, (d.n_columns, n_mat), F32, d.sums.astype("<f4"))
        w.add_tensor(name + COUNTS, (1, n_mat), F32, d.counts.astype("<f4"))
    try:
        w.write()
    except OSError as e:
        raise KilnError(f"{path}: cannot write the imatrix file: {e.strerror or e}") from None
    return warnings


def read_imatrix_gguf(path: str | os.PathLike) -> ImatrixStats:
    """Read a GGUF imatrix; raise `KilnError` naming the file and the problem."""
    path = Path(path)

    def fail(problem: str) -> KilnError:
        return KilnError(f"{path}: not a valid GGUF imatrix file: {problem}")

    with GGUFFile(path) as f:
        kind = f.metadata.get(KEY_TYPE)
        if kind not in (None, "imatrix"):
            raise fail(f"{KEY_TYPE} is {kind!r} (a model file?); an imatrix file says 'imatrix'")
        datasets = f.metadata.get(KEY_DATASETS, [])
        if isinstance(datasets, str):
            datasets = [datasets]
        stats = ImatrixStats(
            chunks=int(f.metadata.get(KEY_CHUNK_COUNT, 0)),
            chunk_size=int(f.metadata.get(KEY_CHUNK_SIZE, 0)) or DEFAULT_CHUNK_SIZE,
            datasets=[str(d) for d in datasets],
        )
        pairs: dict[str, dict[str, np.ndarray]] = {}
        for tname, info in f.tensors.items():
            for suffix in (SUM2, COUNTS, SUM):
                if tname.endswith(suffix):
                    if info.type_id != F32:
                        raise fail(f"tensor {tname} has type {info.type_name}; imatrix tensors are F32")
                    values = np.frombuffer(f.tensor_bytes(tname), dtype="<f4").astype(np.float64)
                    pairs.setdefault(tname[: -len(suffix)], {})[suffix] = values
                    break
        if not pairs:
            raise fail(f"it holds no <name>{SUM2} / <name>{COUNTS} tensors (a model file?)")
        for name in sorted(pairs):
            parts = pairs[name]
            if SUM2 not in parts or COUNTS not in parts:
                raise fail(f"entry {name} lacks its {SUM2 if SUM2 not in parts else COUNTS} tensor")
            sums, counts = parts[SUM2], parts[COUNTS]
            if counts.size < 1 or sums.size % counts.size:
                raise fail(f"entry {name}: {sums.size} sums do not split into {counts.size} matrices")
            if not (np.isfinite(sums).all() and np.isfinite(counts).all()) or (counts < 0).any():
                raise fail(f"entry {name} holds non-finite or negative values")
            counts = np.round(counts)
            # calls are not stored: count one per chunk_size rows of the busiest matrix (as mainline)
            ncall = math.ceil(counts.max() / stats.chunk_size)
            stats.entries[name] = ImatrixData(sums=sums, counts=counts, ncall=ncall)
    return stats
