"""The pre-tokenizers of byte-level BPE vocabularies, by `tokenizer.ggml.pre` name.

A pre-tokenizer is a list of regular expressions applied in order: each one
cuts every piece left by the one before into its matches and the gaps between
them (both kept). Byte-level BPE then merges within each piece only. The
expressions and the flags below are the ones llama.cpp (ik_llama.cpp,
`src/llama-vocab.cpp`) uses for each name, written here as Oniguruma patterns
(the engine of the `tokenizers` library):

- `ignore_merges`: a piece that is itself a token is taken whole, without
  running the merges (Llama 3, Tekken);
- `add_bos`: the default of `tokenizer.ggml.add_bos_token` when the file
  does not say;
- `clean_spaces`: whether detokenizing removes the space before `?!.,` and
  in front of contractions (llama.cpp's `clean_spaces`, transformers'
  `clean_up_tokenization_spaces`);
- `bos_none`: the vocabulary has no BOS token unless the file names one.

Where llama.cpp rewrote a model's original expression (case-insensitive
groups spelled out, `\\p{Lu}` approximated by `[^a-z]` for Tekken and GPT-4o),
the rewritten one is used, so that kiln splits as llama.cpp does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TokenizerError

_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
JAIS2 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)"
    r"|\s{1,2}(?!\S)|\s{1}"
)
QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN35 = (
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BAILINGMOE = (
    r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]|\s+(?!\S)|\s+"
)
SEED_CODER = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+"
)
EXAONE_MOE = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?"
    r"|\s*[\r\n]|\s+(?!\S)|\s+"
)
# llama.cpp's rewrites of the Tekken and GPT-4o expressions: "upper" is a letter that is not a-z,
# "lower" a letter that is not A-Z
_UPPER = r"(?:(?=[\p{L}])[^a-z])"
_LOWER = r"(?:(?=[\p{L}])[^A-Z])"
TEKKEN = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*|\p{{N}}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GPT4O = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# the CJK and Greek/Cyrillic classes are written as escapes (Python's \u, not the regex's), so that no
# editor can normalize them into other code points
YOUTU = [
    "[\uac00-\ud7a3\u3131-\u318e]+|[\uff01\u2026\u201c\u201d\u2018\u2019\u2014\uff1a\uff1b\uff0c\u3001-\u303f\ufe30-\ufe4f]+"
    "|[\u3105-\u312f]+|[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+" + _CONTRACTIONS + "?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + _CONTRACTIONS + "?"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
]
_HAN_HANGUL = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
DEEPSEEK_LLM = [
    r"[\r\n]",
    r"\s?[A-Za-z"
    "\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377"
    "\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556"
    "\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a"
    "\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4"
    "\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f"
    "\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b"
    "\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a"
    "\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2"
    "\U000118a0-\U000118df\U0001e900-\U0001e943]+",
    r"\s?[!-/:-~" "\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    r"\s+$",
    _HAN_HANGUL,
    r"\p{N}+",
]
DEEPSEEK_CODER = [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _HAN_HANGUL, r"\p{N}"]
DEEPSEEK3 = [
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
    r"|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
]
FALCON = [r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"]
STARCODER = [r"\p{N}", GPT2]  # also SmolLM, Refact, Command-R, ...
_NOT_PUNCT = r" ?[^(\s|.,!?" "\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"
PORO = [_NOT_PUNCT]
VIKING = [_NOT_PUNCT, r"\p{N}"]
CHAMELEON = [
    r"<sentinel:[0-9]+>",
    r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
    r"([\t\n]|    |  )",
    r"\p{N}",
    r"[\p{P}!-/:-@\[-`{-~]",
    GPT2,
]
DEFAULT = [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"]


@dataclass(frozen=True)
class PreTokenizer:
    regexes: tuple[str, ...]
    ignore_merges: bool = False
    add_bos: bool = False
    clean_spaces: bool = True
    bos_none: bool = False


def _p(regexes, **flags) -> PreTokenizer:
    return PreTokenizer(tuple([regexes] if isinstance(regexes, str) else regexes), **flags)


def _names(names: str, pre: PreTokenizer) -> dict[str, PreTokenizer]:
    return dict.fromkeys(names.split(), pre)


KEEP = {"clean_spaces": False}  # detokenizing keeps spaces as they are

PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": _p(DEFAULT),
    **_names(
        "llama3 llama-v3 llama-bpe laguna falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano",
        _p(LLAMA3, ignore_merges=True, add_bos=True),
    ),
    "jais-2": _p(JAIS2),
    **_names("dbrx smaug-bpe", _p(LLAMA3)),
    **_names("glm4 chatglm-bpe", _p(LLAMA3, bos_none=True)),
    "deepseek-llm": _p(DEEPSEEK_LLM, **KEEP),
    "deepseek-coder": _p(DEEPSEEK_CODER, **KEEP),
    **_names("deepseek-v3 hunyuan-dense joyai-llm", _p(DEEPSEEK3, **KEEP)),
    "youtu": _p(YOUTU, ignore_merges=True, **KEEP),
    "falcon": _p(FALCON),
    # "gpt2" is not a name llama.cpp knows (it says "gpt-2"); accepted as the same
    **_names(
        "gpt-2 gpt2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert "
        "mpt olmo jais exaone4",
        _p(GPT2),
    ),
    **_names("trillion granite-docling", _p(GPT2, **KEEP)),
    **_names("starcoder refact codeshell exaone minerva-7b mellum2", _p(STARCODER)),
    **_names("smollm command-r cohere2_moe", _p(STARCODER, **KEEP)),
    **_names("qwen2 deepseek-r1-qwen kormo openpangu f2llmv2 hunyuan solar-open", _p(QWEN2, **KEEP)),
    **_names("stablelm2 megrez", _p(QWEN2)),
    "grok-2": _p(QWEN2, **KEEP),
    "qwen35": _p(QWEN35, **KEEP),
    "poro-chat": _p(PORO, **KEEP),
    **_names("bloom gpt3-finnish", _p(PORO)),
    "viking": _p(VIKING, **KEEP),
    "tekken": _p(TEKKEN, ignore_merges=True, add_bos=True, **KEEP),
    "chameleon": _p(CHAMELEON, add_bos=True, **KEEP),
    **_names("gpt-4o llama4 kanana2 minimax-m2", _p(GPT4O, **KEEP)),
    **_names("bailingmoe bailingmoe2 llada-moe", _p(BAILINGMOE, **KEEP)),
    "seed-coder": _p(SEED_CODER, **KEEP),
    "exaone-moe": _p(EXAONE_MOE),
}

# names llama.cpp knows but kiln does not (they need code beyond a list of expressions)
NOT_SUPPORTED = {
    "kimi-k2": "a hand-written splitter for Han characters",
    "afmoe": "a hand-written digit grouping",
    "tiny_aya": "a hand-written digit grouping",
    "superbpe": "a zero-width digit split",
    "jina-v1-en": "a SEP token after each text (an embedding model)",
    "jina-v2-code": "a SEP token after each text (an embedding model)",
    "roberta-bpe": "a SEP token after each text (an embedding model)",
}


def pre_tokenizer(name: str | None) -> PreTokenizer:
    """The pre-tokenizer of a `tokenizer.ggml.pre` value (missing or empty: llama.cpp's 'default')."""
    if not name:
        return PRE_TOKENIZERS["default"]
    try:
        return PRE_TOKENIZERS[name]
    except KeyError:
        why = f" ({NOT_SUPPORTED[name]} that kiln does not have yet)" if name in NOT_SUPPORTED else ""
        raise TokenizerError(
            f"unknown pre-tokenizer {name!r} (tokenizer.ggml.pre){why}; kiln knows: "
            f"{', '.join(sorted(PRE_TOKENIZERS))}. Convert the model again with a supported pre-tokenizer, "
            "or report the name so it can be added"
        ) from None
