"""A stand-in for the Engine that "generates" a scripted text, so that the server's handling
of reasoning and tool calls can be tested end to end (through HTTP and the openai client)
with the real tokenizer and chat template, whatever the small model would say.

The next token of a sequence is script[k] for the largest k such that the sequence ends
with script[:k]; after the whole script, end of generation."""

from __future__ import annotations

from pathlib import Path

import torch

from kiln.gguf import GGUFFile
from kiln.model import read_hparams
from kiln.runtime import Options
from kiln.runtime.engine import LAST
from kiln.runtime.kv_cache import KVCache


class FakeEngine:
    def __init__(self, path: Path, tokenizer, n_ctx: int = 2048):
        with GGUFFile(path) as f:
            self.metadata = dict(f.metadata)
        self.path = path
        self.hparams = read_hparams(self.metadata, str(path))
        self.options = Options(ctx_size=n_ctx)
        self.n_ctx = n_ctx
        self.cache = KVCache(0, n_ctx)
        self.eog_ids = set(tokenizer.eog_ids)
        self.eos = tokenizer.eos_id
        self.tokenizer = tokenizer
        self.script: list[int] = []

    def say(self, text: str) -> None:
        self.script = self.tokenizer.encode(text, add_special=False, parse_special=False)

    def n_past(self, seq: int = 0) -> int:
        return self.cache.seq(seq).n_past

    def reset(self, seq: int | None = 0) -> None:
        self.cache.clear(seq)

    def truncate(self, n: int, seq: int = 0) -> None:
        self.cache.seq(seq).truncate(n)

    def _next(self, tokens: list[int]) -> int:
        for k in range(min(len(self.script), len(tokens)), 0, -1):
            if tokens[-k:] == self.script[:k]:
                return self.script[k] if k < len(self.script) else self.eos
        return self.script[0] if self.script else self.eos

    def eval(self, tokens, seq: int = 0, all_logits: bool = True):
        from kiln.runtime.engine import BatchItem

        return self.eval_batch([BatchItem(seq, list(tokens), LAST)])[0]

    def eval_batch(self, items):
        out = []
        for it in items:
            cache = self.cache.seq(it.seq)
            cache.begin(len(it.tokens))
            cache.commit(list(it.tokens))
            logits = torch.zeros(1, self.hparams.n_vocab)
            logits[0, self._next(cache.tokens)] = 30.0
            out.append(logits)
        return out

    def close(self) -> None:
        pass
