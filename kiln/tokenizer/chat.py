"""Chat templates: the file's `tokenizer.chat_template` rendered with Jinja the way
transformers renders it (sandboxed, trim_blocks, lstrip_blocks, `raise_exception`,
`strftime_now`, `tojson`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import TokenizerError


def _raise(message: str):
    raise TokenizerError(f"chat template error: {message}")


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self.template = env.from_string(source)
        except TemplateError as e:
            raise TokenizerError(f"the chat template does not parse: {e}; pass another with --chat-template") from None
        self.bos_token = bos_token
        self.eos_token = eos_token

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], override: str | None = None) -> ChatTemplate:
        source = override or meta.get("tokenizer.chat_template")
        if not source:
            raise TokenizerError(
                "the model file has no chat template (tokenizer.chat_template); give one with --chat-template"
            )
        tokens = meta.get("tokenizer.ggml.tokens") or []

        def text(key: str) -> str:
            i = meta.get(f"tokenizer.ggml.{key}")
            return tokens[i] if i is not None and 0 <= i < len(tokens) else ""

        return cls(source, text("bos_token_id"), text("eos_token_id"))

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
        try:
            return self.template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except TokenizerError:
            raise
        except TemplateError as e:
            raise TokenizerError(f"the chat template failed on these messages: {e}") from None
