"""`kiln quantize [options] IN.gguf [OUT.gguf] TYPE [nthreads]`: llama-quantize's command.

File types with ik_llama.cpp's default per-tensor mixtures, `--custom-q` recipes (first
matching regex wins) and recipe files, an imatrix (legacy .dat or GGUF), the imatrix rules
of very low-bit types, `--repack` to the row-interleaved CPU layouts, `--keep-split`, and
`--dry-run`, which prints the per-tensor plan and the exact size of the file without
reading any tensor data.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ..errors import KilnError, OptionError
from ..gguf import GGUFFile
from ..gguf.constants import ValueType
from . import quantize_imatrix
from .quantize_plan import (
    QuantizeSettings,
    make_plan,
    parse_custom_rules,
    parse_type,
    read_recipe,
)
from .quantize_report import print_dry_run, print_summary
from .quantize_run import Progress, build_writers, write_all

# --attn-q-type and friends: the tensor-name suffix each one sets
TENSOR_TYPE_FLAGS = {
    "attn_q_type": "attn_q.weight",
    "attn_k_type": "attn_k.weight",
    "attn_v_type": "attn_v.weight",
    "attn_qkv_type": "attn_qkv.weight",
    "attn_output_type": "attn_output.weight",
    "ffn_gate_type": "ffn_gate.weight",
    "ffn_down_type": "ffn_down.weight",
    "ffn_up_type": "ffn_up.weight",
    "ffn_gate_inp_type": "ffn_gate_inp.weight",
}


def add_arguments(parser: argparse.ArgumentParser, add_model_flags) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN.gguf [OUT.gguf] TYPE [nthreads]",
                        help="input file (first part of a split set), output file, file type or tensor type, threads")
    g = parser.add_argument_group("what to quantize to")
    g.add_argument("--pure", action="store_true", help="every tensor in TYPE, no per-tensor mixture")
    g.add_argument("--custom-q", dest="custom_q", action="append", default=[], metavar="REGEX=TYPE,...",
                   help="per-tensor rules, first match wins (repeatable)")
    g.add_argument("--custom-q-file", dest="custom_q_file", action="append", default=[], metavar="RECIPE",
                   help="rules from a file: one regex=type per line, # comments")
    g.add_argument("--token-embedding-type", dest="token_embedding_type", metavar="TYPE")
    g.add_argument("--output-tensor-type", dest="output_tensor_type", metavar="TYPE")
    g.add_argument("--leave-output-tensor", dest="leave_output_tensor", action="store_true")
    for dest, suffix in TENSOR_TYPE_FLAGS.items():
        g.add_argument("--" + dest.replace("_", "-"), dest=dest, metavar="TYPE", help=f"type of every {suffix}")
    g.add_argument("--allow-requantize", dest="allow_requantize", action="store_true",
                   help="allow quantized input tensors (quality suffers)")
    i = parser.add_argument_group("importance matrix")
    i.add_argument("--imatrix", dest="imatrix", metavar="FILE", help="legacy .dat or GGUF imatrix")
    i.add_argument("--include-weights", dest="include_weights", action="append", default=[], metavar="NAME",
                   help="use the imatrix only for tensors whose name contains NAME (repeatable)")
    i.add_argument("--exclude-weights", dest="exclude_weights", action="append", default=[], metavar="NAME",
                   help="do not use the imatrix for tensors whose name contains NAME (repeatable)")
    i.add_argument("--hide-imatrix", dest="hide_imatrix", action="store_true",
                   help="write 'top_secret' instead of the imatrix's file and dataset names")
    i.add_argument("--ignore-imatrix-rules", dest="ignore_imatrix_rules", action="store_true",
                   help="allow very low-bit types without an imatrix")
    o = parser.add_argument_group("output")
    o.add_argument("--repack", action="store_true",
                   help="repack tensors to their row-interleaved _R4/_R8 types (with no TYPE: repack only)")
    o.add_argument("--repack-pattern", dest="repack_pattern", action="append", default=[], metavar="REGEX,...",
                   help="repack only tensors matching one of these regexes")
    o.add_argument("--keep-split", dest="keep_split", action="store_true", help="one output shard per input part")
    o.add_argument("--override-kv", dest="override_kv", action="append", default=[], metavar="KEY=TYPE:VALUE",
                   help="set a metadata key (TYPE int, float, bool or str)")
    o.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="print the per-tensor plan and the predicted size; read and write no tensor data")
    o.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    o.add_argument("--force", action="store_true", help="overwrite an existing output file")


def _positionals(values: list[str], repack_only: bool) -> tuple[Path, Path | None, str | None, int]:
    values = list(values)
    n_threads = 0
    if len(values) >= 2 and re.fullmatch(r"\d+", values[-1]):
        n_threads = int(values.pop())
    if repack_only and len(values) == 2 and not _looks_like_type(values[1]):
        return Path(values[0]), Path(values[1]), None, n_threads
    if len(values) == 2:
        return Path(values[0]), None, values[1], n_threads
    if len(values) == 3:
        return Path(values[0]), Path(values[1]), values[2], n_threads
    raise OptionError("usage: kiln quantize [options] IN.gguf [OUT.gguf] TYPE [nthreads]")


def _looks_like_type(value: str) -> bool:
    return not value.lower().endswith(".gguf") and "/" not in value


def _override_kv(specs: list[str]) -> dict:
    kinds = {"int": ValueType.INT32, "float": ValueType.FLOAT32, "bool": ValueType.BOOL, "str": ValueType.STRING}
    out = {}
    for spec in specs:
        m = re.fullmatch(r"([^=]+)=(int|float|bool|str):(.*)", spec)
        if not m:
            raise OptionError(f"--override-kv {spec!r}: expected KEY=TYPE:VALUE with TYPE int, float, bool or str")
        key, kind, raw = m.groups()
        try:
            value = {"int": int, "float": float, "str": str}.get(kind, lambda v: v.lower() in ("true", "1"))(raw)
        except ValueError:
            raise OptionError(f"--override-kv {spec!r}: {raw!r} is not a {kind}") from None
        out[key] = (value, kinds[kind])
    return out


def _settings(args: argparse.Namespace, type_arg: str | None) -> QuantizeSettings:
    rules = []
    for path in args.custom_q_file:
        rules += parse_custom_rules(read_recipe(path), f"--custom-q-file {path}")
    rules = parse_custom_rules(args.custom_q) + rules
    overrides = {suffix: parse_type(getattr(args, dest), "--" + dest.replace("_", "-"))
                 for dest, suffix in TENSOR_TYPE_FLAGS.items() if getattr(args, dest)}
    patterns = []
    for spec in args.repack_pattern:
        for p in filter(None, spec.split(",")):
            try:
                patterns.append(re.compile(p))
            except re.error as e:
                raise OptionError(f"--repack-pattern: bad regex {p!r}: {e}") from None
    return QuantizeSettings(
        file_type=type_arg,
        pure=args.pure,
        custom_rules=rules,
        token_embedding_type=parse_type(args.token_embedding_type, "--token-embedding-type") if args.token_embedding_type else None,
        output_tensor_type=parse_type(args.output_tensor_type, "--output-tensor-type") if args.output_tensor_type else None,
        leave_output_tensor=args.leave_output_tensor,
        allow_requantize=args.allow_requantize,
        ignore_imatrix_rules=args.ignore_imatrix_rules,
        repack=args.repack,
        repack_patterns=patterns,
        tensor_type_overrides=overrides,
    )


def main(options, args: argparse.Namespace) -> int:
    src, out, type_arg, n_threads = _positionals(options.inputs, args.repack)
    if args.include_weights and args.exclude_weights:
        raise OptionError("--include-weights and --exclude-weights cannot be used together")
    if args.repack and type_arg is not None:
        print(f"kiln quantize: note: --repack only repacks; {type_arg} is not used (as in llama-quantize)",
              file=sys.stderr)
        type_arg = None
    settings = _settings(args, type_arg)
    if type_arg is not None:
        from . import quantize_rules

        quantize_rules.file_type(type_arg)  # unknown names fail before anything is opened
    if not src.is_file():
        raise KilnError(f"{src}: no such input file")
    imatrix = quantize_imatrix.load(args.imatrix, args.include_weights, args.exclude_weights) if args.imatrix else None
    with GGUFFile(src) as gguf:
        plan = make_plan(gguf, settings, imatrix.weights if imatrix else None)
        if out is None:
            out = src.parent / f"ggml-model-{(plan.file_type or 'repacked')}.gguf"
        if settings.custom_rules and (settings.pure or plan.file_type in ("F32", "F16", "BF16")):
            print("kiln quantize: warning: --custom-q rules are ignored with --pure and with float file types, "
                  "as in llama-quantize", file=sys.stderr)
        else:
            for rule in plan.unused_rules:
                print(f"kiln quantize: warning: custom rule {rule} matches no tensor", file=sys.stderr)
        extra_kv = quantize_imatrix.metadata(imatrix, args.imatrix, args.hide_imatrix) if imatrix else {}
        extra_kv.update(_override_kv(args.override_kv))
        progress = None if args.dry_run else Progress(plan)
        writers = build_writers(gguf, plan, out, extra_kv, args.keep_split, n_threads or 0,
                                imatrix.weights if imatrix else None, progress)
        if args.dry_run:
            sizes = [(w.path, w.planned_size()) for w in writers]
            if options.json:
                print(json.dumps(_plan_json(plan, sizes), indent=1))
            else:
                print_dry_run(plan, sizes)
            return 0
        existing = [w.path for w in writers if w.path.exists()]
        if existing and not args.force:
            raise KilnError(f"{existing[0]} already exists; choose another name or pass --force to overwrite it")
        if src.resolve() in {w.path.resolve() for w in writers}:
            raise KilnError(f"{src}: the output would overwrite the input")
        write_all(writers)
        print_summary(plan, [(w.path, w.path.stat().st_size) for w in writers])
    return 0


def _plan_json(plan, sizes) -> dict:
    return {
        "file_type": plan.file_type,
        "files": [{"path": str(p), "bytes": n} for p, n in sizes],
        "bytes": sum(n for _, n in sizes),
        "bytes_in": plan.bytes_in,
        "tensor_bytes": plan.bytes_out,
        "bpw": 8.0 * plan.bytes_out / max(plan.n_elements, 1),
        "bytes_by_placement": plan.bytes_by_placement(),
        "unused_rules": plan.unused_rules,
        "tensors": [{"name": t.name, "shape": list(t.shape), "from": t.src_type, "to": t.dst_type,
                     "action": t.action, "bytes": t.bytes_out, "imatrix": t.imatrix_key, "notes": t.notes}
                    for t in plan.tensors],
    }
