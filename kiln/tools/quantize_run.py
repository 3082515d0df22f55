"""Execute a quantize plan: build the output file(s) and stream every tensor through.

Tensors are read from the input with plain file reads (not the memory map, whose pages
would count against the process's memory), a bounded slab of rows or one expert at a time,
converted, and written at once; so the memory used stays near one slab plus buffers,
whatever the model size. Outputs are written under temporary names and renamed when
complete (kiln.gguf.writer). `--keep-split` writes one output shard per input part, the
first with all metadata, as llama-quantize does.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..gguf.constants import ValueType
from ..gguf.types import GGML_TYPES_BY_NAME
from ..gguf.writer import GGUFWriter, copy_metadata
from ..quants import dequantize, quantize, repack
from .quantize_plan import Plan, TensorPlan

QUANTIZATION_VERSION = 2
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
SLAB_BYTES = 64 << 20  # float32 values converted per step
MIB = 1024.0 * 1024.0


def shard_paths(out: Path, n_split: int) -> list[Path]:
    """Output names: OUT itself, or PREFIX-0000i-of-0000n.gguf per shard (PREFIX is OUT less .gguf)."""
    if n_split == 1:
        return [out]
    prefix = str(out)[:-5] if str(out).endswith(".gguf") else str(out)
    return [Path(f"{prefix}-{i + 1:05d}-of-{n_split:05d}.gguf") for i in range(n_split)]


def build_writers(gguf, plan: Plan, out: Path, extra_kv: dict, keep_split: bool, n_threads: int,
                  imatrix_weights: dict | None, progress: Progress | None = None) -> list[GGUFWriter]:
    """One writer per output file, with metadata and every tensor registered (nothing read yet)."""
    n_split = len(gguf.paths) if keep_split else 1
    for t in plan.tensors:
        t.shard = gguf.tensors[t.name].file_index if keep_split else 0
    writers = [GGUFWriter(p, alignment=gguf.alignment) for p in shard_paths(out, n_split)]
    first = writers[0]
    copy_metadata(first, gguf.metadata, gguf.value_types, skip=SPLIT_KEYS)
    first.add("general.quantization_version", QUANTIZATION_VERSION, ValueType.UINT32)
    if plan.file_type_id is not None:
        first.add("general.file_type", plan.file_type_id, ValueType.UINT32)
    for key, (value, vtype) in extra_kv.items():
        first.add(key, value, vtype)
    if n_split > 1:
        for i, w in enumerate(writers):
            w.add("split.no", i, ValueType.UINT16)
            w.add("split.count", n_split, ValueType.UINT16)
            w.add("split.tensors.count", len(plan.tensors), ValueType.INT32)
    for t in plan.tensors:
        weights = imatrix_weights.get(t.imatrix_key) if (imatrix_weights and t.imatrix_key) else None
        source = _source(gguf, t, weights, n_threads)
        if progress is not None:
            source = progress.traced(t, source)
        writers[t.shard].add_tensor(t.name, t.shape, GGML_TYPES_BY_NAME[t.dst_type].id, source)
    return writers


def _read(gguf, name: str, start: int, count: int) -> np.ndarray:
    """`count` bytes of a tensor from byte `start`, by a file read."""
    info = gguf.tensors[name]
    return np.fromfile(gguf.paths[info.file_index], dtype=np.uint8, count=count, offset=info.offset + start)


def _slabs(t: TensorPlan) -> Iterator[tuple[int, int, int, int]]:
    """(matrix index, first row, n rows, byte offset in the input) per step: whole rows of one
    matrix, at most SLAB_BYTES of float32, a multiple of 16 rows (interleaved groups)."""
    n_per_row = t.shape[0]
    rows = t.shape[1] if len(t.shape) > 1 else 1
    n_mat = 1
    for d in t.shape[2:]:
        n_mat *= d
    src = GGML_TYPES_BY_NAME[t.src_type]
    row_bytes = src.row_bytes(n_per_row)
    step = max(16, (SLAB_BYTES // (4 * n_per_row)) // 16 * 16)
    for m in range(n_mat):
        for r0 in range(0, rows, step):
            n = min(step, rows - r0)
            yield m, r0, n, (m * rows + r0) * row_bytes


def _source(gguf, t: TensorPlan, imatrix: np.ndarray | None, n_threads: int):
    if t.action == "copy":
        return lambda: _copy(gguf, t)
    if t.action == "repack":
        return lambda: _repack(gguf, t)
    return lambda: _quantize(gguf, t, imatrix, n_threads)


def _copy(gguf, t: TensorPlan) -> Iterator[np.ndarray]:
    step = SLAB_BYTES
    for start in range(0, t.bytes_in, step):
        yield _read(gguf, t.name, start, min(step, t.bytes_in - start))


def _repack(gguf, t: TensorPlan) -> Iterator[np.ndarray]:
    src = GGML_TYPES_BY_NAME[t.src_type]
    for _, _, n, offset in _slabs(t):
        shape = (t.shape[0], n)
        yield repack(_read(gguf, t.name, offset, n * src.row_bytes(t.shape[0])), shape, t.src_type, t.dst_type, t.name)


def _quantize(gguf, t: TensorPlan, imatrix: np.ndarray | None, n_threads: int) -> Iterator[np.ndarray]:
    src = GGML_TYPES_BY_NAME[t.src_type]
    n_per_row = t.shape[0]
    for m, _, n, offset in _slabs(t):
        raw = _read(gguf, t.name, offset, n * src.row_bytes(n_per_row))
        if t.src_type == "F32":
            x = raw.view(np.float32).reshape(n, n_per_row)
        else:
            x = dequantize(t.src_type, raw, (n_per_row, n), t.name).reshape(n, n_per_row)
        w = None if imatrix is None else imatrix[m * n_per_row : (m + 1) * n_per_row]
        yield quantize(t.dst_type, x, w, f"{t.name}", n_threads)


class Progress:
    """llama-quantize's per-tensor lines, with the elapsed time and an ETA by bytes."""

    def __init__(self, plan: Plan, out=None):
        self.plan = plan
        self.out = out if out is not None else sys.stdout
        self.total = max(1, plan.bytes_in)
        self.done = 0
        self.index = 0
        self.t0 = time.perf_counter()

    def start(self, t: TensorPlan) -> None:
        self.index += 1
        dims = ", ".join(f"{d:5d}" for d in (list(t.shape) + [1] * 4)[:4])
        what = {"copy": "", "repack": f"repacking to {t.dst_type.lower()} .. ",
                "quantize": f"converting to {t.dst_type.lower()} .. "}[t.action]
        print(f"[{self.index:4d}/{len(self.plan.tensors):4d}] {t.name:>36s} - [{dims}], type = {t.src_type.lower():>6s}, "
              f"{what}", end="", file=self.out, flush=True)

    def end(self, t: TensorPlan) -> None:
        self.done += t.bytes_in
        elapsed = time.perf_counter() - self.t0
        eta = elapsed * (self.total - self.done) / max(self.done, 1)
        if t.action == "copy":
            size = f"size = {t.bytes_out / MIB:8.3f} MB"
        else:
            size = f"size = {t.bytes_in / MIB:8.2f} MiB -> {t.bytes_out / MIB:8.2f} MiB"
        print(f"{size}  [{elapsed:6.1f} s, ETA {eta:6.1f} s]", file=self.out, flush=True)

    def traced(self, t: TensorPlan, source):
        def run():
            self.start(t)
            yield from source()
            self.end(t)

        return run


def write_all(writers: list[GGUFWriter]) -> None:
    """Write every output file; each appears under its final name only when complete."""
    for w in writers:
        w.write()
