"""The vocabulary of a GGUF file: tokens, their types and scores, merges, special ids and flags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import TokenizerError

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class Vocabulary:
    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    eot_id: int | None
    eom_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None
    ids: dict[str, int] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Vocabulary:
        model = meta.get("tokenizer.ggml.model")
        if model is None:
            raise TokenizerError("the file has no vocabulary (tokenizer.ggml.model is missing); use a model file with one")
        tokens = meta.get("tokenizer.ggml.tokens")
        if not tokens:
            raise TokenizerError("the file's vocabulary is empty (tokenizer.ggml.tokens); convert the model again")
        n = len(tokens)
        types = list(meta.get("tokenizer.ggml.token_type") or [NORMAL] * n)
        scores = list(meta.get("tokenizer.ggml.scores") or [0.0] * n)
        if len(types) != n or len(scores) != n:
            raise TokenizerError(
                f"the vocabulary is inconsistent: {n} tokens, {len(types)} token types, {len(scores)} scores; "
                "convert the model again"
            )

        def special(key: str) -> int | None:
            value = meta.get(f"tokenizer.ggml.{key}")
            if value is None or not 0 <= int(value) < n:
                return None
            return int(value)

        is_spm = model == "llama"
        pre = meta.get("tokenizer.ggml.pre") or "default"
        add_bos = meta.get("tokenizer.ggml.add_bos_token")
        if add_bos is None:
            # llama.cpp's defaults: SentencePiece models add BOS; so do the llama3-style BPE vocabularies
            add_bos = is_spm or pre in ("llama3", "llama-v3", "llama-bpe", "tekken")
        return cls(
            model=model,
            pre=pre,
            tokens=list(tokens),
            types=types,
            scores=scores,
            merges=list(meta.get("tokenizer.ggml.merges") or []),
            bos_id=special("bos_token_id"),
            eos_id=special("eos_token_id"),
            unk_id=special("unknown_token_id"),
            pad_id=special("padding_token_id"),
            eot_id=special("eot_token_id"),
            eom_id=special("eom_token_id"),
            add_bos=bool(add_bos),
            add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
            add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", is_spm)),
            chat_template=meta.get("tokenizer.chat_template"),
            ids={t: i for i, t in enumerate(tokens)},
            metadata=meta,
        )

    def special_ids(self, parse_special: bool) -> list[int]:
        """Tokens matched as wholes before the text is tokenized: user-defined ones always,
        control and unknown ones only when parsing special tokens (llama.cpp's rule)."""
        kinds = (CONTROL, UNKNOWN, USER_DEFINED) if parse_special else (USER_DEFINED,)
        return [i for i, t in enumerate(self.types) if t in kinds and self.tokens[i]]
