"""Tool-call syntaxes found in model output, parsed into OpenAI `tool_calls`.

- Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (one JSON per block).
- DeepSeek-V3 / R1: `<｜tool▁calls▁begin｜>` then, per call,
  `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME` + a ```json fenced argument object +
  `<｜tool▁call▁end｜>`, and `<｜tool▁calls▁end｜>`; DeepSeek-V3.1 writes a call as
  `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`.

`split_tool_calls(text, partial)` returns the text outside the blocks and the calls
(name, arguments as a JSON string). While streaming (`partial`), an unfinished block and a
tail that may begin a block are held back; at the end an unclosed block is parsed as far as
it goes, and a block that does not parse stays in the text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

DS_CALLS_BEGIN, DS_CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
DS_CALL_BEGIN, DS_CALL_END, DS_SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
HERMES_BEGIN, HERMES_END = "<tool_call>", "</tool_call>"

MARKERS = (HERMES_BEGIN, HERMES_END, DS_CALLS_BEGIN, DS_CALLS_END, DS_CALL_BEGIN, DS_CALL_END, DS_SEP)


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text


def _arguments(value) -> str | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict):
        return None
    return json.dumps(value, ensure_ascii=False)


def parse_hermes(inner: str) -> list[ToolCall] | None:
    try:
        obj = json.loads(inner.strip())
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = _arguments(obj.get("arguments", obj.get("parameters", {})))
    return None if args is None else [ToolCall(obj["name"], args)]


_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)\s*(?:```|$)", re.S)


def _deepseek_call(body: str) -> ToolCall | None:
    if DS_SEP not in body:
        return None
    left, right = body.split(DS_SEP, 1)
    if "```" in right:  # V3 / R1: function<sep>NAME\n```json\n{...}\n```
        name, _, rest = right.partition("\n")
        m = _FENCE.search(rest)
        args = _arguments(m.group(1)) if m else None
    else:  # V3.1: NAME<sep>{...}
        name, args = left, _arguments(right.strip())
    name = name.strip()
    return ToolCall(name, args) if name and args is not None else None


def parse_deepseek(inner: str) -> list[ToolCall] | None:
    calls = []
    for piece in inner.split(DS_CALL_BEGIN)[1:]:
        call = _deepseek_call(piece.split(DS_CALL_END, 1)[0])
        if call is None:
            return None
        calls.append(call)
    return calls or None


@dataclass
class Syntax:
    begin: str
    end: str
    parse: Callable[[str], list[ToolCall] | None]


SYNTAXES = (Syntax(HERMES_BEGIN, HERMES_END, parse_hermes), Syntax(DS_CALLS_BEGIN, DS_CALLS_END, parse_deepseek))


def partial_marker_start(text: str, markers) -> int:
    """Where a tail of `text` that begins one of `markers` starts (len(text): none)."""
    for k in range(min(len(text), max(len(m) for m in markers) - 1), 0, -1):
        if any(m.startswith(text[-k:]) for m in markers):
            return len(text) - k
    return len(text)


def split_tool_calls(text: str, partial: bool) -> tuple[str, list[ToolCall]]:
    content: list[str] = []
    calls: list[ToolCall] = []
    i = 0
    while True:
        found = [(text.find(s.begin, i), s) for s in SYNTAXES]
        found = [(p, s) for p, s in found if p >= 0]
        if not found:
            tail = text[i:]
            content.append(tail[: partial_marker_start(tail, [s.begin for s in SYNTAXES])] if partial else tail)
            break
        pos, syntax = min(found, key=lambda f: f[0])
        content.append(text[i:pos])
        start = pos + len(syntax.begin)
        end = text.find(syntax.end, start)
        if end < 0:
            if not partial:
                parsed = syntax.parse(text[start:])
                if parsed is None:
                    content.append(text[pos:])
                else:
                    calls.extend(parsed)
            break
        parsed = syntax.parse(text[start:end])
        if parsed is None:
            content.append(text[pos : end + len(syntax.end)])
        else:
            calls.extend(parsed)
        i = end + len(syntax.end)
    return "".join(content), calls
