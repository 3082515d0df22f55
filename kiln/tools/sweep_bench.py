"""`kiln sweep-bench`: llama-sweep-bench. Speed of prompt processing and generation as the
KV cache fills up, one row per -ub chunk up to -c:

    kiln sweep-bench -c 2048 -ub 512 -t 2
    kiln sweep-bench -c 8192 -ub 512 --json > run.json      # then: kiln plot sweep run.json

The `main: n_kv_max = ...` line and the table go to stdout (llama-sweep-bench prints them
to stderr with its log). See docs/bench.md.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from ..errors import OptionError
from ..runtime import Options
from ..runtime.default_model import default_model_path
from .common import load_engine
from .sweep_bench_format import SweepSettings, header_line, json_document, jsonl_row, table_header, table_row
from .sweep_bench_run import Clock, SweepConfig, run_sweep, sweep_config

CLOCK: Clock = time.perf_counter  # the clock main() measures with (tests put a fake one here)
OUTPUT_FORMATS = ("md", "table", "jsonl")


def add_arguments(parser: argparse.ArgumentParser, add_model_flags) -> None:
    add_model_flags(parser)
    g = parser.add_argument_group("sweep-bench")
    g.add_argument("-n", "--n-predict", dest="n_predict", type=int, default=-1,
                   help="tokens generated at each depth (default: -ub / 4)")
    g.add_argument("-nrep", "--n-repetitions", dest="nrep", type=int, default=1,
                   help="repetitions of the first row, whose times are averaged (default: 1)")
    g.add_argument("--sweep-stride", dest="sweep_stride", type=int, default=1, help="measure every Nth row (default: 1)")
    g.add_argument("-wb", "--warmup-batch", dest="warmup_batch", action="store_true",
                   help="a warm-up batch of -ub tokens before the sweep")
    g.add_argument("--no-warmup", dest="no_warmup", action="store_true", help="skip the one-token warm-up")
    g.add_argument("--output-format", dest="output_format", default="md", help="md (the table) or jsonl")
    g.add_argument("--json", dest="json", action="store_true",
                   help="print one JSON document (settings and rows) instead of the table")


def main(options: Options, args: argparse.Namespace) -> int:
    if args.output_format not in OUTPUT_FORMATS:
        raise OptionError(f"--output-format {args.output_format}: use md or jsonl (or --json for one JSON document)")
    fmt = "json" if options.json else ("jsonl" if args.output_format == "jsonl" else "md")

    def config(n_ctx: int) -> SweepConfig:
        return sweep_config(n_ctx, options.batch_size, options.ubatch_size, options.n_predict, args.nrep,
                            args.sweep_stride, warmup=not args.no_warmup, batch_warmup=args.warmup_batch)

    if options.ctx_size > 0:
        config(options.ctx_size)  # bad flags fail before the model loads
    engine, tokenizer = load_engine(options)
    try:
        cfg = config(engine.n_ctx)
        threads = options.threads or torch.get_num_threads()
        settings = SweepSettings(engine.n_ctx, options.batch_size, options.ubatch_size, int(options.flash_attn),
                                 options.n_gpu_layers, threads, options.threads_batch or threads)
        bos = tokenizer.bos_id if tokenizer.bos_id is not None else 0
        rows = run_sweep(engine, cfg, engine.hparams.n_vocab, bos, clock=CLOCK)
        write(sys.stdout, fmt, settings, str(options.model or default_model_path()), rows)
    finally:
        engine.close()
    return 0


def write(out, fmt: str, settings: SweepSettings, model: str, rows) -> None:
    """Print the rows as they come (the JSON document at the end)."""
    if fmt == "md":
        out.write(f"\n{header_line(settings)}\n\n{table_header()}\n")
        out.flush()
    done = []
    for row in rows:
        done.append(row)
        if fmt == "md":
            out.write(table_row(row) + "\n")
        elif fmt == "jsonl":
            out.write(jsonl_row(settings, row) + "\n")
        out.flush()
    if fmt == "json":
        out.write(json_document(settings, model, done))
        out.flush()
