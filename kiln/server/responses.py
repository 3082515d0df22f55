"""Response bodies and stream chunks, with llama-server's fields: OpenAI chat completions
and completions (`usage` with the cached prompt tokens, `timings`), and llama.cpp's own
`/completion` (`tokens_cached`, `stopped_eos`, `generation_settings`, ...)."""

from __future__ import annotations

import math
import secrets
import string
import time
from typing import Any

from ..tokenizer import Tokenizer
from .prepare import Prepared
from .tasks import Completion, TokenProbs


def new_id(prefix: str) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(32))


def usage(c: Completion) -> dict[str, Any]:
    return {
        "completion_tokens": c.n_decoded,
        "prompt_tokens": c.n_prompt,
        "total_tokens": c.n_decoded + c.n_prompt,
        "prompt_tokens_details": {"cached_tokens": c.n_cached},
    }


def finish_reason(c: Completion, tool_calls: bool = False) -> str:
    if c.stop_type in ("eos", "word"):
        return "tool_calls" if tool_calls else "stop"
    return "length"


def _piece(tok: Tokenizer, token: int) -> tuple[str, list[int]]:
    raw = tok.token_to_piece(token, special=True)
    return raw.decode("utf-8", errors="replace"), list(raw)


def logprobs_content(tok: Tokenizer, probs: list[TokenProbs], top: int) -> list[dict[str, Any]]:
    """OpenAI's `logprobs.content`: each token with its log-probability and the `top` best."""
    out = []
    for p in probs:
        text, raw = _piece(tok, p.token)
        alts = []
        for t, lp in p.top[:top]:
            t_text, t_raw = _piece(tok, t)
            alts.append({"id": t, "token": t_text, "bytes": t_raw, "logprob": lp})
        out.append({"id": p.token, "token": text, "bytes": raw, "logprob": p.logprob, "top_logprobs": alts})
    return out


def legacy_logprobs(tok: Tokenizer, probs: list[TokenProbs], top: int) -> dict[str, Any]:
    """OpenAI's older completions `logprobs` (tokens, token_logprobs, top_logprobs, text_offset),
    beside `content` as llama-server gives it."""
    tokens, offsets, at = [], [], 0
    for p in probs:
        text, _ = _piece(tok, p.token)
        tokens.append(text)
        offsets.append(at)
        at += len(text)
    return {
        "content": logprobs_content(tok, probs, top),
        "tokens": tokens,
        "token_logprobs": [p.logprob for p in probs],
        "top_logprobs": [{_piece(tok, t)[0]: lp for t, lp in p.top[:top]} for p in probs],
        "text_offset": offsets,
    }


class Envelope:
    """The fields every chunk and response of one request share."""

    def __init__(self, kind: str, model: str):
        self.id = new_id("chatcmpl-" if kind == "chat" else "cmpl-")
        self.created = int(time.time())
        self.model = model
        self.object = "chat.completion" if kind == "chat" else "text_completion"

    def wrap(self, choices: list[dict[str, Any]], chunk: bool = False, **extra: Any) -> dict[str, Any]:
        obj = self.object + (".chunk" if chunk and self.object == "chat.completion" else "")
        return {"choices": choices, "created": self.created, "id": self.id, "model": self.model,
                "system_fingerprint": "kiln", "object": obj, **extra}


def chat_chunk(env: Envelope, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return env.wrap([{"finish_reason": finish, "index": 0, "delta": delta}], chunk=True, **extra)


def text_chunk(env: Envelope, text: str, finish: str | None = None, logprobs=None, **extra: Any) -> dict[str, Any]:
    return env.wrap([{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}], chunk=True, **extra)


def llama_partial(tok: Tokenizer, text: str, id_slot: int, probs: TokenProbs | None, top: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"content": text, "stop": False, "id_slot": id_slot, "multimodal": False}
    if probs is not None and top:
        out["completion_probabilities"] = llama_probs(tok, [probs], top)
    return out


def llama_probs(tok: Tokenizer, probs: list[TokenProbs], top: int) -> list[dict[str, Any]]:
    """llama.cpp's `completion_probabilities`: each token with its `top` alternatives' probabilities."""
    return [
        {"content": _piece(tok, p.token)[0],
         "probs": [{"tok_str": _piece(tok, t)[0], "prob": math.exp(lp)} for t, lp in p.top[:top]]}
        for p in probs
    ]


def llama_final(tok: Tokenizer, model: str, prep: Prepared, c: Completion, stream: bool) -> dict[str, Any]:
    out = {
        "content": "" if stream else c.text,
        "generated_text": c.text,
        "id_slot": c.id_slot,
        "stop": True,
        "model": model,
        "tokens_predicted": c.n_decoded,
        "tokens_evaluated": c.n_prompt,
        "generation_settings": {"n_ctx": c.timings.n_ctx, "model": model, **prep.params.to_json()},
        "prompt": prep.prompt_text,
        "truncated": c.truncated,
        "stopped_eos": c.stop_type == "eos",
        "stopped_word": c.stop_type == "word",
        "stopped_limit": c.stop_type == "limit",
        "stopping_word": c.stopping_word,
        "tokens_cached": c.timings.n_past,
        "timings": c.timings.to_json(),
    }
    if prep.top_logprobs and not stream:
        out["completion_probabilities"] = llama_probs(tok, c.probs, prep.top_logprobs)
    return out
