"""A chat request's messages and tools rendered through the chat template into prompt text.

As llama-server with `--jinja`: text content parts are joined; tools go to the template as
`tools`; a trailing assistant message is continued (the prompt ends with its text instead
of a new turn); tool-call arguments reach the template as objects when it writes them
with `tojson` and as JSON text otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import TokenizerError
from ..tokenizer.chat import ChatTemplate
from .api_errors import bad_request
from .chat_output import THINK_BEGIN
from .schemas import ChatRequest, Message

_OBJECT_ARGS = re.compile(r"arguments\s*\|\s*tojson|arguments\s*\.\s*items\s*\(")
_STRING_AWARE = re.compile(r"arguments\s+is\s+string")


@dataclass
class ChatPrompt:
    text: str
    starts_in_reasoning: bool


def _content(m: Message, k: int) -> str | None:
    if m.content is None or isinstance(m.content, str):
        return m.content
    texts = []
    for part in m.content:
        if part.type != "text" or part.text is None:
            raise bad_request(
                f"messages[{k}]: content part of type {part.type!r} is not supported; kiln serves text "
                "models (send {\"type\": \"text\", \"text\": ...} parts or a string)"
            )
        texts.append(part.text)
    return "\n".join(texts)


def _tool_calls(m: Message, k: int, as_objects: bool) -> list[dict[str, Any]]:
    calls = []
    for j, call in enumerate(m.tool_calls or []):
        args: Any = call.function.arguments
        if as_objects and isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                raise bad_request(f"messages[{k}].tool_calls[{j}].function.arguments is not JSON") from None
        elif not as_objects and not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        d = {"type": "function", "function": {"name": call.function.name, "arguments": args}}
        if call.id is not None:
            d["id"] = call.id
        calls.append(d)
    return calls


def template_messages(messages: list[Message], template_source: str) -> list[dict[str, Any]]:
    as_objects = bool(_OBJECT_ARGS.search(template_source)) and not _STRING_AWARE.search(template_source)
    out = []
    for k, m in enumerate(messages):
        d = m.model_dump(exclude_none=True)
        content = _content(m, k)
        d["content"] = content if content is not None else ""
        if m.tool_calls:
            d["tool_calls"] = _tool_calls(m, k, as_objects)
        out.append(d)
    return out


def render_chat(template: ChatTemplate, req: ChatRequest, tools_on: bool) -> ChatPrompt:
    messages = template_messages(req.messages, template.source)
    prefill = None
    if messages[-1].get("role") == "assistant" and not messages[-1].get("tool_calls"):
        prefill = messages.pop()["content"]
        if messages and messages[-1].get("role") == "assistant":
            raise bad_request("Cannot have 2 or more assistant messages at the end of the list.")
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if tools_on and req.tools else None
    kwargs = dict(req.chat_template_kwargs or {})
    for reserved in ("messages", "tools", "add_generation_prompt", "documents"):
        kwargs.pop(reserved, None)
    try:
        text = template.render(messages, add_generation_prompt=True, tools=tools, **kwargs)
    except TokenizerError as e:
        raise bad_request(str(e)) from None
    except Exception as e:  # a template may fail on odd input in ways jinja does not wrap
        raise bad_request(f"the chat template failed on this conversation: {type(e).__name__}: {e}") from None
    if prefill:
        text += prefill
    starts_in_reasoning = prefill is None and text.rstrip().endswith(THINK_BEGIN)
    return ChatPrompt(text, starts_in_reasoning)
