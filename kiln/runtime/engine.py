"""The Engine: load a GGUF model, evaluate token batches into logits, generate tokens.

    engine = Engine.load("model.gguf", Options(ctx_size=4096))
    logits = engine.eval(tokens, seq=0)        # [len(tokens), n_vocab]
    for tok in engine.generate(prompt_tokens): ...
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ContextLimitError, KilnError
from ..gguf.special_tokens import end_of_generation_ids
from ..kernels.cpu.linear import set_threads as set_cpu_threads
from ..model import CausalLM, HParams, build_model, read_hparams
from . import numa
from .default_model import default_model_path
from .kv_cache import BatchCache, KVCache, bytes_per_value, check_row
from .loader import GGUFTensors, open_model_file, repack_for_cpu
from .options import Options
from .sampling import Sampler, SamplingParams

log = logging.getLogger("kiln.runtime")

LAST = -1  # BatchItem.logits: only the last token's row


@dataclass
class BatchItem:
    """Tokens to append to one sequence, and which logits to return: rows from index
    `logits` on (0: all), or only the last row (LAST)."""

    seq: int
    tokens: list[int]
    logits: int = LAST


def _micro_batches(lengths: list[int], step: int) -> list[list[tuple[int, int, int]]]:
    """Pack items (their token counts, in order) into micro-batches of at most `step` tokens:
    lists of (item index, first token, end token); a long item continues in the next ones."""
    batches, current, room = [], [], step
    for i, n in enumerate(lengths):
        a = 0
        while a < n:
            take = min(room, n - a)
            current.append((i, a, a + take))
            a += take
            room -= take
            if room == 0:
                batches.append(current)
                current, room = [], step
    if current:
        batches.append(current)
    return batches


class Engine:
    def __init__(self, path: Path, options: Options, model: CausalLM, metadata: dict, gguf):
        self.path = path
        self.options = options
        self.model = model
        self.hparams: HParams = model.hp
        self.metadata = metadata
        self._gguf = gguf
        self.n_ctx = options.ctx_size or self.hparams.n_ctx_train
        self.cache = KVCache(self.hparams.n_layer, self.n_ctx, options.cache_type_k, options.cache_type_v)
        self.eog_ids = end_of_generation_ids(metadata)
        rows = [model.kv_row_sizes(il) for il in range(len(model.blocks))]
        for k_row, v_row in rows:
            check_row(options.cache_type_k, k_row, "K")
            if v_row:
                check_row(options.cache_type_v, v_row, "V")
        self.kv_bytes_k = int(sum(k for k, _ in rows) * self.n_ctx * bytes_per_value(options.cache_type_k))
        self.kv_bytes_v = int(sum(v for _, v in rows) * self.n_ctx * bytes_per_value(options.cache_type_v))
        self.latent_cache = all(v == 0 for _, v in rows)
        log.info(self.kv_size_line())

    def kv_size_line(self) -> str:
        """The KV cache size at the full context, worded as ik_llama.cpp prints it."""
        mib = 1024.0 * 1024.0
        total = (self.kv_bytes_k + self.kv_bytes_v) / mib
        tk, tv = self.options.cache_type_k, self.options.cache_type_v
        prefix = "llama_new_context_with_model: KV self size  ="
        if self.latent_cache:
            return f"{prefix} {total:7.2f} MiB, c^KV ({tk}): {self.kv_bytes_k / mib:7.2f} MiB, kv^T: not used"
        return (
            f"{prefix} {total:7.2f} MiB, K ({tk}): {self.kv_bytes_k / mib:7.2f} MiB, "
            f"V ({tv}): {self.kv_bytes_v / mib:7.2f} MiB"
        )

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, options: Options | None = None) -> Engine:
        options = options or Options()
        options.validate()
        path = Path(path or options.model or default_model_path())
        numa.apply(options.numa)
        if options.threads > 0:
            torch.set_num_threads(options.threads)
        set_cpu_threads(options.threads, options.threads_batch)
        gguf = open_model_file(path)
        try:
            hp = read_hparams(gguf.metadata, str(path))
            # -rtr: weights read into memory (no mmap, as in ik_llama.cpp) and put in the layout
            # the CPU kernels read, all at load time instead of at first use
            tensors = GGUFTensors(gguf, copy=options.no_mmap or options.run_time_repack)
            model = build_model(hp, tensors, str(path), options.compute_settings())
            if options.run_time_repack:
                repack_for_cpu(tensors)
        except BaseException:
            gguf.close()
            raise
        return cls(path, options, model, gguf.metadata, gguf)

    # ----- evaluation -----

    def n_past(self, seq: int = 0) -> int:
        return self.cache.seq(seq).n_past

    def reset(self, seq: int | None = 0) -> None:
        """Forget a sequence (all of them with seq=None)."""
        self.cache.clear(seq)

    def truncate(self, n: int, seq: int = 0) -> None:
        """Keep the first n tokens of a sequence in the cache."""
        self.cache.seq(seq).truncate(n)

    @torch.inference_mode()
    def eval(
        self,
        tokens: Sequence[int] | torch.Tensor,
        seq: int = 0,
        all_logits: bool = True,
        logits_from: int = 0,
    ) -> torch.Tensor:
        """Append tokens to sequence `seq` and return their logits [n - logits_from, n_vocab]
        (or [1, n_vocab] for the last token only with all_logits=False; tokens before
        `logits_from` only fill the cache). The prompt is split into -ub micro-batches.
        A NaN or Inf raises `NumericalError` naming the first layer where it appeared."""
        toks = list(tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens)
        return self.eval_batch([BatchItem(seq, toks, logits_from if all_logits else LAST)])[0]

    @torch.inference_mode()
    def eval_batch(self, items: Sequence[BatchItem]) -> list[torch.Tensor]:
        """Evaluate several sequences together (continuous batching): each item appends its
        tokens to its own sequence; the items are packed into micro-batches of at most -ub
        tokens, so a micro-batch can hold the prompt of one sequence and the next token of
        others, each attending only to its own cache. Returns each item's logits as its
        `logits` field asks (rows from an index on, or the last row)."""
        seqs = [it.seq for it in items]
        if len(set(seqs)) != len(seqs):
            raise KilnError("eval_batch: one item per sequence")
        for it in items:
            if not it.tokens:
                raise KilnError("nothing to evaluate: the token list is empty")
            cache = self.cache.seq(it.seq)
            if cache.n_past + len(it.tokens) > self.n_ctx:
                raise ContextLimitError(
                    f"{cache.n_past + len(it.tokens)} tokens do not fit in the context of {self.n_ctx} "
                    f"({cache.n_past} already in the cache, {len(it.tokens)} new); raise -c "
                    f"(the model was trained for {self.hparams.n_ctx_train}) or shorten the prompt"
                )
        step = max(1, min(self.options.ubatch_size, self.options.batch_size))
        results: list[list[torch.Tensor]] = [[] for _ in items]
        for micro in _micro_batches([len(it.tokens) for it in items], step):
            segments, tokens, positions, rows, owners = [], [], [], [], []
            row0 = 0
            for i, a, b in micro:
                it = items[i]
                cache = self.cache.seq(it.seq)
                positions.append(cache.begin(b - a))
                segments.append((cache, b - a))
                tokens.extend(it.tokens[a:b])
                first = len(it.tokens) - 1 if it.logits == LAST else it.logits
                wanted = range(max(first, a), b)
                rows.extend(row0 + j - a for j in wanted)
                owners.append((i, len(wanted)))
                row0 += b - a
            try:
                logits = self.model.forward(
                    torch.tensor(tokens, dtype=torch.long), torch.cat(positions),
                    BatchCache(segments, direct=self.options.block_steps),
                    output_rows=torch.tensor(rows, dtype=torch.long),
                )
            except BaseException:
                for cache, _ in segments:
                    cache.rollback()
                raise
            for (i, a, b), (cache, _) in zip(micro, segments, strict=True):
                cache.commit(items[i].tokens[a:b])
            at = 0
            for i, count in owners:
                results[i].append(logits[at : at + count])
                at += count
        return [torch.cat(parts, dim=0) for parts in results]

    # ----- generation -----

    def sampling_params(self) -> SamplingParams:
        o = self.options
        return SamplingParams(o.temp, o.top_k, o.top_p, o.min_p, o.repeat_penalty, o.repeat_last_n, o.seed)

    def generate(
        self,
        prompt: Sequence[int],
        n_predict: int | None = None,
        seq: int = 0,
        sampling: SamplingParams | None = None,
        stop_ids: set[int] | None = None,
    ) -> Iterator[int]:
        """Evaluate the prompt, then yield sampled tokens until an end-of-generation token
        (not yielded), `n_predict` tokens, or a full context. The part of the prompt already
        in sequence `seq`'s cache is not evaluated again."""
        n_predict = self.options.n_predict if n_predict is None else n_predict
        stop = set(self.eog_ids if stop_ids is None else stop_ids)
        if self.options.ignore_eos:
            stop = set()
        sampler = Sampler(sampling or self.sampling_params())
        prompt = [int(t) for t in prompt]
        for t in prompt:
            sampler.accept(t)
        # re-use the cached prefix the prompt shares with this sequence (a chat's earlier turns)
        cache = self.cache.seq(seq)
        common = 0
        for a, b in zip(cache.tokens, prompt, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(prompt) - 1)  # the last prompt token is evaluated for its logits
        cache.truncate(common)
        logits = self.eval(prompt[common:], seq, all_logits=False)[-1]
        produced = 0
        while n_predict < 0 or produced < n_predict:
            token = sampler.sample(logits)
            if token in stop:
                return
            sampler.accept(token)
            produced += 1
            yield token
            if self.n_past(seq) >= self.n_ctx:
                return
            if n_predict >= 0 and produced >= n_predict:
                return
            logits = self.eval([token], seq, all_logits=False)[-1]

    def close(self) -> None:
        self._gguf.close()
