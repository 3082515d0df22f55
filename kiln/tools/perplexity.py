"""`kiln perplexity`: llama-perplexity's method, output and files.

The text is tokenized once and cut into chunks of `-c` tokens (BOS in place of each
chunk's first token when the model adds one); each chunk is evaluated from an empty
cache and its second half is scored (positions n_ctx/2 .. n_ctx-2 predicting the next
token). Progress is the cumulative PPL, `[1]12.8431,[2]21.6838,...`, then
`Final estimate: PPL over N chunks for n_ctx=C = x +/- y`.

`--kl-divergence-base FILE` also writes the scored log-probabilities in ik_llama.cpp's
format; `--kl-divergence --kl-divergence-base FILE` evaluates the text stored in that
file and compares against it (KLD, its percentiles, Δp, same top token), printing what
llama-perplexity prints. `--json` prints the figures as one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import KilnError, NumericalError, OptionError
from ..runtime import BatchItem, Options
from . import perplexity_report as report
from .common import load_engine
from .perplexity_kld_file import KLDBaseWriter, read_kld_base
from .perplexity_stats import KLDAccumulator, PerplexityAccumulator, pack_log_probs, token_nll

DEFAULT_CTX = 512


def add_arguments(parser: argparse.ArgumentParser, add_model_flags) -> None:
    add_model_flags(parser)
    parser.set_defaults(ctx_size=DEFAULT_CTX)
    g = parser.add_argument_group("perplexity")
    g.add_argument("-f", "--file", dest="file", help="the text to score (e.g. wiki.test.raw)")
    g.add_argument("--chunks", dest="n_chunks", type=int, default=-1, help="score at most N chunks (-1: all)")
    g.add_argument("--kl-divergence-base", dest="kld_base", metavar="FILE",
                   help="write the log-probabilities here (or, with --kl-divergence, read them from here)")
    g.add_argument("--kl-divergence", dest="kl_divergence", action="store_true",
                   help="compare against the --kl-divergence-base file of a base model")
    g.add_argument("--ppl-output-type", dest="ppl_output_type", type=int, default=0, choices=[0, 1],
                   help="0: [1]x,[2]y,...; 1: one line per chunk (tokens, PPL, mean nll, its uncertainty)")
    g.add_argument("--json", dest="json", action="store_true", help="print the results as JSON on stdout")


def main(options: Options, args: argparse.Namespace) -> int:
    if options.ctx_size < 4:
        raise OptionError(f"-c {options.ctx_size}: perplexity needs a context of at least 4 tokens (default 512)")
    if args.kl_divergence:
        if not args.kld_base:
            raise OptionError("--kl-divergence needs --kl-divergence-base FILE: the base model's log-probabilities, "
                              "written by `kiln perplexity -m BASE.gguf -f TEXT --kl-divergence-base FILE`")
        return _kl_divergence(options, args)
    return _perplexity(options, args)


def _progress(text: str, to_json: bool) -> None:
    out = sys.stderr if to_json else sys.stdout
    out.write(text)
    out.flush()


def _eval_chunks(engine, chunks: list[list[int]], first: int, chunk0: int) -> list[torch.Tensor]:
    """Logits of positions first..n-1 of each chunk, evaluated together as separate sequences
    from empty caches. On NaN/Inf the chunks are evaluated one by one to name the culprit."""
    for seq in range(len(chunks)):
        engine.reset(seq)
    try:
        return engine.eval_batch([BatchItem(seq, c, first) for seq, c in enumerate(chunks)])
    except NumericalError as e:
        if len(chunks) == 1:
            raise NumericalError(f"chunk {chunk0}: {e}") from None
    for j, c in enumerate(chunks):
        _eval_chunks(engine, [c], first, chunk0 + j)
    raise NumericalError(f"chunks {chunk0}..{chunk0 + len(chunks) - 1}: NaN or Inf in a batch but in no chunk alone")


def _eta_line(seconds: float, n_passes: int) -> str:
    total = int(seconds * n_passes)
    hours = f"{total // 3600} hours " if total >= 3600 else ""
    return f"perplexity: {seconds:.2f} seconds per pass - ETA {hours}{(total % 3600) / 60.0:.2f} minutes"


def _check_batch(options: Options, n_ctx: int) -> int:
    """n_seq as llama-perplexity derives it from -b and -c."""
    n_batch = options.batch_size
    if not (n_batch < n_ctx or n_batch % n_ctx == 0):
        raise OptionError(f"-b {n_batch} with -c {n_ctx}: the batch must be smaller than the context or a multiple "
                          f"of it (e.g. -b {n_ctx * max(1, n_batch // n_ctx)})")
    return max(1, n_batch // n_ctx)


def _perplexity(options: Options, args: argparse.Namespace) -> int:
    if not options.file:
        raise OptionError("no text: give the file to score with -f (e.g. -f wiki.test.raw)")
    path = Path(options.file)
    if not path.is_file():
        raise KilnError(f"{path}: no such text file (-f)")
    n_ctx = options.ctx_size
    n_seq = _check_batch(options, n_ctx)
    engine, tokenizer = load_engine(options)
    writer = None
    try:
        log = report.stderr
        log("perplexity: tokenizing the input ..")
        t0 = time.perf_counter()
        tokens = tokenizer.encode(path.read_text(encoding="utf-8", errors="replace"), add_special=True)
        log(f"perplexity: tokenization took {1e3 * (time.perf_counter() - t0):g} ms")
        if len(tokens) < 2 * n_ctx:
            raise KilnError(f"{path} tokenizes to only {len(tokens)} tokens; perplexity with a context of {n_ctx} "
                            f"needs at least {2 * n_ctx}: use a longer text or a smaller -c")
        n_chunk_max = len(tokens) // n_ctx
        n_chunk = n_chunk_max if args.n_chunks < 0 else min(args.n_chunks, n_chunk_max)
        if n_chunk < 1:
            raise OptionError(f"--chunks {args.n_chunks}: nothing to score")
        bos = tokenizer.bos_id if tokenizer.add_bos else None
        first = n_ctx // 2
        log(f"perplexity: calculating perplexity over {n_chunk} chunks, n_ctx={n_ctx}, "
            f"batch_size={options.batch_size}, n_seq={n_seq}")
        if args.kld_base:
            writer = KLDBaseWriter(args.kld_base, n_ctx, engine.hparams.n_vocab, np.asarray(tokens), n_chunk)
            log(f"perplexity: saving all logits to {args.kld_base}")
        acc = PerplexityAccumulator()
        cumulative: list[float] = []
        for i in range(0, n_chunk, n_seq):
            chunks = []
            for j in range(i, min(i + n_seq, n_chunk)):
                chunk = tokens[j * n_ctx : (j + 1) * n_ctx]
                chunks.append([bos, *chunk[1:]] if bos is not None else chunk)
            t_start = time.perf_counter()
            batch_logits = _eval_chunks(engine, chunks, first, i + 1)
            if i == 0:
                log(_eta_line(time.perf_counter() - t_start, -(-n_chunk // n_seq)))
            for j, (chunk, logits) in enumerate(zip(chunks, batch_logits, strict=True)):
                logits = logits[:-1]
                nll = token_nll(logits, torch.tensor(chunk[first + 1 :]))
                acc.add(nll)
                if writer is not None:
                    writer.write_chunk(pack_log_probs(logits))
                cumulative.append(acc.ppl())
                if args.ppl_output_type == 0:
                    _progress(f"[{i + j + 1}]{cumulative[-1]:.4f},", options.json)
                else:
                    mean, err = report.mean_nll(acc)
                    _progress(f"{(i + j) * n_ctx:8d}  {cumulative[-1]:.4f}  {mean:4f}  {err:4f}\n", options.json)
        _progress("\n", options.json)
        if writer is not None:
            writer.commit()
            writer = None
        ppl, err = acc.estimate()
        if options.json:
            print(json.dumps({"n_ctx": n_ctx, "n_chunk": n_chunk, "n_chunk_max": n_chunk_max, "n_tokens_scored": acc.count,
                              "ppl": ppl, "ppl_err": err, "chunks": cumulative}, indent=1))
        elif err == err:  # not NaN
            print(f"Final estimate: PPL over {n_chunk} chunks for n_ctx={n_ctx} = {ppl:.4f} +/- {err:.5f}")
        else:
            print("Unexpected negative standard deviation of log(prob)")
    finally:
        if writer is not None:
            writer.abort()
        engine.close()
    return 0


def _kl_divergence(options: Options, args: argparse.Namespace) -> int:
    base = read_kld_base(args.kld_base)
    n_ctx = base.n_ctx
    if options.ctx_size not in (n_ctx, DEFAULT_CTX):
        report.stderr(f"kl-divergence: using the base file's context n_ctx={n_ctx} (-c {options.ctx_size} ignored)")
    options.ctx_size = n_ctx
    engine, tokenizer = load_engine(options)
    try:
        if base.n_vocab != engine.hparams.n_vocab:
            raise KilnError(f"{base.path} was written by a model with a vocabulary of {base.n_vocab} tokens; this "
                            f"model has {engine.hparams.n_vocab}: KL-divergence needs the same vocabulary "
                            "(a quantization of the same base model)")
        bad = int(base.tokens.max()) if base.tokens.size else 0
        if bad >= engine.hparams.n_vocab or int(base.tokens.min()) < 0:
            raise KilnError(f"{base.path}: token id {bad} outside this model's vocabulary: the file is corrupt")
        n_chunk = base.n_chunk if args.n_chunks < 0 else min(args.n_chunks, base.n_chunk)
        first = n_ctx // 2
        bos = tokenizer.bos_id if tokenizer.add_bos else None
        acc = KLDAccumulator(base.n_vocab)
        for i in range(n_chunk):
            chunk = [int(t) for t in base.tokens[i * n_ctx : (i + 1) * n_ctx]]
            if bos is not None:
                chunk[0] = bos
            t_start = time.perf_counter()
            logits = _eval_chunks(engine, [chunk], first, i + 1)[0][:-1]
            if i == 0:
                report.stderr(_eta_line(time.perf_counter() - t_start, n_chunk).replace("perplexity:", "kl_divergence:"))
                _progress("\n" + report.KLD_CHUNK_HEADER + "\n", options.json)
            acc.add(logits, base.chunk(i), torch.tensor(chunk[first + 1 :]))
            line = report.kld_chunk_line(i + 1, acc)
            _progress(line + "\n", options.json)
        _progress("\n", options.json)
        if options.json:
            print(json.dumps(report.kld_json(acc, n_ctx, n_chunk), indent=1))
        elif acc.count >= 100:
            print(report.kld_summary(acc))
        else:
            report.stderr(f"kl-divergence: only {acc.count} tokens scored; the statistics need at least 100")
    finally:
        engine.close()
    return 0
