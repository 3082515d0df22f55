"""The llama-server endpoints beside the OpenAI ones: /completion's fields, stop strings,
log-probabilities against the model's own logits, /tokenize, /detokenize, /props, /metrics,
/health, /slots, and slot save / restore / erase."""

from __future__ import annotations

import math

import pytest
import torch


def test_tokenize_detokenize(served):
    tok = served.ctx.tokenizer
    text = "Hello, world! <|im_start|> ünïcode"
    status, body = served.post("/tokenize", {"content": text})
    assert status == 200 and body["tokens"] == tok.encode(text, add_special=False, parse_special=True)
    assert served.post("/detokenize", {"tokens": body["tokens"]})[1]["content"] == tok.decode(body["tokens"])
    pieces = served.post("/tokenize", {"content": "Hi there", "with_pieces": True})[1]["tokens"]
    assert "".join(p["piece"] for p in pieces) == "Hi there"


def test_props_health_models(served):
    props = served.get("/props")[1]
    assert props["total_slots"] == 4 and props["n_ctx"] == 4096
    assert props["default_generation_settings"]["n_ctx"] == 1024
    assert props["chat_template"] == served.ctx.engine.metadata["tokenizer.chat_template"]
    assert props["model_path"] == str(served.ctx.path)
    health = served.get("/health?include_slots")[1]
    assert health["status"] == "ok" and len(health["slots"]) == 4
    meta = served.get("/v1/models")[1]["data"][0]["meta"]
    assert meta["n_vocab"] == 49152 and meta["n_params"] > 100_000_000


@pytest.mark.slow
def test_completion_fields_stop_and_metrics(served):
    before = served.get("/metrics")[1]
    status, body = served.post("/completion", {"prompt": "1, 2, 3, 4, 5,", "n_predict": 20, "temperature": 0,
                                               "stop": [" 8"]})
    assert status == 200
    assert body["stopped_word"] and body["stopping_word"] == " 8" and not body["stopped_eos"]
    assert body["content"] == " 6, 7,"  # the stop string itself is not returned
    assert body["tokens_evaluated"] == len(served.ctx.tokenizer.encode("1, 2, 3, 4, 5,"))
    assert body["generation_settings"]["stop"] == [" 8"] and body["generation_settings"]["n_ctx"] == 1024
    t = body["timings"]
    assert t["predicted_n"] == body["tokens_predicted"] and t["prompt_n"] >= 1
    assert math.isclose(t["predicted_per_second"], 1e3 * t["predicted_n"] / t["predicted_ms"])
    after = served.get("/metrics")[1]

    def value(text, name):
        return float(next(line.split()[1] for line in text.splitlines() if line.startswith(f"llamacpp:{name} ")))

    assert value(after, "tokens_predicted_total") - value(before, "tokens_predicted_total") >= t["predicted_n"]
    assert value(after, "requests_total") > value(before, "requests_total")
    assert "# TYPE llamacpp:prompt_tokens_total counter" in after


@pytest.mark.slow
def test_streamed_stop_string_is_held_back(served):
    events = served.stream("/completion", {"prompt": "1, 2, 3, 4, 5,", "n_predict": 20, "temperature": 0,
                                           "stop": [", 8"], "stream": True})
    text = "".join(e["content"] for e in events[:-1])
    assert text == " 6, 7" and events[-1]["stop"] and events[-1]["stopping_word"] == ", 8"
    assert all("8" not in e["content"] for e in events)


@pytest.mark.slow
def test_logprobs_are_the_models(served, oracle_engine):
    engine, tok = oracle_engine
    prompt = "The capital of France is"
    status, body = served.post("/v1/completions", {"prompt": prompt, "max_tokens": 1, "temperature": 0,
                                                   "logprobs": 5})
    assert status == 200
    lp = body["choices"][0]["logprobs"]["content"][0]
    engine.reset(0)
    logits = engine.eval(tok.encode(prompt, add_special=True, parse_special=True), 0, all_logits=False)[-1]
    ref = torch.log_softmax(logits.float(), dim=-1)
    best = torch.topk(ref, 5)
    assert [t["id"] for t in lp["top_logprobs"]] == best.indices.tolist()
    for t, v in zip(lp["top_logprobs"], best.values.tolist(), strict=True):
        assert abs(t["logprob"] - v) < 1e-3
    assert lp["id"] == best.indices[0].item() and abs(lp["logprob"] - best.values[0].item()) < 1e-3
    assert body["choices"][0]["text"] == tok.token_to_piece(lp["id"]).decode()


@pytest.mark.slow
def test_slot_save_erase_restore(served):
    body = {"prompt": "Once upon a time, in a land far away,", "n_predict": 6, "temperature": 0, "id_slot": 1}
    first = served.post("/completion", body)[1]
    n_past = first["timings"]["n_past"]
    status, saved = served.post("/slots/1?action=save", {"filename": "story.bin"})
    assert status == 200 and saved["n_saved"] == n_past and saved["n_written"] > 0
    assert (served.slot_dir / "story.bin").stat().st_size == saved["n_written"]
    status, erased = served.post("/slots/1?action=erase")
    assert status == 200 and erased["n_erased"] == n_past
    assert served.get("/slots")[1][1]["n_past"] == 0
    status, restored = served.post("/slots/1?action=restore", {"filename": "story.bin"})
    assert status == 200 and restored["n_restored"] == n_past
    again = served.post("/completion", body)[1]
    assert again["timings"]["prompt_n"] == 1 and again["content"] == first["content"]
    # bad actions and names
    assert served.post("/slots/1?action=restore", {"filename": "../etc/passwd"})[0] == 400
    assert served.post("/slots/1?action=restore", {"filename": "missing.bin"})[0] == 404
    assert served.post("/slots/1?action=fly")[0] == 400
    assert served.post("/slots/7?action=erase")[0] == 400
    (served.slot_dir / "junk.bin").write_bytes(b"not a slot file")
    assert served.post("/slots/1?action=restore", {"filename": "junk.bin"})[0] == 400


@pytest.mark.slow
def test_generation_stops_when_the_slot_is_full(served):
    tok = served.ctx.tokenizer
    prompt = tok.encode("hello " * 1018, add_special=False)[:1018]
    status, body = served.post("/completion", {"prompt": prompt, "n_predict": -1, "ignore_eos": True,
                                               "temperature": 0, "cache_prompt": False})
    assert status == 200, body
    # 1018 prompt tokens + 6 generated fill the 1024 of a slot (the last one is never evaluated)
    assert body["tokens_predicted"] == 1024 - 1018 + 1
    assert body["truncated"] and body["stopped_limit"] and body["timings"]["n_past"] == 1024
    status, body = served.post("/v1/completions", {"prompt": prompt, "max_tokens": 50, "temperature": 0})
    assert status == 200 and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 7


@pytest.mark.slow
def test_chat_logprobs_whole_and_streamed(served):
    body = {"messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 4, "temperature": 0,
            "logprobs": True, "top_logprobs": 3}
    status, whole = served.post("/v1/chat/completions", body)
    assert status == 200
    content = whole["choices"][0]["logprobs"]["content"]
    text = "".join(t["token"] for t in content)
    assert text.strip() == whole["choices"][0]["message"]["content"]
    for t in content:  # greedy: the chosen token is the most likely one
        assert len(t["top_logprobs"]) == 3 and t["top_logprobs"][0]["id"] == t["id"]
        assert t["logprob"] == t["top_logprobs"][0]["logprob"] <= 0
        assert bytes(t["bytes"]).decode() == t["token"]
    events = served.stream("/v1/chat/completions", {**body, "stream": True})
    streamed = [t for e in events if e != "[DONE]" and e["choices"] and e["choices"][0].get("logprobs")
                for t in e["choices"][0]["logprobs"]["content"]]
    assert [t["id"] for t in streamed] == [t["id"] for t in content]
