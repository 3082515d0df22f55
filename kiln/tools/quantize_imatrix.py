"""The importance matrix for `kiln quantize`: read it (legacy .dat or GGUF), apply
`--include-weights` / `--exclude-weights` (substring matches, as llama-quantize), and the
`quantize.imatrix.*` metadata keys llama-quantize writes into the quantized file."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import KilnError
from ..gguf.constants import ValueType
from ..quants import imatrix_files

HIDDEN = "top_secret"


@dataclass
class LoadedImatrix:
    weights: dict[str, np.ndarray]  # tensor name -> per-column weights (values / ncall)
    chunks: int
    dataset: str | None


def load(path: str, include: list[str], exclude: list[str]) -> LoadedImatrix:
    m = imatrix_files.read_imatrix(path)
    weights = m.as_weights()
    for bad, values in weights.items():
        if not np.isfinite(values).all():
            raise KilnError(f"{path}: the entry for {bad} holds NaN or Inf values; compute the imatrix again")
    if exclude:
        weights = {k: v for k, v in weights.items() if not any(x in k for x in exclude)}
    if include:
        weights = {k: v for k, v in weights.items() if any(x in k for x in include)}
    if not weights:
        raise KilnError(f"{path}: no imatrix entries left (after --include-weights/--exclude-weights)")
    return LoadedImatrix(weights, m.chunks, m.dataset)


def metadata(m: LoadedImatrix, path: str, hide: bool) -> dict:
    """The keys llama-quantize adds when it used an imatrix."""
    out = {"quantize.imatrix.file": (HIDDEN if hide else path, ValueType.STRING)}
    if m.dataset:
        out["quantize.imatrix.dataset"] = (HIDDEN if hide else m.dataset, ValueType.STRING)
    out["quantize.imatrix.entries_count"] = (0 if hide else len(m.weights), ValueType.INT32)
    if m.chunks > 0:
        out["quantize.imatrix.chunks_count"] = (0 if hide else m.chunks, ValueType.INT32)
    return out
