"""Chat templates against transformers' renderer (the function `apply_chat_template` calls) on
templates that use what real ones use: loop controls, namespaces, `raise_exception`, `tojson`,
`strftime_now`, tools, reasoning fields, `{% generation %}` blocks."""

from __future__ import annotations

import pytest
from transformers.utils.chat_template_utils import _normalize_chat_messages, render_jinja_template

from kiln.errors import TokenizerError
from kiln.tokenizer import ChatTemplate, Tokenizer, render_chat_template

from .conftest import hf_tokenizer, read_metadata
from .vocabs import bpe_metadata, spm_metadata

# in the style of Qwen 3 and Llama 3.1 templates
TEMPLATE = """{%- set ns = namespace(system='', last_user=-1) -%}
{%- for m in messages -%}{%- if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}{%- endfor -%}
{{ bos_token }}
{%- if messages[0].role == 'system' %}{% set ns.system = messages[0].content %}{% endif %}
{%- if tools %}<|im_start|>system
{{ ns.system }}
Tools: {% for t in tools %}{{ t | tojson }}{% if not loop.last %}, {% endif %}{% endfor %}
Today is {{ strftime_now('%Y') | length }} digits long.<|im_end|>
{% elif ns.system %}<|im_start|>system
{{ ns.system }}<|im_end|>
{% endif %}
{%- for m in messages %}
    {%- if m.role == 'system' %}{% continue %}{% endif %}
    {%- if m.role not in ['user', 'assistant', 'tool'] %}{{ raise_exception('unknown role ' + m.role) }}{% endif %}
<|im_start|>{{ m.role }}
    {%- if m.role == 'assistant' and m.reasoning_content is defined and loop.index0 > ns.last_user %}
<think>{{ m.reasoning_content }}</think>
    {%- endif %}
{% generation %}{{ m.content | trim }}{% endgeneration %}<|im_end|>
    {%- if m.tool_calls is defined %}{% for c in m.tool_calls %}
<tool_call>{{ c | tojson(indent=2) }}</tool_call>{% endfor %}{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}
<|im_start|>assistant
{% if enable_thinking is defined and not enable_thinking %}<think>

</think>
{% endif %}{%- endif %}"""

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"city": "string <é>"}}}]
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Be brief & exact."},
        {"role": "user", "content": "  What is 2+2?  "},
        {"role": "assistant", "content": "4", "reasoning": "easy", "tool_calls": None},
        {"role": "user", "content": "And the weather in Zürich? 🌦"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"name": "get_weather", "arguments": {"city": "Zürich"}}],
        },
        {"role": "tool", "content": '{"temp": 3}'},
        {"role": "assistant", "content": "3 °C.", "thinking": "from the tool"},
    ],
]


@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("tools", [None, TOOLS])
@pytest.mark.parametrize("extra", [{}, {"enable_thinking": False}])
def test_matches_transformers_renderer(conversation, tools, extra):
    messages = CONVERSATIONS[conversation]
    special = {"bos_token": "<s>", "eos_token": "</s>"}
    for add in (True, False):
        (expected,), _ = render_jinja_template(  # as apply_chat_template calls it
            [_normalize_chat_messages(messages)],
            tools=tools,
            chat_template=TEMPLATE,
            add_generation_prompt=add,
            **special,
            **extra,
        )
        got = ChatTemplate(TEMPLATE, special).render(
            messages, add_generation_prompt=add, tools=tools, **extra
        )
        assert got == expected


def test_special_tokens_from_the_file_and_apply_chat_template(make_gguf):
    meta = spm_metadata()
    path = make_gguf("spm-chat", meta)
    messages = CONVERSATIONS[1][1:4]
    ours = render_chat_template(read_metadata(path), messages, add_generation_prompt=True)
    assert ours.startswith("<s><start_of_turn>user\n")
    hf = hf_tokenizer(path)
    assert ours == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    tok = Tokenizer.from_metadata(meta)
    assert tok.encode(ours, add_special=False, parse_special=True)[:2] == [1, 3]  # <s>, <start_of_turn>


def test_errors():
    with pytest.raises(TokenizerError, match="no chat template"):
        ChatTemplate.from_metadata(bpe_metadata("gpt-2", **{"tokenizer.chat_template": None}))
    with pytest.raises(TokenizerError, match="does not parse"):
        ChatTemplate("{% for m in messages %}")
    with pytest.raises(TokenizerError, match="refuses this conversation: unknown role robot"):
        ChatTemplate(TEMPLATE).render([{"role": "robot", "content": "beep"}])
    with pytest.raises(TokenizerError, match="failed on this conversation"):
        ChatTemplate("{{ ''.__class__.__mro__ }}").render([])  # the sandbox refuses
    with pytest.raises(TokenizerError, match="failed on this conversation"):
        ChatTemplate("{% set ns = namespace(_x=1) %}").render([])
    with pytest.raises(TokenizerError, match="chat message 0"):
        ChatTemplate(TEMPLATE).render(["hello"])
    assert (
        ChatTemplate.from_metadata({}, override="{{ messages[0]['content'] }}").render([{"content": "x"}])
        == "x"
    )
