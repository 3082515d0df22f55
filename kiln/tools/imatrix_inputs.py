"""`kiln imatrix --in-file`: read earlier imatrix files (either format), check each against
the model, and merge them.

An entry fits the model when the model has a tensor of that name and the entry holds the
values llama-quantize needs for it: one per column of a row, times the experts of a 3D
tensor (ne0 * ne2). Names the file lacks are accepted only for the MLA tensors a loader
derives (attn_k_b, attn_v_b, attn_kv_b of a layer that has one of them) and for
ik_llama.cpp's decorated names (`blk.0.attn_k_b.weight (reshaped)`, which no tensor
matches and quantizing ignores); anything else means the imatrix belongs to another model.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ..errors import KilnError
from ..gguf import GGUFFile
from ..quants.imatrix_files import read_imatrix_stats
from ..quants.imatrix_stats import ImatrixStats
from ..runtime.default_model import default_model_path

MLA_TENSOR = re.compile(r"^(blk\.\d+)\.attn_(k_b|v_b|kv_b)\.weight$")


def model_tensor_shapes(model: str | None) -> tuple[Path, dict[str, tuple[int, ...]]]:
    """The model file's path and its tensors' ggml shapes (read from the header only)."""
    path = Path(model) if model else default_model_path()
    with GGUFFile(path) as f:
        return path, {name: info.shape for name, info in f.tensors.items()}


def needed_size(shape: tuple[int, ...]) -> int:
    """Values an imatrix entry holds for a tensor of this ggml shape (llama-quantize's ne0*ne2)."""
    return shape[0] * (shape[2] if len(shape) >= 3 else 1)


def check_against_model(stats: ImatrixStats, shapes: dict[str, tuple[int, ...]], what: str, model: Path) -> None:
    """Raise a `KilnError` naming the first entry that does not fit the model."""
    for name, d in stats.entries.items():
        shape = shapes.get(name)
        if shape is None:
            if " (" in name:
                continue
            m = MLA_TENSOR.match(name)
            if m and any(f"{m.group(1)}.attn_{k}.weight" in shapes for k in ("k_b", "v_b", "kv_b")):
                continue
            raise KilnError(
                f"{what}: entry {name} names no tensor of {model}: the imatrix was computed for another model"
            )
        want = needed_size(shape)
        if d.sums.size != want:
            raise KilnError(
                f"{what}: entry {name} has {d.sums.size} values where tensor {name} {list(shape)} of {model} "
                f"needs {want}: the imatrix was computed for another model"
            )


def load_in_files(
    paths: list[str], shapes: dict[str, tuple[int, ...]], model: Path, tokens_per_call: int
) -> ImatrixStats:
    """Read, check and merge the --in-file imatrices, in order."""
    merged = ImatrixStats()
    for p in paths:
        print(f"main : loading imatrix from '{p}'", file=sys.stderr, flush=True)
        if not Path(p).is_file():
            raise KilnError(f"{p}: no such imatrix file (--in-file)")
        stats = read_imatrix_stats(p, tokens_per_call)
        check_against_model(stats, shapes, p, model)
        merged.merge(stats, what=p)
    return merged
