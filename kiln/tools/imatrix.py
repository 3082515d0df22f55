"""`kiln imatrix`: collect an importance matrix over a text file, as ik_llama.cpp's llama-imatrix.

For every weight product of the model, the mean of the squared input activations per
column (per expert for the 3D expert tensors, counting only the tokens routed to each
expert) over `--chunks` chunks of `-c` tokens: what llama-quantize uses to weight the
quantization error. See docs/imatrix.md.

    kiln imatrix -m model.gguf -f calibration.txt -o imatrix.dat [--chunks N] [--no-ppl]
    kiln imatrix -m model.gguf -f more.txt --in-file imatrix.dat -o imatrix2.dat   (continue)
    kiln imatrix -m model.gguf --in-file a.dat --in-file b.gguf -o ab.dat          (merge only)

The output is the legacy `.dat` format (ik_llama.cpp's) unless the name ends in .gguf
or --output-format gguf asks for mainline's GGUF imatrix.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import KilnError, OptionError
from ..kernels import observe
from ..quants.imatrix_files import output_format
from ..runtime import Options
from ..runtime.imatrix_collector import ImatrixCollector, name_per_head_weights, tensor_filter
from .common import load_engine
from .imatrix_inputs import load_in_files, model_tensor_shapes
from .imatrix_output import ImatrixOutput
from .imatrix_run import ChunkPlan, run_chunks

DEFAULT_CTX = 512


def add_arguments(parser: argparse.ArgumentParser, add_model_flags) -> None:
    add_model_flags(parser)
    parser.set_defaults(ctx_size=DEFAULT_CTX)
    g = parser.add_argument_group("imatrix")
    g.add_argument("-f", "--file", dest="file", help="the calibration text")
    g.add_argument("-o", "--output", "--output-file", dest="out_file", default="imatrix.dat",
                   help="output file (default imatrix.dat; a .gguf name writes the GGUF format)")
    g.add_argument("--output-format", dest="output_format", choices=["dat", "gguf"],
                   help="dat (ik_llama.cpp's legacy format) or gguf (mainline's); default: from the name")
    g.add_argument("--in-file", dest="in_files", action="append", default=[], metavar="FILE",
                   help="an imatrix to merge (either format; repeatable); without -f the files are only merged")
    g.add_argument("-ofreq", "--output-frequency", dest="output_frequency", type=int, default=10,
                   help="write the imatrix every N chunks (default 10)")
    g.add_argument("--save-frequency", dest="save_frequency", type=int, default=0,
                   help="also keep a copy FILE.at_<chunks> every N chunks (default 0: never)")
    g.add_argument("--chunks", dest="n_chunks", type=int, default=-1, help="use at most N chunks (-1: all)")
    g.add_argument("--chunk", "--from-chunk", dest="from_chunk", type=int, default=0,
                   help="skip the first N chunks of the text")
    g.add_argument("--process-output", dest="process_output", action="store_true",
                   help="collect the output tensor's input too")
    g.add_argument("--output-tensor-name", dest="output_tensor_name", default="output.weight",
                   help="the output tensor's name (default output.weight)")
    g.add_argument("--no-ppl", dest="no_ppl", action="store_true", help="do not compute the perplexity")
    g.add_argument("--verbosity", dest="verbosity", type=int, default=1, help="0: no 'stored collected data' lines")


def main(options: Options, args: argparse.Namespace) -> int:
    _check_flags(options, args)
    output = ImatrixOutput(args.out_file, output_format(args.out_file, args.output_format),
                           args.output_frequency, args.save_frequency, args.verbosity)
    model_path, shapes = model_tensor_shapes(options.model)
    step = max(1, min(options.ubatch_size, options.batch_size, options.ctx_size))
    stats = load_in_files(args.in_files, shapes, model_path, step)
    if not options.file:  # merge only
        stats.chunk_size = stats.chunk_size or options.ctx_size
        print(f"main : saving combined imatrix to '{args.out_file}'", file=sys.stderr)
        output.save(stats)
        return 0
    text_path = Path(options.file)
    if not text_path.is_file():
        raise KilnError(f"{text_path}: no such text file (-f)")
    options.batch_size = min(options.batch_size, options.ctx_size)
    engine, tokenizer = load_engine(options)
    try:
        tokens = _tokenize(tokenizer, text_path)
        n_ctx = options.ctx_size
        if args.from_chunk > 0:
            if (args.from_chunk + 2) * n_ctx >= len(tokens):
                raise KilnError(f"{text_path}: there will be not enough tokens left after removing {args.from_chunk} "
                                f"chunks ({len(tokens)} tokens, {n_ctx} per chunk): lower --chunk")
            _log(f"compute_imatrix: removing initial {args.from_chunk} chunks ({args.from_chunk * n_ctx} tokens)")
            tokens = tokens[args.from_chunk * n_ctx :]
        if len(tokens) < 2 * n_ctx:
            raise KilnError(f"{text_path} tokenizes to only {len(tokens)} tokens; an imatrix with a context of {n_ctx} "
                            f"needs at least {2 * n_ctx}: use a longer text or a smaller -c")
        n_chunk_max = len(tokens) // n_ctx
        n_chunk = n_chunk_max if args.n_chunks < 0 else min(args.n_chunks, n_chunk_max)
        plan = ChunkPlan(n_ctx, n_chunk, step, tokenizer.bos_id if tokenizer.add_bos else None,
                         not args.no_ppl, args.process_output)
        stats.datasets.append(options.file)
        stats.chunk_size = n_ctx
        collector = ImatrixCollector(tensor_filter(args.process_output, args.output_tensor_name, options.mla), stats)
        _log(f"compute_imatrix: computing over {n_chunk} chunks with batch_size {options.batch_size}")
        with observe.observing(collector):
            named = name_per_head_weights(engine.model)
            collector.fold_heads = {n for n in named if len(shapes.get(n, ())) == 2}
            acc = run_chunks(engine, tokens, plan, collector, output)
        output.save(stats)
        if acc is not None:
            ppl, err = acc.estimate()
            if err == err:
                print(f"Final estimate: PPL = {ppl:.4f} +/- {err:.5f}")
            else:
                print("Unexpected negative standard deviation of log(prob)")
    finally:
        engine.close()
    return 0


def _check_flags(options: Options, args: argparse.Namespace) -> None:
    if not options.file and not args.in_files:
        raise OptionError("no text: give the calibration text with -f FILE (or imatrix files to merge with --in-file)")
    if options.ctx_size < 4:
        raise OptionError(f"-c {options.ctx_size}: an imatrix needs a context of at least 4 tokens (default 512)")
    if args.output_frequency < 1:
        raise OptionError(f"--output-frequency {args.output_frequency}: must be at least 1 (chunks between writes)")
    if args.save_frequency < 0:
        raise OptionError(f"--save-frequency {args.save_frequency}: must be 0 (never) or a number of chunks")
    if args.from_chunk < 0:
        raise OptionError(f"--chunk {args.from_chunk}: cannot skip a negative number of chunks")
    if args.n_chunks == 0 or args.n_chunks < -1:
        raise OptionError(f"--chunks {args.n_chunks}: give a positive number of chunks (-1: all)")


def _tokenize(tokenizer, path: Path) -> list[int]:
    _log("compute_imatrix: tokenizing the input ..")
    t0 = time.perf_counter()
    tokens = tokenizer.encode(path.read_text(encoding="utf-8", errors="replace"), add_special=True)
    _log(f"compute_imatrix: tokenization took {1e3 * (time.perf_counter() - t0):g} ms")
    return list(tokens)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
