"""What the HTTP handlers hand to the scheduler, and what comes back.

A `Task` is one completion request reduced to token ids and settings. The scheduler
thread reports on it through `Task.sink`, a thread-safe callback, with `TokenEvent`s
(streamed text), then one `FinalEvent` (the whole result) or an `ErrorEvent`. The HTTP
side sets `Task.cancelled` when its client goes away; the scheduler then frees the slot.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runtime.sampling import SamplingParams
from .api_errors import APIError

_task_ids = itertools.count()


def next_task_id() -> int:
    return next(_task_ids)


@dataclass
class GenerationParams:
    """A request's settings, after validation and defaults."""

    n_predict: int = -1  # -1: until end of generation or the slot's context is full; 0: prompt only
    sampling: SamplingParams = field(default_factory=SamplingParams)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)
    n_probs: int = 0  # top alternatives reported per generated token (0: no probabilities)
    ignore_eos: bool = False
    cache_prompt: bool = True
    id_slot: int = -1  # -1: any idle slot (the one sharing the longest prefix)
    special_ids: frozenset[int] = frozenset()  # special tokens whose text goes into the output

    def to_json(self) -> dict[str, Any]:
        """The request's settings as llama-server's `generation_settings` names them."""
        s = self.sampling
        return {
            "n_predict": self.n_predict,
            "seed": s.seed,
            "temperature": s.temp,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "min_p": s.min_p,
            "repeat_last_n": s.repeat_last_n,
            "repeat_penalty": s.repeat_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "stop": list(self.stop),
            "max_tokens": self.n_predict,
            "ignore_eos": self.ignore_eos,
            "logit_bias": [[t, b] for t, b in self.logit_bias.items()],
            "n_probs": self.n_probs,
            "cache_prompt": self.cache_prompt,
            "samplers": ["penalties", "top_k", "top_p", "min_p", "temperature"],
        }


@dataclass
class TokenProbs:
    """A generated token's log-probability and the most likely alternatives (id, logprob)."""

    token: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class Timings:
    prompt_n: int = 0  # prompt tokens evaluated (the cached prefix is not counted)
    prompt_ms: float = 0.0
    predicted_n: int = 0
    predicted_ms: float = 0.0
    n_ctx: int = 0
    n_past: int = 0

    def to_json(self) -> dict[str, Any]:
        def rate(n: int, ms: float) -> float:
            return 1e3 * n / ms if ms > 0 else 0.0

        def per(n: int, ms: float) -> float:
            return ms / n if n > 0 else 0.0

        return {
            "prompt_n": self.prompt_n,
            "prompt_ms": self.prompt_ms,
            "prompt_per_token_ms": per(self.prompt_n, self.prompt_ms),
            "prompt_per_second": rate(self.prompt_n, self.prompt_ms),
            "predicted_n": self.predicted_n,
            "predicted_ms": self.predicted_ms,
            "predicted_per_token_ms": per(self.predicted_n, self.predicted_ms),
            "predicted_per_second": rate(self.predicted_n, self.predicted_ms),
            "n_ctx": self.n_ctx,
            "n_past": self.n_past,
        }


@dataclass
class Completion:
    """The result of a finished task."""

    text: str
    tokens: list[int]
    n_prompt: int  # tokens in the prompt
    n_cached: int  # of those, taken from the slot's cache
    n_decoded: int  # tokens sampled, an end-of-generation token included (as llama-server counts)
    stop_type: str  # "eos", "word" or "limit"
    stopping_word: str
    truncated: bool  # stopped because the slot's context was full
    timings: Timings
    id_slot: int
    probs: list[TokenProbs]


@dataclass
class TokenEvent:
    text: str  # new text safe to show (may be "" while a stop string or a character is pending)
    probs: TokenProbs | None
    n_decoded: int
    id_slot: int


@dataclass
class FinalEvent:
    completion: Completion


@dataclass
class ErrorEvent:
    error: APIError


Event = TokenEvent | FinalEvent | ErrorEvent


@dataclass
class Task:
    prompt: list[int]
    params: GenerationParams
    sink: Callable[[Event], None]
    id: int = field(default_factory=next_task_id)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class SlotAction:
    """save, restore or erase a slot's KV cache (run by the scheduler between two batches)."""

    action: str
    id_slot: int
    path: Path | None
    filename: str | None
    reply: Callable[[dict[str, Any] | APIError], None]
