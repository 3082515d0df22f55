"""One slot: a sequence of the engine's KV cache and the request it is serving.

A slot goes idle -> prompt (its prompt is evaluated in chunks, beside other slots'
tokens) -> generate (one token per batch) -> idle. Its cache outlives the request: the
next request reuses the longest common prefix (the prompt cache). The slot turns each
sampled token into text, watches for end-of-generation, stop strings, the token limit
and a full context, and reports through the task's sink.
"""

from __future__ import annotations

import codecs
import time

import torch

from ..tokenizer import Tokenizer
from .logs import info, slot_info, timings_text
from .sampler import ServerSampler, token_probs
from .stops import find_stop, partial_stop_start
from .tasks import Completion, FinalEvent, Task, Timings, TokenEvent, TokenProbs

IDLE, PROMPT, GENERATE = "idle", "prompt", "generate"


class Slot:
    def __init__(self, id: int, n_ctx: int, tokenizer: Tokenizer, eog_ids: set[int]):
        self.id = id
        self.n_ctx = n_ctx
        self.tokenizer = tokenizer
        self.eog_ids = frozenset(eog_ids)
        self.state = IDLE
        self.task: Task | None = None
        self.t_last_used = 0.0

    @property
    def busy(self) -> bool:
        return self.state != IDLE

    # ----- starting -----

    def assign(self, task: Task, n_cached: int) -> None:
        """Take a task whose first `n_cached` prompt tokens are already in this slot's cache."""
        self.task = task
        self.prompt = task.prompt
        self.pos = n_cached  # next prompt token to evaluate
        self.n_cached = n_cached
        self.sampler = ServerSampler(task.params)
        for t in task.prompt:
            self.sampler.accept(t)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.sent = 0
        self.tokens: list[int] = []
        self.n_decoded = 0
        self.pending = 0  # 1 while the last sampled token is not in the cache yet
        self.probs: list[TokenProbs] = []
        self.next_token = -1
        self.t_prompt_ms = 0.0
        self.t_gen_start = 0.0
        self.state = PROMPT
        info("launch_slot_with_task", "slot is processing task", id_slot=self.id, id_task=task.id)

    # ----- one batch -----

    def next_input(self, budget: int) -> list[int]:
        """The tokens this slot puts in the next batch (at most `budget` prompt tokens)."""
        if self.state == GENERATE:
            return [self.next_token]
        return self.prompt[self.pos : self.pos + budget]

    def after_batch(self, n: int, logits: torch.Tensor, seconds: float) -> bool:
        """Account for the `n` tokens evaluated in a batch that took `seconds`; `logits` is the
        last row. Samples the next token once the prompt is done. True when the task is over."""
        if self.state == PROMPT:
            self.pos += n
            self.t_prompt_ms += 1e3 * seconds
            if self.pos < len(self.prompt):
                return False
            self.t_gen_start = time.perf_counter()
            self.state = GENERATE
            if self.task.params.n_predict == 0:
                return self.finish("limit")
        return self._sample(logits)

    def _sample(self, logits: torch.Tensor) -> bool:
        params = self.task.params
        self.pending = 0  # the previous token was just evaluated
        token = self.sampler.sample(logits)
        self.n_decoded += 1
        if token in self.eog_ids and not params.ignore_eos:
            return self.finish("eos")
        self.sampler.accept(token)
        self.tokens.append(token)
        self.pending = 1
        if params.n_probs > 0:
            self.probs.append(token_probs(logits, token, params.n_probs))
        piece = self.tokenizer.token_to_piece(token, special=token in params.special_ids)
        old_len = len(self.text)
        self.text += self._utf8.decode(piece)
        stop = find_stop(self.text, params.stop, old_len) if params.stop else None
        if stop is not None:
            self.text = self.text[: stop[0]]
            return self.finish("word", stop[1])
        if 0 <= params.n_predict <= self.n_decoded:
            return self.finish("limit")
        if len(self.prompt) + len(self.tokens) > self.n_ctx:  # no room left to evaluate this token
            return self.finish("limit", truncated=True)
        safe = partial_stop_start(self.text, params.stop) if params.stop else len(self.text)
        self._emit(safe)
        self.next_token = token
        return False

    def _emit(self, upto: int) -> None:
        new = self.text[self.sent : upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        probs = self.probs[-1] if self.probs and self.task.params.n_probs > 0 else None
        self.task.sink(TokenEvent(new, probs, self.n_decoded, self.id))

    # ----- ending -----

    def n_past(self) -> int:
        """Tokens of this request in the cache once it ends (the last sampled one is never evaluated)."""
        return len(self.prompt) + len(self.tokens) - self.pending

    def timings(self) -> Timings:
        gen_ms = 1e3 * (time.perf_counter() - self.t_gen_start) if self.t_gen_start else 0.0
        return Timings(len(self.prompt) - self.n_cached, self.t_prompt_ms, self.n_decoded, gen_ms,
                       self.n_ctx, self.n_past())

    def finish(self, stop_type: str, word: str = "", truncated: bool = False) -> bool:
        if stop_type != "word":
            self.text += self._utf8.decode(b"", final=True)
        self._emit(len(self.text))
        timings = self.timings()
        completion = Completion(
            text=self.text, tokens=list(self.tokens), n_prompt=len(self.prompt), n_cached=self.n_cached,
            n_decoded=self.n_decoded, stop_type=stop_type, stopping_word=word, truncated=truncated,
            timings=timings, id_slot=self.id, probs=list(self.probs),
        )
        self.last = completion
        slot_info(self.id, self.task.id, "print_timings",
                  timings_text(timings.prompt_ms, timings.prompt_n, timings.predicted_ms, timings.predicted_n))
        self.task.sink(FinalEvent(completion))
        self.release(truncated)
        return True

    def release(self, truncated: bool = False) -> None:
        task = self.task
        self.state = IDLE
        self.task = None
        self.t_last_used = time.monotonic()
        info("release_slots", "slot released", id_slot=self.id, id_task=task.id if task else -1,
             n_ctx=self.n_ctx, n_past=self.n_past() if task else 0, truncated=truncated)
