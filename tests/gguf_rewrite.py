"""Test helper: copy a GGUF file with some tensors changed (re-quantized, or values edited),
to make two quantizations of one model or a model that produces NaN."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from kiln.gguf import GGUFFile
from kiln.gguf.writer import GGUFWriter, copy_metadata
from kiln.quants import dequantize, quant_type, quantize

# (tensor name, float32 values in torch order) -> (new values, new type name) or None to keep the tensor as is
Edit = Callable[[str, np.ndarray], tuple[np.ndarray, str] | None]


def rewrite_gguf(src: Path, dst: Path, edit: Edit) -> Path:
    with GGUFFile(src) as f, GGUFWriter(dst) as w:
        copy_metadata(w, f.metadata, f.value_types)
        for name, info in f.tensors.items():
            raw = np.array(f.tensor_bytes(name))
            values = dequantize(info.type_id, raw, info.shape, name)
            change = edit(name, values)
            if change is None:
                w.add_tensor(name, info.shape, info.type_id, lambda raw=raw: raw)
                continue
            new_values, type_name = change
            values32 = np.ascontiguousarray(new_values, dtype=np.float32)
            if type_name == "F32":  # as is, NaN and Inf included (kiln's quantizer refuses those)
                new_raw = values32.reshape(-1).view(np.uint8).copy()
            else:
                new_raw = quantize(type_name, values32, None, name)
            w.add_tensor(name, info.shape, quant_type(type_name).id, lambda r=new_raw: r)
    return dst


def requantize_matrices(src: Path, dst: Path, type_name: str) -> Path:
    """Every 2D weight except the token embedding in `type_name` (rows must fit its blocks)."""

    def edit(name: str, values: np.ndarray):
        if values.ndim == 2 and name != "token_embd.weight":
            return values, type_name
        return None

    return rewrite_gguf(src, dst, edit)
