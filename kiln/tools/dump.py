"""`kiln dump FILE`: print a GGUF file's metadata and tensor table, like gguf-dump (or JSON)."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..gguf import GGUFFile
from ..runtime.options import Options

MAX_ARRAY_ITEMS = 8


def _short(value: Any) -> str:
    if isinstance(value, list):
        head = ", ".join(_short(v) for v in value[:MAX_ARRAY_ITEMS])
        more = f", ... ({len(value)} items)" if len(value) > MAX_ARRAY_ITEMS else ""
        return f"[{head}{more}]"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 120 else text[:117] + '..."'
    return repr(value)


def _type_name(vt) -> str:
    vtype, item = vt
    if item is None:
        return vtype.name
    inner = item.name if not isinstance(item, tuple) else "ARRAY"
    return f"{vtype.name}[{inner}]"


def describe(f: GGUFFile) -> dict:
    return {
        "path": [str(p) for p in f.paths],
        "version": f.version,
        "alignment": f.alignment,
        "metadata": {k: {"type": _type_name(f.value_types[k]), "value": v} for k, v in f.metadata.items()},
        "tensors": [
            {
                "name": t.name,
                "type": t.type_name,
                "shape": list(t.shape),
                "bytes": t.nbytes,
                "offset": t.offset,
                "file": t.file_index,
            }
            for t in f.tensors.values()
        ],
    }


def main(options: Options) -> int:
    with GGUFFile(options.inputs[0]) as f:
        if options.json:
            json.dump(describe(f), sys.stdout, ensure_ascii=False)
            print()
            return 0
        out = sys.stdout
        parts = f" in {len(f.paths)} files" if len(f.paths) > 1 else ""
        print(f"* File: {f.path}{parts}: GGUF v{f.version}, {len(f.metadata)} key/value pairs, {len(f.tensors)} tensors", file=out)
        print("* Metadata:", file=out)
        print(f"  {'#':>4} {'type':<16} key = value", file=out)
        for i, (key, value) in enumerate(f.metadata.items(), 1):
            print(f"  {i:4d} {_type_name(f.value_types[key]):<16} {key} = {_short(value)}", file=out)
        print("* Tensors:", file=out)
        print(f"  {'#':>4} {'type':<10} {'shape':<24} {'bytes':>12} {'offset':>12}  name", file=out)
        total = 0
        for i, t in enumerate(f.tensors.values(), 1):
            shape = "x".join(str(d) for d in t.shape)
            size = "?" if t.nbytes is None else str(t.nbytes)
            total += t.nbytes or 0
            print(f"  {i:4d} {t.type_name:<10} {shape:<24} {size:>12} {t.offset:>12}  {t.name}", file=out)
        print(f"* {len(f.tensors)} tensors, {total} bytes ({total / 2**20:.2f} MiB)", file=out)
    return 0
