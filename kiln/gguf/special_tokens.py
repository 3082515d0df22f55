"""Which tokens of a GGUF vocabulary end a generation, from the metadata alone.

As llama.cpp decides it: the EOS, EOT and EOM ids the file names, plus control or
user-defined tokens whose text is a known end-of-turn marker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

EOG_TEXTS = frozenset(
    {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "<|end_of_text|>",
    }
)


def end_of_generation_ids(metadata: Mapping[str, Any]) -> set[int]:
    tokens = metadata.get("tokenizer.ggml.tokens") or []
    types = metadata.get("tokenizer.ggml.token_type") or []
    ids = set()
    for key in ("eos_token_id", "eot_token_id", "eom_token_id"):
        value = metadata.get(f"tokenizer.ggml.{key}")
        if value is not None and 0 <= int(value) < len(tokens):
            ids.add(int(value))
    for i, text in enumerate(tokens):
        if text in EOG_TEXTS and (i >= len(types) or types[i] in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)):
            ids.add(i)
    return ids
