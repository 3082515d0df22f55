"""Bad requests get a 4xx with an OpenAI-style error body naming the problem, and the server
keeps serving."""

from __future__ import annotations

import pytest

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


def check_error(status, body, code, *words):
    assert status == code, body
    err = body["error"]
    assert err["code"] == code and isinstance(err["message"], str) and isinstance(err["type"], str)
    for w in words:
        assert w in err["message"], err["message"]


@pytest.mark.parametrize("raw, words", [
    (b"{not json", ["malformed JSON"]),
    (b"", ["empty"]),
    (b"[1, 2]", ["JSON object"]),
    (b'{"messages": NaN}', ["NaN"]),
    (b"\xff\xfe", ["malformed"]),
    (b"[" * 100000, ["malformed"]),
])
def test_malformed_bodies(served, raw, words):
    status, body, _ = served.request("POST", CHAT, raw=raw)
    check_error(status, body, 400, *words)


@pytest.mark.parametrize("extra, words", [
    ({"max_tokens": "5"}, ["max_tokens"]),
    ({"max_tokens": 5.0}, ["max_tokens"]),
    ({"temperature": "hot"}, ["temperature"]),
    ({"stream": 1}, ["stream"]),
    ({"top_p": 1.5}, ["top_p"]),
    ({"max_tokens": 0}, ["max_tokens 0 is out of range"]),
    ({"max_tokens": 10**9}, ["out of range", "1024"]),
    ({"max_tokens": -1}, ["out of range"]),
    ({"n": 2}, ["one completion choice"]),
    ({"id_slot": 9}, ["id_slot 9"]),
    ({"seed": -5}, ["seed"]),
    ({"stop": ["a", 3]}, ["stop"]),
    ({"top_logprobs": 3}, ["requires logprobs"]),
    ({"response_format": {"type": "json_object"}}, ["not supported"]),
    ({"logit_bias": {"99999999": 1}}, ["outside the vocabulary"]),
    ({"messages": []}, ["messages"]),
    ({"messages": [{"content": "no role"}]}, ["role"]),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, ["image_url"]),
])
def test_wrong_fields(served, extra, words):
    check_error(*served.post(CHAT, {"messages": MSG, "max_tokens": 1, **extra}), 400, *words)


def test_unknown_model_and_route(served):
    check_error(*served.post(CHAT, {"messages": MSG, "model": "gpt-4"}), 404, "gpt-4")
    check_error(*served.post("/v1/nothing", {}), 404)
    check_error(*served.get("/v1/chat/completions"), 405)


def test_prompt_longer_than_the_slot(served):
    status, body = served.post("/v1/completions", {"prompt": "word " * 1100, "max_tokens": 1})
    check_error(status, body, 400, "exceeds the available context size", "1024")
    assert body["error"]["type"] == "exceed_context_size_error" and body["error"]["n_ctx"] == 1024
    status, body = served.post("/completion", {"prompt": [1] * 1024, "n_predict": 1})
    check_error(status, body, 400, "context")


def test_bad_prompts(served):
    check_error(*served.post("/completion", {"prompt": ""}), 400, "empty")
    check_error(*served.post("/completion", {"prompt": [49152]}), 400, "49152")
    check_error(*served.post("/v1/completions", {"prompt": ["a", "b"]}), 400, "one request per prompt")
    check_error(*served.post("/completion", {"prompt": 5}), 400, "prompt")
    check_error(*served.post("/completion", {"prompt": "x", "n_predict": -2}), 400, "n_predict")


def test_server_still_healthy(served):
    status, body = served.get("/health")
    assert status == 200 and body["status"] == "ok" and body["slots_idle"] == 4
