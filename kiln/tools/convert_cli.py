"""`kiln convert HF_DIR OUT.gguf [--outtype f32|f16|bf16] [--mla-convention ik|mainline-old|mainline-new]`."""

from __future__ import annotations

from ..runtime import Options
from .convert import convert


def main(options: Options) -> int:
    hf_dir, out = options.inputs
    path = convert(hf_dir, out, outtype=options.outtype, mla_convention=options.mla_convention)
    print(f"kiln convert: wrote {path}")
    return 0
