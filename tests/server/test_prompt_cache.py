"""The prompt cache: a request sharing a prefix with the slot's cache evaluates only the rest,
gives the same answer as without the cache, and the log says `kv cache rm [p0, end)`."""

from __future__ import annotations

import logging

import pytest

SYSTEM = "You are a terse assistant. Answer in one short sentence. " * 4


@pytest.mark.slow
def test_shared_prefix_is_reused(served, caplog):
    def ask(question: str, cache: bool = True):
        status, body = served.post("/v1/chat/completions", {
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            "temperature": 0, "max_tokens": 4, "id_slot": 2, "cache_prompt": cache,
        })
        assert status == 200, body
        return body

    first = ask("What is ice?")
    with caplog.at_level(logging.INFO, logger="kiln.server"):
        second = ask("What is fire?")
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0 or first["timings"]["prompt_n"] > 0
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    n_prompt = second["usage"]["prompt_tokens"]
    assert cached > 40  # the system prompt
    assert second["timings"]["prompt_n"] == n_prompt - cached < n_prompt - 40
    assert any("kv cache rm [p0, end)" in r.getMessage() and f"p0={cached}" in r.getMessage()
               and "id_slot=2" in r.getMessage() for r in caplog.records)
    fresh = ask("What is fire?", cache=False)
    assert fresh["timings"]["prompt_n"] == n_prompt
    assert fresh["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


@pytest.mark.slow
def test_same_prompt_twice_evaluates_one_token(served):
    body = {"prompt": "The quick brown fox", "n_predict": 3, "temperature": 0, "id_slot": 3}
    a = served.post("/completion", body)[1]
    b = served.post("/completion", body)[1]
    assert b["timings"]["prompt_n"] == 1  # the last prompt token is evaluated again for its logits
    assert a["content"] == b["content"]
    assert a["tokens_evaluated"] == b["tokens_evaluated"]
