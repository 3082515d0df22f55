"""The vocabulary of a GGUF file: tokens, their types and scores, merges, special ids and flags.

Read from the `tokenizer.*` metadata with llama.cpp's defaults and its fixes
of token types (ik_llama.cpp `llama_vocab::impl::load`):

- missing special ids: SentencePiece vocabularies default to BOS 1, EOS 2,
  UNK 0; byte-level BPE ones to BOS = EOS = 11 (Falcon's `<|endoftext|>`);
  an id outside the vocabulary is ignored (the default stays);
- missing `add_bos_token`: on for SentencePiece and for the pre-tokenizers
  that say so (Llama 3, Tekken, Chameleon); `add_space_prefix`: on for
  SentencePiece only;
- an empty token text becomes `[EMPTY_<id>]`;
- tokens whose text marks an end of turn or a fill-in-the-middle role
  (`<|im_end|>`, `<|eot_id|>`, `<|fim_prefix|>`, ...) are control tokens
  whatever type the file gives them; gpt-oss's `<|channel|>`, `<|message|>`,
  `<|start|>`, `<|constrain|>` are user-defined (always matched, always
  printed);
- Phi-3 (by `general.name`): special tokens eat the whitespace after them
  ("rstrip"), except `<unk>`, `<s>` and `<|endoftext|>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import TokenizerError
from .pretokenizers import PreTokenizer, pre_tokenizer

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
UNDEFINED, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 0, 1, 2, 3, 4, 5, 6

# texts llama.cpp makes control tokens of: ends of turn and fill-in-the-middle roles
EOG_TEXTS = frozenset(
    "<|eot_id|> <|im_end|> <|end|> <|return|> <|call|> <|flush|> <|calls|> <end_of_turn> <|endoftext|> </s> "
    "<|eom_id|> <EOT> _<EOT> [EOT] [EOS] <|end_of_text|> <end_of_utterance> <eos> <turn|> <|tool_response> "
    "<｜end▁of▁sentence｜>".split()
)
FIM_TEXTS = frozenset(
    "<|fim_prefix|> <fim-prefix> <fim_prefix> <｜fim▁begin｜> <PRE> ▁<PRE> <|code_prefix|> <|prefix|> "
    "<|fim_suffix|> <fim-suffix> <fim_suffix> <｜fim▁hole｜> <SUF> ▁<SUF> <|code_suffix|> <|suffix|> "
    "<|fim_middle|> <fim-middle> <fim_middle> <｜fim▁end｜> <MID> ▁<MID> <|code_middle|> <|middle|> "
    "<|fim_pad|> <fim-pad> <fim_pad> <PAD> [PAD] <|fim_repo|> <|repo_name|> <fim-repo> <REPO> <reponame> "
    "<|file_sep|>".split()
)
GPT_OSS_USER_DEFINED = frozenset(["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"])

MODELS = {"gpt2": "byte-level BPE", "llama": "SentencePiece BPE"}


@dataclass
class Vocabulary:
    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece BPE)
    pre: str
    pretokenizer: PreTokenizer | None  # None for SentencePiece
    tokens: list[str]
    types: list[int]  # after llama.cpp's fixes (see the module docstring)
    scores: list[float]
    merges: list[tuple[str, str]]
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    eot_id: int | None
    eom_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    clean_spaces: bool
    chat_template: str | None
    rstrip_ids: frozenset[int] = frozenset()
    ids: dict[str, int] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_spm(self) -> bool:
        return self.model == "llama"

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Vocabulary:
        model = meta.get("tokenizer.ggml.model")
        if model is None:
            raise TokenizerError(
                "the file has no vocabulary (tokenizer.ggml.model is missing); use a model file that has one"
            )
        if model not in MODELS:
            known = ", ".join(f"'{k}' ({v})" for k, v in MODELS.items())
            raise TokenizerError(
                f"tokenizer model {model!r} (tokenizer.ggml.model) is not supported; kiln reads {known}"
            )
        tokens = meta.get("tokenizer.ggml.tokens")
        if not tokens:
            raise TokenizerError(
                "the file's vocabulary is empty (tokenizer.ggml.tokens); convert the model again"
            )
        tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        n = len(tokens)
        types = _int_list(meta, "tokenizer.ggml.token_type", n, NORMAL)
        scores = [float(s) for s in _list(meta, "tokenizer.ggml.scores", n, 0.0)]

        is_spm = model == "llama"
        pre_name = meta.get("tokenizer.ggml.pre") or "default"
        pre = None if is_spm else pre_tokenizer(pre_name)
        merges = [] if is_spm else _merges(meta)

        # llama.cpp's defaults, then the file's values where it has valid ones
        if is_spm:
            defaults = {"bos": 1, "eos": 2, "unk": 0}
        else:
            defaults = {"bos": None if pre.bos_none else 11, "eos": 11, "unk": None}

        def special(key: str, default: int | None = None) -> int | None:
            value = meta.get(f"tokenizer.ggml.{key}_token_id")
            if value is not None and 0 <= int(value) < n:
                return int(value)
            return default if default is not None and 0 <= default < n else None

        def flag(key: str, default: bool) -> bool:
            value = meta.get(f"tokenizer.ggml.{key}")
            return default if value is None else bool(value)

        ids = {t: i for i, t in enumerate(tokens)}
        types = _fix_types(tokens, types, ids)
        return cls(
            model=model,
            pre=pre_name,
            pretokenizer=pre,
            tokens=tokens,
            types=types,
            scores=scores,
            merges=merges,
            bos_id=special("bos", defaults["bos"]),
            eos_id=special("eos", defaults["eos"]),
            unk_id=special("unknown", defaults["unk"]),
            pad_id=special("padding"),
            eot_id=special("eot"),
            eom_id=special("eom"),
            add_bos=flag("add_bos_token", is_spm or pre.add_bos),
            add_eos=flag("add_eos_token", False),
            add_space_prefix=flag("add_space_prefix", is_spm),
            clean_spaces=False if is_spm else pre.clean_spaces,
            chat_template=meta.get("tokenizer.chat_template"),
            rstrip_ids=_rstrip_ids(meta, tokens, types, ids),
            ids=ids,
            metadata=meta,
        )

    def special_ids(self, parse_special: bool) -> list[int]:
        """Tokens cut out of the text before it is tokenized: user-defined ones always,
        control and unknown ones only when parsing special tokens (llama.cpp's rule)."""
        kinds = (CONTROL, UNKNOWN, USER_DEFINED) if parse_special else (USER_DEFINED,)
        return [i for i, t in enumerate(self.types) if t in kinds]


def _list(meta: Mapping[str, Any], key: str, n: int, default) -> list:
    values = meta.get(key)
    if values is None:
        return [default] * n
    if len(values) < n:
        raise TokenizerError(
            f"the vocabulary is inconsistent: {n} tokens but {len(values)} values in {key}; convert the model again"
        )
    return list(values[:n])


def _int_list(meta: Mapping[str, Any], key: str, n: int, default: int) -> list[int]:
    return [int(v) for v in _list(meta, key, n, default)]


def _merges(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    raw = meta.get("tokenizer.ggml.merges")
    if raw is None:
        raise TokenizerError(
            "the byte-level BPE vocabulary has no merges (tokenizer.ggml.merges); convert the model again"
        )
    merges = []
    for m in raw:
        # llama.cpp cuts at the first space after the first character (a merge may start with a space)
        cut = m.find(" ", 1)
        if cut > 0:
            merges.append((m[:cut], m[cut + 1 :]))
    return merges


def _fix_types(tokens: list[str], types: list[int], ids: dict[str, int]) -> list[int]:
    types = list(types)
    for text in EOG_TEXTS | FIM_TEXTS:
        i = ids.get(text)
        if i is not None:
            types[i] = CONTROL
    for text in GPT_OSS_USER_DEFINED:
        i = ids.get(text)
        if i is not None:
            types[i] = USER_DEFINED
    # gpt-oss and Solar Open: <|end|> ends a message, not the generation; it is printed
    has = {t for t in ("<|return|>", "<|call|>", "<|calls|>", "<|flush|>") if t in ids}
    if "<|end|>" in ids and ({"<|return|>", "<|call|>"} <= has or {"<|calls|>", "<|flush|>"} <= has):
        types[ids["<|end|>"]] = USER_DEFINED
    # Gemma 4 and PaddleOCR: </s> is an ordinary token
    if "<|tool_response>" in ids and "</s>" in ids:
        types[ids["</s>"]] = NORMAL
    return types


def _rstrip_ids(
    meta: Mapping[str, Any], tokens: list[str], types: list[int], ids: dict[str, int]
) -> frozenset[int]:
    name = str(meta.get("general.name") or "").lower()
    if "phi-3" not in name and "phi3" not in name:
        return frozenset()
    strip = {i for i, t in enumerate(types) if t in (CONTROL, UNKNOWN, USER_DEFINED)}
    if "</s>" in ids:
        strip.add(ids["</s>"])
    for text in ("<unk>", "<s>", "<|endoftext|>"):
        strip.discard(ids.get(text))
    return frozenset(strip)
