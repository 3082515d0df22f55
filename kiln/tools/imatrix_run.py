"""The collection loop of `kiln imatrix`, llama-imatrix's `compute_imatrix`.

The text's tokens are cut into chunks of -c tokens (BOS in place of each chunk's first
token when the model adds one); each chunk is evaluated from an empty cache, in
micro-batches of min(-b, -ub, -c) tokens, one forward pass each, so that the collector
counts one call per micro-batch as llama-imatrix does. Unless --no-ppl, the second half
of each chunk is scored as in perplexity (positions n_ctx/2 .. n_ctx-2 predicting the
next token) and the running PPL printed, `[1]12.8431,[2]21.6838,...`; after the first
chunk the time per chunk and the ETA go to stderr.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch

from ..errors import KilnError
from ..runtime import BatchItem
from ..runtime.imatrix_collector import MIN_ROWS, ImatrixCollector
from .imatrix_output import ImatrixOutput
from .perplexity_stats import PerplexityAccumulator, token_nll


@dataclass
class ChunkPlan:
    n_ctx: int
    n_chunk: int
    step: int  # tokens per forward pass
    bos: int | None  # the token put first in each chunk, or None
    compute_ppl: bool
    all_logits: bool  # --process-output: every token goes through the output matrix


def eta_line(seconds: float, n_chunk: int) -> str:
    total = int(seconds * n_chunk)
    hours = f"{total // 3600} hours " if total >= 3600 else ""
    return f"compute_imatrix: {seconds:.2f} seconds per pass - ETA {hours}{(total % 3600) / 60.0:.2f} minutes"


def run_chunks(engine, tokens: list[int], plan: ChunkPlan, collector: ImatrixCollector, output: ImatrixOutput):
    """Evaluate the chunks, collecting; returns the perplexity accumulator (None with --no-ppl)."""
    acc = PerplexityAccumulator() if plan.compute_ppl else None
    first = plan.n_ctx // 2
    t_begin = time.perf_counter()
    for i in range(plan.n_chunk):
        chunk = tokens[i * plan.n_ctx : (i + 1) * plan.n_ctx]
        if plan.bos is not None:
            chunk[0] = plan.bos
        t_start = time.perf_counter()
        logits = _eval_chunk(engine, chunk, plan, first if plan.compute_ppl else None, collector)
        collector.stats.chunks += 1
        if i == 0:
            print(eta_line(time.perf_counter() - t_start, plan.n_chunk), file=sys.stderr, flush=True)
            if not collector.n_observed:
                raise KilnError(f"no weight product saw {MIN_ROWS} tokens or more: raise -ub and -b (llama-imatrix, "
                                "and kiln, skip matrix products over fewer tokens)")
        if acc is not None:
            acc.add(token_nll(logits[:-1], torch.tensor(chunk[first + 1 :])))
            print(f"[{i + 1}]{acc.ppl():.4f},", end="", flush=True)
        elif sys.stderr.isatty():
            left = (time.perf_counter() - t_begin) / (i + 1) * (plan.n_chunk - i - 1)
            print(f"\rcompute_imatrix: chunk {i + 1}/{plan.n_chunk}, {left / 60:.2f} minutes left ",
                  end="", file=sys.stderr, flush=True)
        output.after_chunk(collector.stats, i + 1, last=i + 1 == plan.n_chunk)
    print(flush=True)
    return acc


def _eval_chunk(engine, chunk: list[int], plan: ChunkPlan, first: int | None, collector) -> torch.Tensor | None:
    """Evaluate one chunk pass by pass; the logits of rows `first`.. (None: no logits needed)."""
    engine.reset(0)
    parts = []
    for a in range(0, len(chunk), plan.step):
        b = min(a + plan.step, len(chunk))
        if plan.all_logits:
            from_row = 0
        elif first is not None and b > first:
            from_row = max(first - a, 0)
        else:
            from_row = b - a  # none: the pass only fills the cache
        logits = engine.eval_batch([BatchItem(0, chunk[a:b], from_row)])[0]
        collector.end_pass()
        if first is not None and b > first:
            parts.append(logits[max(first - a, 0) :] if plan.all_logits else logits)
    return torch.cat(parts) if parts else None
