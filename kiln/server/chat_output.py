"""The assistant's output split as llama-server (`--jinja`) returns it: `<think>...</think>`
as `reasoning_content` (unless `--reasoning-format none`), tool calls as `tool_calls`,
the rest as `content`; and, while streaming, the deltas between two such splits.

A template that opens the thinking block itself (its generation prompt ends in `<think>`)
makes the output start inside it. While streaming, a tail that may begin `<think>`,
`</think>` or a tool-call marker is held back until it is clear.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from .tool_formats import ToolCall, partial_marker_start, split_tool_calls

THINK_BEGIN, THINK_END = "<think>", "</think>"


@dataclass
class ChatFlags:
    reasoning: bool = True  # split out <think> blocks
    starts_in_reasoning: bool = False  # the prompt ends inside an open <think>
    tools: bool = False  # parse tool calls


@dataclass
class ParsedMessage:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


def parse_output(text: str, flags: ChatFlags, partial: bool) -> ParsedMessage:
    reasoning, rest = "", text
    if flags.reasoning:
        stripped = text.lstrip()
        inside = flags.starts_in_reasoning
        body = text
        if not inside and stripped.startswith(THINK_BEGIN):
            inside, body = True, stripped[len(THINK_BEGIN) :]
        elif not inside and partial and stripped and THINK_BEGIN.startswith(stripped):
            return ParsedMessage()  # may be the beginning of <think>
        if inside:
            end = body.find(THINK_END)
            if end >= 0:
                reasoning, rest = body[:end], body[end + len(THINK_END) :]
            else:
                reasoning = body[: partial_marker_start(body, [THINK_END])] if partial else body
                rest = ""
            reasoning = reasoning.strip()
    calls: list[ToolCall] = []
    if flags.tools:
        rest, calls = split_tool_calls(rest, partial)
    # surrounding whitespace is dropped; while streaming, a trailing space waits for what follows
    content = rest.strip()
    return ParsedMessage(content, reasoning, calls)


def tool_call_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "call_" + "".join(secrets.choice(alphabet) for _ in range(24))


def tool_calls_json(calls: list[ToolCall], ids: list[str]) -> list[dict[str, Any]]:
    while len(ids) < len(calls):
        ids.append(tool_call_id())
    return [
        {"id": ids[k], "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for k, c in enumerate(calls)
    ]


def message_json(msg: ParsedMessage, ids: list[str] | None = None) -> dict[str, Any]:
    """The `message` of a chat completion."""
    out: dict[str, Any] = {"role": "assistant", "content": msg.content}
    if msg.reasoning:
        out["reasoning_content"] = msg.reasoning
    if msg.tool_calls:
        out["tool_calls"] = tool_calls_json(msg.tool_calls, ids if ids is not None else [])
    return out


class ChatStream:
    """Turns the streamed text of a chat completion into OpenAI `delta`s."""

    def __init__(self, flags: ChatFlags):
        self.flags = flags
        self.text = ""
        self.prev = ParsedMessage()
        self.ids: list[str] = []

    def feed(self, new_text: str) -> list[dict[str, Any]]:
        self.text += new_text
        return self._diff(parse_output(self.text, self.flags, partial=True))

    def finish(self, full_text: str) -> tuple[list[dict[str, Any]], ParsedMessage]:
        """The last deltas and the final message (parsed as a whole, held-back tails included)."""
        final = parse_output(full_text, self.flags, partial=False)
        return self._diff(final), final

    def _diff(self, new: ParsedMessage) -> list[dict[str, Any]]:
        deltas = []
        for key, old, cur in (("reasoning_content", self.prev.reasoning, new.reasoning),
                              ("content", self.prev.content, new.content)):
            if len(cur) > len(old) and cur.startswith(old):
                deltas.append({key: cur[len(old) :]})
        n_old = len(self.prev.tool_calls)
        if len(new.tool_calls) > n_old:
            calls = tool_calls_json(new.tool_calls, self.ids)
            for k in range(n_old, len(new.tool_calls)):
                deltas.append({"tool_calls": [{"index": k, **calls[k]}]})
        # keep what was sent as the baseline, so later text is still diffed against it
        self.prev = ParsedMessage(
            new.content if new.content.startswith(self.prev.content) else self.prev.content,
            new.reasoning if new.reasoning.startswith(self.prev.reasoning) else self.prev.reasoning,
            list(new.tool_calls) if len(new.tool_calls) >= n_old else self.prev.tool_calls,
        )
        return deltas
