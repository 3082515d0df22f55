"""`kiln convert HF_DIR OUT.gguf [--outtype f32|f16|bf16|q8_0] [--mla-convention ik|mainline-old|mainline-new]
[--split-max-size N(M|G)]`.

`add_arguments` declares the flags for the ARGUMENT_TOOLS way of plugging in (HF_DIR,
OUT, --outtype and --mla-convention land in `Options`, --split-max-size in `args`);
`main` also runs when called with `Options` alone.
"""

from __future__ import annotations

import argparse

from ..runtime import Options
from .convert import OUTTYPES, convert
from .split_options import add_split_flags, parse_size


def add_arguments(parser: argparse.ArgumentParser, add_model_flags) -> None:
    parser.add_argument("inputs", nargs=2, metavar="PATH", help="the Hugging Face checkpoint directory, then the output GGUF file")
    parser.add_argument(
        "--outtype",
        dest="outtype",
        default="f16",
        choices=list(OUTTYPES),
        help="type of the 2-D weights (default f16)",
    )
    parser.add_argument(
        "--mla-convention",
        dest="mla_convention",
        default="ik",
        choices=["ik", "mainline-old", "mainline-new"],
        help="DeepSeek MLA tensors to write: ik (kv_b, k_b, v_b), mainline-old (kv_b), mainline-new (k_b, v_b)",
    )
    add_split_flags(parser, tensors_flag=False)


def main(options: Options, args: argparse.Namespace | None = None) -> int:
    hf_dir, out = options.inputs
    max_size = getattr(args, "split_max_size", None)
    split_max_size = parse_size(max_size) if max_size is not None else None
    path = convert(
        hf_dir,
        out,
        outtype=options.outtype,
        mla_convention=options.mla_convention,
        split_max_size=split_max_size,
    )
    print(f"kiln convert: wrote {path}")
    return 0
