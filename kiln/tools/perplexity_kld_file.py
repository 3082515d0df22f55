"""The `--kl-divergence-base` file: a base model's log-probabilities over a text, in
llama-perplexity's layout, so that kiln and ik_llama.cpp read each other's files.

Layout (little-endian):

    char   magic[8] = "_logits_"
    uint32 n_ctx
    int32  n_vocab
    int32  n_chunk
    int32  tokens[n_chunk * n_ctx]             the evaluated text, chunk after chunk
    n_chunk times, (n_ctx - 1 - n_ctx/2) rows of packed log-probabilities
        uint16 row[2 * ((n_vocab + 1) / 2) + 4] (see perplexity_stats.pack_log_probs)

Row j of a chunk holds the distribution predicting token n_ctx/2 + j + 1 of the chunk.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import KilnError
from .perplexity_stats import packed_row_length

MAGIC = b"_logits_"
HEADER = struct.Struct("<8sIii")


class KLDFileError(KilnError):
    """A --kl-divergence-base file that cannot be used."""


def scored_rows(n_ctx: int) -> int:
    """Tokens scored per chunk: the second half of the chunk, less the last position."""
    return n_ctx - 1 - n_ctx // 2


class KLDBaseWriter:
    """Writes a base file to a temporary name; `commit()` renames it into place."""

    def __init__(self, path: str | os.PathLike, n_ctx: int, n_vocab: int, tokens: np.ndarray, n_chunk: int):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.n_vocab = n_vocab
        self.row_length = packed_row_length(n_vocab)
        self.rows = scored_rows(n_ctx)
        try:
            self.f = open(self.tmp, "wb")
        except OSError as e:
            raise KLDFileError(f"{self.path}: cannot write the KL-divergence base file ({e.strerror})") from None
        self.f.write(HEADER.pack(MAGIC, n_ctx, n_vocab, n_chunk))
        self.f.write(np.ascontiguousarray(tokens[: n_chunk * n_ctx], dtype="<i4").tobytes())

    def write_chunk(self, packed: np.ndarray) -> None:
        if packed.shape != (self.rows, self.row_length):
            raise ValueError(f"packed rows {packed.shape}, expected {(self.rows, self.row_length)}")
        self.f.write(np.ascontiguousarray(packed, dtype="<u2").tobytes())

    def commit(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


@dataclass
class KLDBase:
    """A base file opened for reading (log-probs mapped, not loaded)."""

    path: Path
    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: np.ndarray  # int32 [n_chunk * n_ctx]
    log_probs: np.ndarray  # uint16 [n_chunk, rows, row_length], memory-mapped

    def chunk(self, i: int) -> np.ndarray:
        return np.asarray(self.log_probs[i])


def read_kld_base(path: str | os.PathLike) -> KLDBase:
    path = Path(path)
    if not path.is_file():
        raise KLDFileError(f"{path}: no such file (--kl-divergence-base); write one first with the base model: "
                           f"kiln perplexity -m BASE.gguf -f TEXT --kl-divergence-base {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
    if len(head) < HEADER.size or head[:8] != MAGIC:
        raise KLDFileError(f"{path} does not look like a file of log-probabilities (no '_logits_' header); "
                           "it must come from `perplexity --kl-divergence-base`")
    _, n_ctx, n_vocab, n_chunk = HEADER.unpack(head)
    if n_ctx < 4 or n_vocab < 1 or n_chunk < 1:
        raise KLDFileError(f"{path}: bad header (n_ctx={n_ctx}, n_vocab={n_vocab}, n_chunk={n_chunk})")
    rows, row_length = scored_rows(n_ctx), packed_row_length(n_vocab)
    tokens_end = HEADER.size + 4 * n_chunk * n_ctx
    expected = tokens_end + 2 * n_chunk * rows * row_length
    if size < expected:
        complete = max(0, (size - tokens_end) // (2 * rows * row_length))
        raise KLDFileError(f"{path} is truncated: {size} bytes where {n_chunk} chunks need {expected} "
                           f"({complete} complete chunks); write it again")
    tokens = np.fromfile(path, dtype="<i4", count=n_chunk * n_ctx, offset=HEADER.size)
    log_probs = np.memmap(path, dtype="<u2", mode="r", offset=tokens_end, shape=(n_chunk, rows, row_length))
    return KLDBase(path, n_ctx, n_vocab, n_chunk, tokens, log_probs)
