"""`kiln imatrix` output: writing the imatrix (the final file, the --output-frequency
updates and the --save-frequency copies `<file>.at_<chunks>`) with llama-imatrix's
messages on stderr."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..quants.imatrix_files import write_imatrix
from ..quants.imatrix_stats import ImatrixStats


@dataclass
class ImatrixOutput:
    path: str
    fmt: str  # dat or gguf
    output_frequency: int = 10  # rewrite the file every N chunks
    save_frequency: int = 0  # and keep a copy every N chunks (0: never)
    verbosity: int = 1

    def save(self, stats: ImatrixStats, at_chunk: int | None = None) -> None:
        """Write the file (a `.at_N` copy when `at_chunk` is given)."""
        path = self.path if at_chunk is None else f"{self.path}.at_{at_chunk}"
        warnings = write_imatrix(path, stats, self.fmt)
        if warnings:
            print("", file=sys.stderr)
        for line in warnings:
            print(f"save_imatrix: {line}", file=sys.stderr)
        if self.verbosity > 0:
            print(f"\nsave_imatrix: stored collected data after {stats.chunks} chunks in {path}", file=sys.stderr)
        sys.stderr.flush()

    def after_chunk(self, stats: ImatrixStats, done: int, last: bool) -> None:
        """The periodic saves after chunk `done` of this run (1-based); the final file is
        written by the caller after the last chunk."""
        if not last and done % self.output_frequency == 0:
            self.save(stats)
        if self.save_frequency > 0 and done % self.save_frequency == 0:
            self.save(stats, at_chunk=stats.chunks)
