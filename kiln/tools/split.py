"""`kiln split`: llama-gguf-split. Split a GGUF model into shards, or merge shards into one file.

    kiln split --split-max-size 50G model.gguf out/model        # out/model-00001-of-0000N.gguf ...
    kiln split --split-max-tensors 128 model.gguf out/model
    kiln split --merge out/model-00001-of-00003.gguf model.gguf
    kiln split --dry-run --split-max-size 2G model.gguf out/model  # print the plan only

The shards are those llama-gguf-split writes for the same flags (see kiln.gguf.split),
and the printed plan has its lines. Outputs are written under temporary names and renamed
at the end; an existing output is an error unless --force.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import OptionError
from ..gguf import GGUFFile
from ..gguf.split import Shard, SplitTensor, merge_split, plan_split, write_split
from ..runtime.options import Options
from .split_options import add_split_flags, split_limits


def add_arguments(parser: argparse.ArgumentParser, add_model_flags) -> None:
    op = parser.add_mutually_exclusive_group()
    op.add_argument(
        "--split",
        dest="operation",
        action="store_const",
        const="split",
        help="split IN into shards OUT-0000i-of-0000N.gguf (the default)",
    )
    op.add_argument(
        "--merge",
        dest="operation",
        action="store_const",
        const="merge",
        help="merge the split set IN (its first shard) into one file OUT",
    )
    add_split_flags(parser)
    parser.add_argument(
        "--no-tensor-first-split",
        dest="no_tensor_first_split",
        action="store_true",
        help="put only the metadata in the first shard",
    )
    parser.add_argument(
        "--dry-run", dest="dry_run", action="store_true", help="print the plan and write nothing"
    )
    parser.add_argument("--force", dest="force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--json", dest="json", action="store_true", help="print the plan as JSON")
    parser.add_argument("input", metavar="GGUF_IN", help="the model (for --merge: the first shard)")
    parser.add_argument(
        "output", metavar="GGUF_OUT", help="the shard name prefix (for --merge: the output file)"
    )


def main(options: Options, args: argparse.Namespace) -> int:
    args.json = bool(getattr(args, "json", False) or options.json)  # --json is an Options field
    if (args.operation or "split") == "merge":
        return _merge(args)
    return _split(args)


def _split(args: argparse.Namespace) -> int:
    limits = split_limits(args.split_max_size, args.split_max_tensors, args.no_tensor_first_split)
    with GGUFFile(args.input) as f:
        tensors = [
            SplitTensor(name, info.shape, info.type_id, lambda name=name: f.tensor_bytes(name))
            for name, info in f.tensors.items()
        ]
        inputs = {p.resolve() for p in f.paths}
        shards = plan_split(args.output, f.metadata, f.value_types, tensors, limits)
        clash = [s.path for s in shards if s.path.resolve() in inputs]
        if clash:
            raise OptionError(f"{clash[0]}: is also an input file; give another output prefix")
        if not args.json:
            _print_plan(shards)
        if not args.dry_run:
            write_split(
                args.output,
                f.metadata,
                f.value_types,
                tensors,
                limits,
                force=args.force,
                progress=None if args.json else lambda s: print(f"Writing file {s.path} ...", flush=True),
            )
    if args.json:
        print(json.dumps(_plan_json("split", shards), indent=1))
    elif not args.dry_run:
        print(f"kiln split: {len(shards)} shards written with a total of {len(tensors)} tensors.")
    return 0


def _merge(args: argparse.Namespace) -> int:
    if args.split_max_size is not None or args.split_max_tensors is not None or args.no_tensor_first_split:
        raise OptionError(
            "--split-max-size, --split-max-tensors and --no-tensor-first-split apply to --split, not --merge"
        )
    plan, parts = merge_split(
        args.input,
        args.output,
        force=args.force,
        dry_run=args.dry_run,
        progress=None if args.json else lambda out: print(f"Writing file {out} ...", flush=True),
    )
    if args.json:
        print(json.dumps({**_plan_json("merge", [plan]), "parts": [str(p) for p in parts]}, indent=1))
        return 0
    if args.dry_run:
        print(
            f"kiln split: would merge {len(parts)} splits with {len(plan.tensors)} tensors into {plan.path} "
            f"({plan.size} bytes)."
        )
    else:
        print(f"kiln split: {plan.path} merged from {len(parts)} splits with {len(plan.tensors)} tensors.")
    return 0


def _print_plan(shards: list[Shard]) -> None:
    """llama-gguf-split's plan lines (sizes in units of 10^6 bytes, rounded down)."""
    print(f"n_split: {len(shards)}")
    for no, s in enumerate(shards, 1):
        print(
            f"split {no:05d}: n_tensors = {len(s.tensors)}, total_size = {s.ik_total_size // 1000 // 1000}M"
        )


def _plan_json(operation: str, shards: list[Shard]) -> dict:
    return {
        "operation": operation,
        "shards": [
            {"path": str(Path(s.path)), "n_tensors": len(s.tensors), "size": s.size, "tensors": s.tensors}
            for s in shards
        ],
    }
