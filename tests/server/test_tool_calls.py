"""Reasoning and tool calls, end to end: a scripted engine writes `<think>` blocks and tool
calls in the Hermes/Qwen and DeepSeek-V3 syntaxes; the openai client receives
`reasoning_content` and `tool_calls`, whole and streamed."""

from __future__ import annotations

import json

import pytest

from tests.server.conftest import serve_in_thread
from tests.server.fake_engine import FakeEngine

openai = pytest.importorskip("openai")

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ASK = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def fake(smollm2):
    from kiln.gguf import GGUFFile
    from kiln.server.context import ServerContext
    from kiln.server.settings import ServerSettings
    from kiln.tokenizer import Tokenizer

    with GGUFFile(smollm2) as f:
        tokenizer = Tokenizer.from_metadata(f.metadata)
    engine = FakeEngine(smollm2, tokenizer)
    ctx = ServerContext(engine, tokenizer, ServerSettings(port=0, n_parallel=2, alias="fake"))
    server, thread, port = serve_in_thread(ctx)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
    yield engine, client
    server.should_exit = True
    thread.join(timeout=30)


def test_reasoning_content(fake):
    engine, client = fake
    engine.say("<think>\nThe user greets me.\n</think>\n\nHello there!")
    r = client.chat.completions.create(model="fake", messages=ASK, max_tokens=100)
    msg = r.choices[0].message
    assert msg.content == "Hello there!"
    assert msg.model_extra["reasoning_content"] == "The user greets me."
    assert r.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model="fake", messages=ASK, max_tokens=100, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert reasoning.strip() == "The user greets me." and content == "Hello there!"
    assert "<think>" not in content and "</think>" not in reasoning
    # --reasoning-format none per request: the raw text
    r = client.chat.completions.create(model="fake", messages=ASK, max_tokens=100,
                                       extra_body={"reasoning_format": "none"})
    assert r.choices[0].message.content.startswith("<think>")


@pytest.mark.parametrize("script", [
    'I will check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    "I will check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
    '{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
    'I will check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}'
    "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
], ids=["hermes", "deepseek-v3", "deepseek-v3.1"])
def test_tool_calls(fake, script):
    engine, client = fake
    engine.say(script)
    r = client.chat.completions.create(model="fake", messages=ASK, tools=TOOLS, max_tokens=200)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I will check."
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    chunks = list(client.chat.completions.create(model="fake", messages=ASK, tools=TOOLS, max_tokens=200,
                                                 stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert content == "I will check."
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    # without tools in the request, the text stays text
    r = client.chat.completions.create(model="fake", messages=ASK, max_tokens=200)
    assert r.choices[0].message.tool_calls is None and "get_weather" in r.choices[0].message.content


def test_tool_results_go_back_through_the_template(fake):
    engine, client = fake
    engine.say("It is sunny.")
    messages = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    r = client.chat.completions.create(model="fake", messages=messages, tools=TOOLS, max_tokens=50)
    assert r.choices[0].message.content == "It is sunny." and r.choices[0].finish_reason == "stop"
