"""The accumulated data behind an importance matrix, as llama-imatrix keeps it in memory.

Per weight tensor (an entry) kiln keeps:

- `sums`: for each input column, the sum of the squared activations over every row
  (token) that went through the product, one row-length slice per matrix (expert of a 3D
  expert tensor, head of a per-head MLA tensor): float64, n_matrices * n_columns values;
- `counts`: the rows seen per matrix (an expert counts only the tokens routed to it);
- `ncall`: the number of products that fed the entry (llama-imatrix's `ncall`: one per
  micro-batch), the weight a `.dat` file gives to the entry when files are merged.

The two file formats store this differently:

- GGUF (mainline llama.cpp's): `sums` and `counts` as they are (imatrix_gguf.py);
- legacy `.dat` (ik_llama.cpp's): per column `sums / counts * ncall` and `ncall`, so that
  llama-quantize's `value / ncall` is the mean squared activation. An entry with experts
  that saw no token is left out, unless fewer than 5% of its experts (rounded) miss data:
  then it is kept with weight 1 for them and a warning (ik_llama.cpp's rule).

Reading a `.dat` file back cannot recover the row counts: they are taken as `ncall *
tokens_per_call` for every matrix (what mainline llama.cpp assumes too), which keeps the
means and gives a merge the weights of the calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import KilnError
from .imatrix import Imatrix, ImatrixEntry

# ik_llama.cpp keeps an entry whose experts partly miss data only if fewer than this
# fraction of them (rounded half up) do
PARTIAL_EXPERTS_KEPT = 0.05


@dataclass
class ImatrixData:
    """One tensor's accumulated data."""

    sums: np.ndarray  # float64 [n_matrices * n_columns]
    counts: np.ndarray  # float64 [n_matrices]
    ncall: int = 0

    @property
    def n_matrices(self) -> int:
        return int(self.counts.size)

    @property
    def n_columns(self) -> int:
        return self.sums.size // max(1, self.counts.size)

    def means(self) -> np.ndarray:
        """Mean squared activation per column [n_matrices, n_columns]; 1 for a matrix that saw
        no row (what llama-quantize uses for experts without data)."""
        s = self.sums.reshape(self.n_matrices, -1)
        c = self.counts[:, None]
        return np.where(c > 0, s / np.where(c > 0, c, 1.0), 1.0)

    def copy(self) -> ImatrixData:
        return ImatrixData(self.sums.copy(), self.counts.copy(), self.ncall)


@dataclass
class ImatrixStats:
    """An importance matrix being built or merged: entries by tensor name, plus what the
    files record about it (chunks computed, tokens per chunk, the text files used)."""

    entries: dict[str, ImatrixData] = field(default_factory=dict)
    chunks: int = 0
    chunk_size: int = 0
    datasets: list[str] = field(default_factory=list)

    def merge(self, other: ImatrixStats, what: str = "the imatrix") -> None:
        """Add `other`'s data to this one (`what` names it in errors)."""
        for name, d in other.entries.items():
            mine = self.entries.get(name)
            if mine is None:
                self.entries[name] = d.copy()
                continue
            if mine.sums.size != d.sums.size:
                raise KilnError(
                    f"{what}: entry {name} has {d.sums.size} values where the data merged so far has "
                    f"{mine.sums.size}: the files were computed for different models"
                )
            mine.sums += d.sums
            mine.counts = _add_counts(mine.counts, d.counts, name, what)
            mine.ncall += d.ncall
        self.chunks += other.chunks
        if not self.chunk_size:
            self.chunk_size = other.chunk_size
        self.datasets += [ds for ds in other.datasets if ds]

    def dataset(self) -> str:
        """The one dataset name a `.dat` trailer holds: the latest."""
        return self.datasets[-1] if self.datasets else ""

    def max_ncall(self) -> int:
        return max((d.ncall for d in self.entries.values()), default=0)

    def to_imatrix(self, path) -> Imatrix:
        """The per-column weights view llama-quantize uses (values = means, ncall 1)."""
        out = Imatrix(path=path, chunks=self.chunks, dataset=self.dataset() or None)
        for name in sorted(self.entries):
            out.entries[name] = ImatrixEntry(values=self.entries[name].means().reshape(-1).astype(np.float32), ncall=1)
        return out


def _add_counts(a: np.ndarray, b: np.ndarray, name: str, what: str) -> np.ndarray:
    if a.size == b.size:
        return a + b
    if a.size == 1 or b.size == 1:  # a .dat entry has one count for all its experts
        return a + b  # numpy broadcasts the single count
    raise KilnError(
        f"{what}: entry {name} has {b.size} experts where the data merged so far has {a.size}: "
        "the files were computed for different models"
    )


def stats_from_dat(im: Imatrix, tokens_per_call: int) -> ImatrixStats:
    """A `.dat` file's data as sums and counts (each call taken as `tokens_per_call` rows)."""
    if tokens_per_call < 1:
        raise KilnError(f"tokens per call {tokens_per_call}: must be positive")
    out = ImatrixStats(chunks=im.chunks, chunk_size=tokens_per_call, datasets=[im.dataset] if im.dataset else [])
    for name, e in im.entries.items():
        if e.ncall <= 0:
            raise KilnError(
                f"{im.path}: entry {name} has call count {e.ncall}; a .dat file to merge needs positive counts"
            )
        rows = float(e.ncall) * tokens_per_call
        sums = e.values.astype(np.float64) / e.ncall * rows
        out.entries[name] = ImatrixData(sums=sums, counts=np.array([rows]), ncall=e.ncall)
    return out


@dataclass
class LegacyEntries:
    """What a `.dat` file gets: (name, ncall, values) per kept entry and the warnings to print."""

    entries: list[tuple[str, int, np.ndarray]]
    warnings: list[str]
    n_total: int


def legacy_entries(stats: ImatrixStats) -> LegacyEntries:
    """The `.dat` values of every entry, with ik_llama.cpp's treatment of experts without data."""
    kept: list[tuple[str, int, np.ndarray]] = []
    warnings: list[str] = []
    for name in sorted(stats.entries):
        d = stats.entries[name]
        ncall = max(d.ncall, 1)
        missing = d.counts <= 0
        n_missing = int(missing.sum())
        if n_missing == d.n_matrices:
            warnings.append(f"entry '{name:>40}' has no data - skipping")
            continue
        if n_missing:
            share = 100.0 * (d.n_matrices - n_missing) / d.n_matrices
            line = f"entry '{name:>40}' has partial data ({share:.2f}%)"
            keep = False
            if d.n_matrices > 1:
                line += f" {n_missing} out of {d.n_matrices} experts are missing data"
                keep = n_missing < math.floor(d.n_matrices * PARTIAL_EXPERTS_KEPT + 0.5)
            warnings.append(line + (" Storing **but be aware**" if keep else " - skipping"))
            if not keep:
                continue
        # means() gives 1 for the experts without data: the value ncall, weight 1
        values = (d.means() * ncall).reshape(-1).astype(np.float32)
        kept.append((name, ncall, values))
    if len(kept) < len(stats.entries):
        warnings.append(f"warning: storing only {len(kept)} out of {len(stats.entries)} entries")
    return LegacyEntries(kept, warnings, len(stats.entries))
