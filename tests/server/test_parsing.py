"""The pure pieces: stop strings, reasoning and tool-call parsing, streamed deltas (whatever
the chunking, the deltas add up to the whole answer), and chat prompts."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.server.chat_output import ChatFlags, ChatStream, parse_output
from kiln.server.chat_prompt import render_chat
from kiln.server.schemas import ChatRequest
from kiln.server.stops import find_stop, partial_stop_start
from kiln.server.tool_formats import split_tool_calls
from kiln.tokenizer.chat import ChatTemplate


def test_stops():
    assert find_stop("abc STOP def", ["STOP"], 0) == (4, "STOP")
    assert find_stop("abc ST", ["STOP"], 0) is None
    assert find_stop("xx\n\nyy", ["\n\n", "yy"], 3) == (2, "\n\n")
    assert find_stop("aSTOP", ["STOP"], 5) is None  # complete before the new text: found earlier
    assert partial_stop_start("hello ST", ["STOP"]) == 6
    assert partial_stop_start("hello", ["STOP"]) == 5
    assert partial_stop_start("ab", ["abc", "b!"]) == 0


def test_reasoning_and_content():
    f = ChatFlags(reasoning=True, tools=False)
    m = parse_output("<think>\nhmm\n</think>\n\nHi", f, partial=False)
    assert (m.reasoning, m.content) == ("hmm", "Hi")
    assert parse_output("<thi", f, partial=True).content == ""  # may become <think>
    assert parse_output("<thi", f, partial=False).content == "<thi"
    m = parse_output("<think>still thinking </thi", f, partial=True)
    assert (m.reasoning, m.content) == ("still thinking", "")  # the space waits for what follows
    opened = ChatFlags(reasoning=True, starts_in_reasoning=True)
    assert parse_output("plan</think>answer", opened, partial=False).reasoning == "plan"
    assert parse_output("<think>x</think>y", ChatFlags(reasoning=False), partial=False).content == "<think>x</think>y"


def test_tool_call_edge_cases():
    text, calls = split_tool_calls('a<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>b', partial=False)
    assert text == "ab" and calls[0].name == "f" and json.loads(calls[0].arguments) == {"x": 1}
    text, calls = split_tool_calls("a<tool_call>not json</tool_call>b", partial=False)
    assert text == "a<tool_call>not json</tool_call>b" and calls == []
    text, calls = split_tool_calls('a<tool_call>{"name": "f", "arguments": {}}', partial=False)  # unclosed at the end
    assert text == "a" and calls[0].name == "f"
    text, calls = split_tool_calls('a<tool_call>{"name": "f"', partial=True)
    assert text == "a" and calls == []
    text, calls = split_tool_calls("hello <tool_", partial=True)
    assert text == "hello " and calls == []
    _, calls = split_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"q\\": 2}"}</tool_call>', partial=False)
    assert json.loads(calls[0].arguments) == {"q": 2}  # arguments given as a JSON string


ANSWERS = [
    "<think>\nLet me see.\n</think>\n\nThe answer is 4.",
    'Checking.<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call>',
    "<think>a</think>B<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>add<｜tool▁sep｜>{\"a\": 1}<｜tool▁call▁end｜>"
    "<｜tool▁call▁begin｜>mul<｜tool▁sep｜>{\"b\": 2}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
    "Plain text with a < sign and </think> inside.",
]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ANSWERS), st.lists(st.integers(1, 6), min_size=1, max_size=200))
def test_streamed_deltas_add_up(answer, cuts):
    flags = ChatFlags(reasoning=True, tools=True)
    stream = ChatStream(flags)
    deltas, at, k = [], 0, 0
    while at < len(answer):
        step = cuts[k % len(cuts)]
        deltas += stream.feed(answer[at : at + step])
        at += step
        k += 1
    last, final = stream.finish(answer)
    deltas += last
    whole = parse_output(answer, flags, partial=False)
    assert final == whole
    assert "".join(d.get("content", "") for d in deltas) == whole.content
    assert "".join(d.get("reasoning_content", "") for d in deltas) == whole.reasoning
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert [(c["index"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        (i, c.name, c.arguments) for i, c in enumerate(whole.tool_calls)]


def test_chat_prompt_tools_prefill_and_arguments():
    source = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% if m.tool_calls %}"
              "{% for c in m.tool_calls %}[{{ c.function.arguments | tojson }}]{% endfor %}{% endif %}"
              "{% endfor %}{% if tools %}T={{ tools | length }}{% endif %}"
              "{% if add_generation_prompt %}<assistant><think>\n{% endif %}")
    template = ChatTemplate(source)
    req = ChatRequest.model_validate({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
        {"role": "user", "content": "go"}],
        "tools": [{"type": "function", "function": {"name": "f"}}]})
    chat = render_chat(template, req, tools_on=True)
    # text parts joined, arguments handed over as an object (the template writes them with tojson)
    assert chat.text == '<user>a\nb<assistant>[{"x": 1}]<user>goT=1<assistant><think>\n'
    assert chat.starts_in_reasoning
    req = ChatRequest.model_validate({"messages": [{"role": "user", "content": "q"},
                                                   {"role": "assistant", "content": "The answer"}]})
    chat = render_chat(template, req, tools_on=False)
    assert chat.text == "<user>q<assistant><think>\nThe answer" and not chat.starts_in_reasoning
