"""`kiln bench`: llama-bench. Prompt processing (ppN), generation (tgN), both (ppP+tgG) and
generation after a prompt (tgG@ppP), optionally at a KV cache depth (`-d`), each repeated `-r`
times, over every combination of the comma lists given to the flags; printed as llama-bench's
markdown table (or CSV, JSON, JSON lines with `-o`).

    kiln bench -p 512 -n 128 -t 2 -r 3
    kiln bench -m a.gguf,b.gguf -ub 128,512 -ctk f16,q8_0 -fmoe 0,1 -ot "exps=CPU;" -o json

The model is loaded once per distinct load configuration: consecutive combinations that
differ only in threads share it. Flags that kiln accepts but does not act on yet (-ngl, -ot,
-rtr, -sm, -mg, -ts, -nkvo) are swept and shown all the same, with one note on stderr.
See docs/bench.md.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import sys
import time
from datetime import datetime, timezone
from typing import TextIO

import torch

from ..runtime import Options
from ..runtime.default_model import default_model_path
from .bench_info import ModelInfo, cpu_info, model_info
from .bench_params import (
    ALL_FLAGS,
    OUTPUT_FORMATS,
    THREAD_PAIRS,
    BenchParams,
    Instance,
    dest,
    expand,
    load_key,
    parse_params,
)
from .bench_table import PRINTERS, Result
from .bench_timing import Clock, Runner
from .common import load_engine

PARSES_OWN_FLAGS = True
CLOCK: Clock = time.perf_counter  # the clock main() measures with (tests put a fake one here)


def add_arguments(parser: argparse.ArgumentParser, add_model_flags) -> None:
    # let values such as `-ser -1,0,6,0.5` or `-ngl -1,99` through as values, not flags
    # (argparse's own pattern knows only plain negative numbers)
    parser._negative_number_matcher = re.compile(r"^-\d[\d.,;]*$")
    g = parser.add_argument_group("swept flags: each takes a comma list, and may be repeated to add values")
    for flag in ALL_FLAGS + (THREAD_PAIRS,):
        default = ",".join(_default_text(v) for v in flag.default) or "none"
        help_text = flag.help if "(default:" in flag.help else f"{flag.help} (default: {default})"
        g.add_argument(*flag.names, dest=dest(flag), action="append", metavar="LIST", help=help_text)
    b = parser.add_argument_group("bench")
    b.add_argument("-r", "--repetitions", dest="reps", default="5", help="repetitions of each test (default: 5)")
    b.add_argument("-o", "--output", dest="output", default="md", help=f"output format: {', '.join(OUTPUT_FORMATS)} (default: md)")
    b.add_argument("-w", "--warmup", dest="warmup", default="1", help="0|1: an untimed warm-up run per test (default: 1)")
    b.add_argument("-v", "--verbose", dest="verbose", action="store_true", help="show kiln's log lines (model loading)")
    b.add_argument("--print-overrides", dest="print_overrides", default="0",
                   help="0|1: show the -ot column even when -ot is not swept (default: 0)")


def _default_text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(_default_text(v) for v in value) if value else "none"
    return str(value)


def main(options: Options, args: argparse.Namespace) -> int:
    raw = {dest(f): getattr(args, dest(f), None) for f in ALL_FLAGS + (THREAD_PAIRS,)}
    params = parse_params(raw, reps=args.reps, output=args.output, warmup=args.warmup, verbose=args.verbose,
                          print_overrides=args.print_overrides, default_threads=torch.get_num_threads())
    run_bench(params, sys.stdout, clock=CLOCK)
    return 0


def options_for(inst: Instance, n_ctx: int) -> Options:
    """The engine options of one combination; its context fits the largest test of the run."""
    s = inst.settings
    k, t = s["ser"]
    gen_threads, batch_threads = s["n_threads"]
    return Options(
        model=s["model"], ctx_size=n_ctx, batch_size=s["n_batch"], ubatch_size=s["n_ubatch"],
        threads=gen_threads, threads_batch=batch_threads, cache_type_k=s["type_k"], cache_type_v=s["type_v"],
        no_mmap=not s["use_mmap"], n_gpu_layers=s["n_gpu_layers"], override_tensor=list(s["override_tensor"]),
        tensor_split="/".join(f"{v:g}" for v in s["tensor_split"]) or None, main_gpu=s["main_gpu"],
        split_mode=None if s["split_mode"] == "layer" else s["split_mode"], flash_attn=s["flash_attn"],
        mla=s["mla_attn"], attn_max_batch=s["attn_max_batch"], fused_moe=s["fused_moe"],
        ser=None if k < 0 else f"{k},{t:g}", run_time_repack=s["repack"],
    )


INERT_ORDER = ("-ngl", "-ot", "-ts", "-mg", "-sm", "-op", "-nkvo")


def inert_flags(instances: list[Instance], n_ctx: int) -> list[str]:
    """The flags kiln accepts but does not act on, among those given a non-default value."""
    found: set[str] = set()
    for inst in instances:
        found.update(options_for(inst, n_ctx).ignored_flags())
        if inst.settings["no_kv_offload"]:
            found.add("-nkvo")
    return sorted(found, key=lambda f: INERT_ORDER.index(f) if f in INERT_ORDER else len(INERT_ORDER))


def run_bench(params: BenchParams, out: TextIO, clock: Clock = time.perf_counter, load=load_engine,
              err: TextIO | None = None) -> list[Result]:
    """Run every test of every combination, printing each row as it is measured."""
    err = err or sys.stderr
    instances = expand(params)
    n_ctx = max(inst.test.n_ctx for inst in instances)
    inert = inert_flags(instances, n_ctx)
    if inert:
        print(f"kiln: note: {' '.join(inert)} accepted but not used by this version (CPU only)", file=err)
    printer = PRINTERS[params.output](out, params)
    printer.header()
    logger = logging.getLogger("kiln")
    saved_level, saved_threads = logger.level, torch.get_num_threads()
    if not params.verbose:
        logger.setLevel(logging.WARNING)
    infos: dict[str, ModelInfo] = {}
    rng = random.Random(0)
    cpu = cpu_info()
    results: list[Result] = []
    engine, key, runner = None, None, None
    try:
        for inst in instances:
            if engine is None or load_key(inst) != key:
                if engine is not None:
                    engine.close()
                    engine = None
                engine, tokenizer = load(options_for(inst, n_ctx))
                key = load_key(inst)
                bos = tokenizer.bos_id if tokenizer.add_bos else None
                runner = Runner(engine, engine.hparams.n_vocab, bos, clock=clock, rng=rng)
            path = inst.settings["model"] or str(default_model_path())
            if path not in infos:
                infos[path] = model_info(path)
            test_time = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            samples = runner.measure(inst, params.reps, params.warmup)
            result = Result(inst, infos[path], samples, test_time, cpu)
            results.append(result)
            printer.row(result)
        printer.footer()
    finally:
        if engine is not None:
            engine.close()
        logger.setLevel(saved_level)
        torch.set_num_threads(saved_threads)
    return results
