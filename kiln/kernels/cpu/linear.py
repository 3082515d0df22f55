"""The CPU fast path of the weight products: which kernel runs for a given batch.

A few tokens (generation, up to `GEMV_MAX_TOKENS`): activations go to 8-bit blocks and
`qmatvec` reads every weight byte once. More tokens (prompt processing): rows of the
weight are decoded a tile at a time into one reused float32 buffer and multiplied with
torch's GEMM, which on CPUs without 8-bit dot instructions (AVX2 only, as this machine)
is the faster arithmetic; the tile stays in cache and no float copy of a whole weight
exists.

Threads: `set_threads(generation, batch)` (-t, -tb) sets how many Numba threads each kind
of product uses; torch's own pool is set by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch

from ...gguf.types import GGML_TYPES_BY_NAME, ggml_type
from ...quants import interleaved
from . import float_matmul, matmul
from .activations import ActivationBlocks
from .decoders import DECODERS
from .indirect import decoder_address, readonly

GEMV_MAX_TOKENS = 8
FLOAT_WEIGHTS = {"F16": "f16", "BF16": "bf16"}
TILE_VALUES = 1 << 20  # float32 values per decoded tile (4 MiB)

_threads = {"generation": 0, "batch": 0, "current": -1}
_activations: dict[int, ActivationBlocks] = {}
_tile = np.empty(0, dtype=np.float32)


@dataclass(frozen=True)
class Matrix:
    """What the kernels need to know of a stored matrix (n_out rows of K values)."""

    decoder: int  # address of the type's block decoder (indirect.py); 0 for float weights
    row_bytes: int
    K: int
    n_out: int
    floats: str = ""  # "f16" or "bf16": 16-bit float rows, multiplied by float_matmul.py


@dataclass(frozen=True)
class CpuWeight:
    """A weight as the kernels read it: its matrix shape and kernels, and the bytes (the
    stored ones, or the plain layout of an interleaved type)."""

    matrix: Matrix
    raw: np.ndarray  # uint8, flat
    n_matrices: int  # experts of a 3D tensor, else 1

    def expert_bytes(self, expert: int | None) -> np.ndarray:
        if expert is None:
            return self.raw
        per = self.raw.size // self.n_matrices
        return self.raw[expert * per : (expert + 1) * per]


def weight_plan(raw: np.ndarray, type_id: int, shape: tuple[int, ...]) -> CpuWeight | None:
    """How the kernels compute with a stored tensor (ggml shape), or None when they cannot."""
    t = ggml_type(type_id)
    if t is None or len(shape) not in (2, 3):
        return None
    K, n_out = shape[0], shape[1]
    n_matrices = shape[2] if len(shape) == 3 else 1
    name = t.name
    if name not in DECODERS and name in interleaved.LAYOUTS and not interleaved.note(name):
        plain = interleaved.plain_type(name)
        if (plain not in DECODERS and plain not in FLOAT_WEIGHTS) or (n_out * n_matrices) % interleaved.rows_per_group(name):
            return None
        rows = np.asarray(raw).reshape(n_out * n_matrices, -1)
        raw = interleaved.unpack(name, rows).reshape(-1)
        name = plain
    if name in FLOAT_WEIGHTS:
        if K % 8:  # the float dot takes 8 values at a time
            return None
        return CpuWeight(matrix(GGML_TYPES_BY_NAME[name].id, K, n_out), readonly(raw), n_matrices)
    plain_type = GGML_TYPES_BY_NAME[name]
    if name not in DECODERS or K % plain_type.block_size:
        return None
    return CpuWeight(matrix(plain_type.id, K, n_out), readonly(raw), n_matrices)


def matrix(type_id: int, K: int, n_out: int) -> Matrix:
    t = ggml_type(type_id)
    if t.name in FLOAT_WEIGHTS:
        return Matrix(0, t.row_bytes(K), K, n_out, FLOAT_WEIGHTS[t.name])
    return Matrix(decoder_address(t.name), t.row_bytes(K), K, n_out)


def set_threads(generation: int, batch: int) -> None:
    """Numba threads for generation and for batches (0: all cores)."""
    limit = numba.config.NUMBA_NUM_THREADS
    _threads["generation"] = min(generation, limit) if generation > 0 else limit
    _threads["batch"] = min(batch, limit) if batch > 0 else _threads["generation"]
    _threads["current"] = -1  # the next product sets both pools


def work_chunks() -> int:
    """Work items per product: two per thread (each allocates its row buffers once)."""
    return 2 * _threads["current"] if _threads["current"] > 0 else 2 * numba.get_num_threads()


def use_threads(kind: str) -> None:
    """Numba's and torch's pools both to the count of this kind of product (no more threads
    than that are ever busy: the two pools take turns)."""
    n = _threads[kind] or numba.config.NUMBA_NUM_THREADS
    if n != _threads["current"]:
        numba.set_num_threads(n)
        torch.set_num_threads(n)
        _threads["current"] = n


def product(x: torch.Tensor, raw: np.ndarray, m: Matrix) -> torch.Tensor:
    """x [n, K] float32 times the rows of the matrix stored in raw (uint8): [n, n_out]."""
    xn = x.contiguous().numpy()
    n = xn.shape[0]
    out = np.empty((n, m.n_out), dtype=np.float32)
    if m.floats:
        return _float_product(xn, raw, m, out)
    if n <= GEMV_MAX_TOKENS:
        use_threads("generation")
        act = _activations.get(m.K)
        if act is None:
            act = _activations[m.K] = ActivationBlocks(m.K, GEMV_MAX_TOKENS)
        matmul.qmatvec(m.decoder, raw, m.row_bytes, m.K, xn, *act.buffers(n), out, work_chunks())
        return torch.from_numpy(out)
    use_threads("batch")
    result = torch.from_numpy(out)
    x = torch.from_numpy(xn)
    tile_rows = max(16, min(m.n_out, TILE_VALUES // m.K))
    tile = _tile_buffer(tile_rows * m.K)
    for r0 in range(0, m.n_out, tile_rows):
        r1 = min(m.n_out, r0 + tile_rows)
        w = tile[: (r1 - r0) * m.K].reshape(r1 - r0, m.K)
        matmul.decode_rows(m.decoder, raw, m.row_bytes, m.K, r0, w, work_chunks())
        result[:, r0:r1] = x @ torch.from_numpy(w).T
    return result


def _float_rows(raw: np.ndarray, m: Matrix) -> np.ndarray:
    return raw.view(np.int16).reshape(-1, m.K)


def _as_float32(bits: np.ndarray, kind: str) -> torch.Tensor:
    """16-bit float bits (int16) as a new float32 tensor (exact)."""
    if kind == "f16":
        return torch.from_numpy(bits.view(np.float16).astype(np.float32))
    return torch.from_numpy((bits.view(np.uint16).astype(np.uint32) << 16).view(np.float32))


def _float_product(xn: np.ndarray, raw: np.ndarray, m: Matrix, out: np.ndarray) -> torch.Tensor:
    w = _float_rows(raw, m)
    if xn.shape[0] <= GEMV_MAX_TOKENS:
        use_threads("generation")
        float_matmul.fmatvec(w, m.floats == "bf16", xn, out, work_chunks())
        return torch.from_numpy(out)
    use_threads("batch")
    result, x = torch.from_numpy(out), torch.from_numpy(xn)
    tile_rows = max(16, min(m.n_out, TILE_VALUES // m.K))
    for r0 in range(0, m.n_out, tile_rows):
        r1 = min(m.n_out, r0 + tile_rows)
        result[:, r0:r1] = x @ _as_float32(w[r0:r1], m.floats).T
    return result


def selected_product(x: torch.Tensor, plan: CpuWeight, experts: torch.Tensor, n_matrices: int = 0) -> torch.Tensor:
    """Row s of x [n_sel, K] times matrix experts[s] of a 3D weight: [n_sel, n_out]. With
    n_matrices, the weight's rows are that many matrices one after another (MLA's per-head
    attn_k_b / attn_v_b, stored 2D)."""
    m = plan.matrix
    n_matrices = n_matrices or plan.n_matrices
    n_rows = m.n_out * plan.n_matrices // n_matrices
    xn = x.contiguous().numpy()
    n = xn.shape[0]
    out = np.empty((n, n_rows), dtype=np.float32)
    use_threads("generation")
    sel = experts.to(torch.int64).contiguous().numpy()
    if m.floats:
        float_matmul.fmatvec_selected(_float_rows(plan.raw, m), m.floats == "bf16", n_rows, xn, sel, out,
                                      work_chunks())
        return torch.from_numpy(out)
    act = _activations.get(m.K)
    if act is None:
        act = _activations[m.K] = ActivationBlocks(m.K, GEMV_MAX_TOKENS)
    matmul.qmatvec_selected(m.decoder, plan.raw, plan.raw.size // n_matrices, m.row_bytes, m.K, xn, sel,
                            *act.buffers(n), out, work_chunks())
    return torch.from_numpy(out)


def rows(raw: np.ndarray, m: Matrix, ids: torch.Tensor) -> torch.Tensor:
    """Rows `ids` of the matrix stored in raw, as float32 [*ids.shape, K]."""
    if m.floats:
        return _as_float32(_float_rows(raw, m)[ids.reshape(-1).numpy()], m.floats).reshape(*ids.shape, m.K)
    flat = ids.reshape(-1).tolist()
    out = np.empty((len(flat), m.K), dtype=np.float32)
    for i, r in enumerate(flat):
        matmul.decode_rows(m.decoder, raw, m.row_bytes, m.K, r, out[i : i + 1], 1)
    return torch.from_numpy(out).reshape(*ids.shape, m.K)


def _tile_buffer(n: int) -> np.ndarray:
    global _tile
    if _tile.size < n:
        _tile = np.empty(n, dtype=np.float32)
    return _tile
