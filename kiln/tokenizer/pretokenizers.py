"""The pre-tokenizer of each `tokenizer.ggml.pre` name: the regexes llama.cpp splits text with
before byte-level BPE (applied in order, each splitting the pieces of the one before, matches and
gaps both kept), and whether a piece that is itself a token skips the merges."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TokenizerError

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN35 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DEEPSEEK3 = [
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
]
DEEPSEEK_CODER = [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}"]
DEFAULT = [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"]


@dataclass(frozen=True)
class PreTokenizer:
    regexes: tuple[str, ...]
    ignore_merges: bool = False


def _p(regexes, ignore_merges=False) -> PreTokenizer:
    return PreTokenizer(tuple([regexes] if isinstance(regexes, str) else regexes), ignore_merges)


PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": _p(DEFAULT),
    **{name: _p(LLAMA3, ignore_merges=True) for name in ("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral")},
    "dbrx": _p(LLAMA3),
    "smaug-bpe": _p(LLAMA3),
    **{name: _p(GPT2) for name in ("gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe")},
    **{name: _p(QWEN2) for name in ("qwen2", "deepseek-r1-qwen", "stablelm2")},
    "qwen35": _p(QWEN35),
    "deepseek-v3": _p(DEEPSEEK3),
    "deepseek-coder": _p(DEEPSEEK_CODER),
    **{name: _p([r"\p{N}", GPT2]) for name in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone")},
    "falcon": _p([r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"]),
    "tekken": _p(
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ignore_merges=True,
    ),
}


def pre_tokenizer(name: str) -> PreTokenizer:
    try:
        return PRE_TOKENIZERS[name]
    except KeyError:
        raise TokenizerError(
            f"unknown pre-tokenizer {name!r} (tokenizer.ggml.pre); kiln knows: {', '.join(sorted(PRE_TOKENIZERS))}. "
            "Re-convert the model, or report the name so it can be added"
        ) from None
