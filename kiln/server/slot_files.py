"""Slot save / restore / erase (`POST /slots/{id}?action=...`, with `--slot-save-path DIR`).

A saved slot is a safetensors file: the cached token ids and, per layer, the K (and V)
rows of those tokens as the cache returns them (q8_0 caches dequantized; writing them back
quantizes to the same blocks). The metadata names the model file and the row sizes, so a
file saved with another model is refused instead of being read as garbage. The file is
written to a temporary name and renamed, as every output of kiln.

The files are kiln's own; llama-server's slot files (its state format) cannot be read.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .api_errors import APIError, bad_request

FORMAT = "kiln-slot-1"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")


def check_filename(filename: Any) -> str:
    """A bare file name: letters, digits, `_ . -`, not starting with a dot (no directories)."""
    if not isinstance(filename, str) or not _NAME.match(filename) or ".." in filename:
        raise bad_request(
            "Invalid filename: give a bare file name of letters, digits, '_', '.' and '-' (no directories), "
            "e.g. {\"filename\": \"slot0.bin\"}"
        )
    return filename


def _row_sizes(engine) -> list[tuple[int, int]]:
    return [engine.model.kv_row_sizes(il) for il in range(engine.hparams.n_layer)]


def save_slot(engine, id_slot: int, path: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    seq = engine.cache.seq(id_slot)
    n = seq.n_past
    tensors = {"tokens": torch.tensor(seq.tokens[:n], dtype=torch.int64)}
    for il, (_, v_row) in enumerate(_row_sizes(engine)):
        if n:
            tensors[f"k.{il}"] = seq.k[il].read(n).contiguous().clone()
            if v_row:
                tensors[f"v.{il}"] = seq.v[il].read(n).contiguous().clone()
    metadata = {
        "format": FORMAT,
        "model": Path(engine.path).name,
        "rows": ",".join(f"{k}:{v}" for k, v in _row_sizes(engine)),
        "n_past": str(n),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"id_slot": id_slot, "filename": path.name, "n_saved": n, "n_written": path.stat().st_size,
            "timings": {"save_ms": 1e3 * (time.perf_counter() - t0)}}


def restore_slot(engine, id_slot: int, path: Path, n_ctx_slot: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    if not path.is_file():
        raise APIError(f"slot file {path.name} not found in --slot-save-path", "not_found_error")
    rows = _row_sizes(engine)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise bad_request(f"{path.name} is not a kiln slot file (saved with ?action=save)")
            expected = ",".join(f"{k}:{v}" for k, v in rows)
            if meta.get("rows") != expected:
                raise bad_request(
                    f"{path.name} was saved with another model ({meta.get('model')}); this server runs "
                    f"{Path(engine.path).name}"
                )
            tokens = f.get_tensor("tokens").tolist()
            n = len(tokens)
            if n > n_ctx_slot:
                raise bad_request(f"{path.name} holds {n} tokens, more than the slot context of {n_ctx_slot}")
            layers = [
                (f.get_tensor(f"k.{il}"), f.get_tensor(f"v.{il}") if v_row else None) if n else (None, None)
                for il, (_, v_row) in enumerate(rows)
            ]
    except (SafetensorError, KeyError, ValueError, OSError) as e:
        raise bad_request(f"{path.name} cannot be read as a slot file: {e}") from None
    for (k, v), (k_row, v_row) in zip(layers, rows, strict=True):
        if k is not None and (k.numel() != n * k_row or (v_row and v.numel() != n * v_row)):
            raise bad_request(f"{path.name} is damaged: its rows do not match the model's")
    seq = engine.cache.seq(id_slot)
    seq.truncate(0)
    for il, (k, v) in enumerate(layers):
        if k is None:
            continue
        seq.k[il].write(0, k)
        if v is not None:
            seq.v[il].write(0, v)
    seq.n_past = n
    seq.tokens = list(tokens)
    return {"id_slot": id_slot, "filename": path.name, "n_restored": n, "n_read": path.stat().st_size,
            "timings": {"restore_ms": 1e3 * (time.perf_counter() - t0)}}


def erase_slot(engine, id_slot: int) -> dict[str, Any]:
    n = engine.n_past(id_slot)
    engine.reset(id_slot)
    return {"id_slot": id_slot, "n_erased": n}
