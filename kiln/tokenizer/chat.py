"""Chat templates: the file's `tokenizer.chat_template` rendered with Jinja as transformers renders it.

As transformers' `apply_chat_template` (utils/chat_template_utils.py): an
immutable sandboxed environment with `trim_blocks` and `lstrip_blocks`, the
`loopcontrols` extension and the `{% generation %}` block (rendered as its
body); `raise_exception`, `strftime_now`, a `tojson` filter that does not
escape HTML, `dict`, and a `namespace` that refuses underscore names.
The template sees `messages` (keys whose value is None dropped; a message's
reasoning under `reasoning`, `thinking` or `reasoning_content` is given under
`thinking` and `reasoning_content` too), `tools`, `documents`,
`add_generation_prompt`, the special tokens `bos_token`, `eos_token`,
`unk_token`, `pad_token` where the vocabulary has them, and any extra
keyword (`enable_thinking=False`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import TokenizerError

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_SPECIAL_TOKEN_KEYS = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unknown", "pad_token": "padding"}


class _TemplateFailure(Exception):
    """`raise_exception` inside a template: the template refuses the conversation."""


def _raise(message: str):
    raise _TemplateFailure(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _Dict:
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    def __init__(*args, **kwargs):  # same signature trick as jinja2's Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a chat template cannot set {name!r} on a namespace")


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` (marks the assistant's part for training): its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _Dict()
    env.globals["namespace"] = _Namespace
    return env


def _messages(messages: list[Mapping[str, Any]]) -> list[dict]:
    out = []
    for k, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise TokenizerError(
                f"chat message {k} is a {type(m).__name__}, not a dict with 'role' and 'content'"
            )
        m = {key: value for key, value in m.items() if value is not None}
        reasoning = next((m[key] for key in _REASONING_FIELDS if m.get(key) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


class ChatTemplate:
    """A compiled chat template and the special-token texts it may use."""

    def __init__(self, source: str, special_tokens: Mapping[str, str] | None = None):
        try:
            self.template = _environment().from_string(source)
        except jinja2.TemplateError as e:
            raise TokenizerError(
                f"the chat template does not parse: {e}; give a working one with --chat-template"
            ) from None
        self.source = source
        self.special_tokens = dict(special_tokens or {})

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], override: str | None = None) -> ChatTemplate:
        """The template of a GGUF file (`tokenizer.chat_template`), or `override` instead."""
        source = override or meta.get("tokenizer.chat_template")
        if not source:
            raise TokenizerError(
                "the model file has no chat template (tokenizer.chat_template); give one with --chat-template, "
                "or prompt the model with plain text (kiln run -p)"
            )
        tokens = meta.get("tokenizer.ggml.tokens") or []
        special = {}
        for name, key in _SPECIAL_TOKEN_KEYS.items():
            i = meta.get(f"tokenizer.ggml.{key}_token_id")
            if i is not None and 0 <= int(i) < len(tokens):
                special[name] = tokens[int(i)]
        return cls(source, special)

    def render(
        self,
        messages: list[Mapping[str, Any]],
        add_generation_prompt: bool = False,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        **extra: Any,
    ) -> str:
        """The prompt text of a conversation ([{"role": ..., "content": ...}, ...])."""
        context = {**self.special_tokens, **extra}
        try:
            return self.template.render(
                messages=_messages(messages),
                tools=tools,
                documents=documents,
                add_generation_prompt=add_generation_prompt,
                **context,
            )
        except _TemplateFailure as e:
            raise TokenizerError(f"the chat template refuses this conversation: {e}") from None
        except jinja2.TemplateError as e:
            raise TokenizerError(
                f"the chat template failed on this conversation: {e}; check the messages or give another "
                "template with --chat-template"
            ) from None


def render_chat_template(
    meta: Mapping[str, Any],
    messages: list[Mapping[str, Any]],
    add_generation_prompt: bool = False,
    **extra: Any,
) -> str:
    """Render a GGUF file's chat template (`meta` is its metadata) on `messages`."""
    return ChatTemplate.from_metadata(meta).render(
        messages, add_generation_prompt=add_generation_prompt, **extra
    )
