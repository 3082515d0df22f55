"""Which type each tensor gets for `llama-quantize IN OUT TYPE`: ik_llama.cpp's per-tensor
mixtures (its llama_tensor_get_type with every counter), the choice of tensors that are
quantized at all, the fallback for rows that do not fit a type, and the interplay of
`--pure`, `--leave-output-tensor`, `--token-embedding-type`, `--output-tensor-type`,
`--ffn-gate-inp-type`, the `--attn-q-type`-style flags and `--custom-q` rules, in ik's order.

    choices = default_types("Q4_K_M", gguf.metadata, [(t.name, t.shape, t.type_name) for t in ...])
    choices[i].type_name      # what ik writes for tensor i ("=" the source type when kept)
    choices[i].default_type   # the same without --custom-q rules
    choices[i].notes          # why, for a dry run

Facts from ik_llama.cpp's src/llama-quantize.cpp; the type-level tables live in
`quantize_ftypes`. Pure Python over names and shapes: no tensor data is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import QuantizeError
from ..gguf.types import GGML_TYPES_BY_NAME
from .quantize_ftypes import (
    FILE_TYPES,
    FileType,
    FileTypeError,
    UnsupportedRowSizeError,
    fallback_type,
    file_type,
    interleave_fit,
    plain_type,
    repacked_file_type,
)

__all__ = [
    "FILE_TYPES", "FileType", "FileTypeError", "ModelFacts", "QuantizeRuleError", "TensorChoice",
    "UnsupportedRowSizeError", "default_types", "fallback_type", "file_type", "interleave_fit",
    "plain_type", "repacked_file_type",
]


class QuantizeRuleError(QuantizeError):
    """The model's tensors do not fit ik_llama.cpp's per-tensor rules (layer numbers, counts)."""


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class ModelFacts:
    """The hyperparameters the mixture rules look at."""

    arch: str = ""
    n_layer: int = 0
    n_expert: int = 0
    n_head: int = 0
    n_head_kv: int = 0
    n_vocab: int = 0
    n_embd: int = 0

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def size(self) -> str:
        """ik's model-type label where a rule depends on it ("8B", "70B"), else ""."""
        a, n = self.arch, self.n_layer
        if a == "llama":
            if self.n_expert == 8:
                return ""
            if n == 32:
                return "8B" if self.n_vocab >= 40000 and self.n_vocab != 49152 else ""
            if n == 36:
                return "8B"
            if n == 80:
                return "70B" if self.n_head != self.n_head_kv else ""
            return ""
        if a in ("deci", "qwen2", "qwen2vl", "olmo") and n == 80:
            return "70B"
        if a in ("qwen3", "qwen3vl") and n == 36 and self.n_embd != 2560:
            return "8B"
        if (a, n) in (("cohere2", 32), ("mistral3", 34)):
            return "8B"
        return ""

    @classmethod
    def from_metadata(cls, metadata: dict) -> ModelFacts:
        arch = str(metadata.get("general.architecture", ""))

        def key(name, default=0):
            value = metadata.get(f"{arch}.{name}", default)
            if isinstance(value, (list, tuple)):  # per-layer arrays: ik's n_head() is layer 0's
                value = value[0] if value else default
            return int(value)

        n_head = key("attention.head_count")
        n_head_kv = key("attention.head_count_kv", n_head)
        if arch in ("deepseek2", "mistral4", "glm-dsa") and n_head_kv == 1:
            n_head_kv = n_head  # mainline's MLA files: ik turns them back into n_head kv heads
        n_vocab = key("vocab_size") or len(metadata.get("tokenizer.ggml.tokens", ()))
        return cls(arch, key("block_count"), key("expert_count"), n_head, n_head_kv, n_vocab,
                   key("embedding_length"))


# ---------------------------------------------------------------- the result


@dataclass
class TensorChoice:
    name: str
    shape: tuple[int, ...]  # ggml order: row length first
    src_type: str
    quantize: bool  # ik computes a new type for it (else it is copied as it is)
    default_type: str  # ik's type without --custom-q rules (src_type when kept)
    type_name: str  # with the custom rules given to default_types (= default_type without)
    custom_rules_apply: bool  # ik consults --custom-q for it (not under --pure or a float file type)
    custom_rule: str | None = None  # the rule that decided type_name, if any
    notes: list[str] = field(default_factory=list)  # why, in order, for a dry run

    @property
    def action(self) -> str:
        return "quantize" if self.quantize and self.type_name != self.src_type else "copy"


# ---------------------------------------------------------------- ftype families of the rules

_INT_TYPES = frozenset({"I8", "I16", "I32", "I64"})
# ik compares names with its per-architecture tensor tables: only these architectures have
# position embeddings / token types (kept as they are), and these have no output tensor
# (an "output.weight" is then an ordinary tensor to it)
_POS_EMBD_ARCHS = frozenset({"gpt2", "mpt", "starcoder", "bert"})
_TOKEN_TYPES_ARCHS = frozenset({"bert", "nomic-bert", "jina-bert-v2"})
_NO_OUTPUT_ARCHS = frozenset({"gptj", "bert", "nomic-bert", "jina-bert-v2", "gemma", "gemma2", "gemma4_mtp",
                              "gemma4-assistant", "command-r", "openelm", "bitnet", "cohere2"})
_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

_IQ1_R4 = frozenset({"IQ1_S_R4", "IQ1_M_R4"})
_IQ2_FAMILY = frozenset({"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M", "IQ2_KS",
                         "IQ2_XXS_R4", "IQ2_XS_R4", "IQ2_M_R4"})
# output tensor: IQ4_K (tied to the embeddings) / Q5_K for these low-bit file types
_OUT_LOW = frozenset({"IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M", "IQ2_K",
                      "IQ3_K", "IQ2_KS", "IQ3_K_R4", "IQ3_KS", "IQ2_K_R4", "IQ3_XXS_R4", "IQ2_KL",
                      "IQ2_M_R4", "IQ1_S_R4", "IQ1_M_R4", "IQ2_KT", "IQ3_KT", "IQ1_KT"})
_OUT_LOW_R4 = frozenset({"IQ2_XXS_R4", "IQ2_XS_R4"})
_OUT_TIED_IQ5K = frozenset({"IQ3_S", "IQ3_M", "IQ3_KL", "IQ4_XS", "IQ3_S_R4", "IQ4_KS", "IQ4_KSS",
                            "IQ4_KS_R4"})
_OUT_KEEPS = frozenset({"Q8_0", "Q8_0_R8", "IQ6_K", "Q6_K_R4", "Q8_K_R8", "Q8_KV", "Q8_KV_R8"})
# token embeddings (when an output tensor exists)
_EMBD = {
    **dict.fromkeys(("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M", "IQ2_XXS_R4", "IQ2_XS_R4", "IQ1_S_R4",
                     "IQ1_M_R4"), "Q2_K"),
    **dict.fromkeys(("IQ2_S", "IQ2_M", "IQ2_M_R4", "IQ3_XXS", "IQ3_KT"), "IQ3_S"),
    "IQ3_XXS_R4": "IQ3_K",
    **dict.fromkeys(("IQ1_BN", "IQ2_BN", "IQ2_BN_R4"), "IQ4_NL"),
}
# attn_output of models with 4+ experts: Q5_K for these
_MOE_ATTN_OUT_Q5K = frozenset({
    "Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S", "IQ3_M",
    "IQ4_XS", "IQ4_K", "IQ4_KSS", "IQ4_KS", "IQ4_KS_R4", "IQ5_KS", "IQ5_KS_R4", "IQ2_K", "IQ3_K",
    "IQ3_KL", "Q4_K_R4", "IQ4_NL_R4", "IQ4_XS_R8", "Q3_K_R4", "IQ3_KT", "IQ3_KS", "Q2_K_R4",
    "IQ4_K_R4", "IQ3_K_R4", "IQ2_K_R4", "IQ3_XXS_R4", "IQ3_S_R4"})
_DENSE_ATTN_OUT = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "IQ3_XXS_R4": "IQ3_K_R4", "Q3_K_M": "Q4_K",
                   "Q3_K_L": "Q5_K", "IQ3_M": "IQ4_K", "IQ2_K": "IQ3_K", "IQ2_K_R4": "IQ3_K_R4",
                   "IQ3_KL": "IQ4_KS"}
# attn_v with n_gqa >= 2: one step up
_ATTN_V_GQA2 = {"IQ3_XS": "IQ4_K", "IQ3_S": "IQ4_K", "IQ3_S_R4": "IQ4_K_R4", "IQ3_K": "IQ4_K",
                "IQ3_KS": "IQ4_KS", "IQ2_KL": "IQ4_KS", "IQ3_K_R4": "IQ4_K_R4"}
_ATTN_V_GQA2_LATE = {**dict.fromkeys(("IQ4_NL", "IQ4_XS", "IQ4_NL_R4", "IQ4_XS_R8", "IQ4_KS",
                                      "IQ4_KSS"), "IQ5_K"),
                     "IQ4_KS_R4": "IQ5_K_R4", "IQ4_K": "IQ5_K", "IQ4_K_R4": "IQ5_K"}
# attn_v with n_gqa >= 4 and no rule of its own: the tensor type one step up
_ATTN_V_GQA4_BUMP = {
    "Q2_K": "IQ3_S", "IQ3_XXS": "IQ3_S", "Q2_K_R4": "IQ3_K_R4", "IQ3_XXS_R4": "IQ3_K_R4",
    "Q3_K": "Q4_K", "IQ3_S": "Q4_K", "IQ3_K": "IQ4_K", "IQ3_KS": "IQ4_KS", "IQ2_KL": "IQ4_KS",
    "IQ3_S_R4": "Q4_K_R4", "Q3_K_R4": "Q4_K_R4", "Q4_K": "Q5_K", "IQ4_XS": "Q5_K", "IQ4_NL": "Q5_K",
    "IQ4_K": "IQ5_K", "IQ4_KS": "IQ5_K", "IQ4_NL_R4": "Q5_K", "IQ4_XS_R8": "Q5_K", "Q5_K": "Q6_K",
    "IQ5_K": "IQ6_K", "IQ5_KS": "IQ6_K",
}
_BARE_NAMES = ("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_qkv.weight", "attn_output.weight")
_IQ4_LOW_DOWN = frozenset({"IQ4_NL", "IQ4_XS", "IQ4_KS", "IQ4_KSS", "IQ4_NL_R4", "IQ4_XS_R8"})

# --attn-q-type and friends: the flag's key in `overrides`
_OVERRIDE_KEYS = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "ffn_gate", "ffn_down",
                  "ffn_up", "ffn_gate_inp")


def _use_more_bits(i_layer: int, n_layer: int) -> bool:
    """The layers ik gives more bits: the first and last eighth, and every third in between."""
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


def _n_dims(shape) -> int:
    """ggml_n_dims: trailing dimensions of 1 do not count."""
    n = len(shape)
    while n > 1 and int(shape[n - 1]) == 1:
        n -= 1
    return max(n, 1)


def _type_name(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    key = str(value).strip().upper()
    key = {"Q4_0_4X4": "Q4_0_4_4", "Q4_0_4X8": "Q4_0_4_8", "Q4_0_8X8": "Q4_0_8_8"}.get(key, key)
    if key not in GGML_TYPES_BY_NAME:
        raise FileTypeError(f"unknown tensor type {value!r} for {what}")
    return key


def _normalize_overrides(overrides: dict | None) -> dict[str, str]:
    """`overrides` keyed by flag (attn_q_type), bare name (attn_q) or suffix (attn_q.weight)."""
    out = {}
    for k, v in (overrides or {}).items():
        base = str(k).removesuffix(".weight").removesuffix("_type").replace("-", "_").lstrip("_")
        if base not in _OVERRIDE_KEYS:
            raise FileTypeError(f"unknown per-tensor type option {k!r}; known: {', '.join(_OVERRIDE_KEYS)}")
        if v:
            out[base] = _type_name(v, f"--{base.replace('_', '-')}-type")
    return out


def _custom_rules(rules) -> list[tuple[str, re.Pattern, str]]:
    """(pattern, regex, type) from (pattern, type) pairs or objects with .pattern/.regex/.type_name."""
    out = []
    for rule in rules or ():
        if isinstance(rule, (tuple, list)):
            pattern, type_name = rule
            regex = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
            pattern = regex.pattern
        else:
            regex, type_name = rule.regex, rule.type_name
            pattern = getattr(rule, "pattern", regex.pattern)
        out.append((pattern, regex, _type_name(type_name, f"--custom-q rule {pattern!r}")))
    return out


# ---------------------------------------------------------------- the planner


# the rules IQ1_S_R4/IQ1_M_R4 and IQ2_KT follow, and the types each gives
_IQ1_R4_TYPES = dict(attn_v=("IQ4_K_R4", "IQ3_K_R4", "Q2_K_R4"), attn_k="Q4_K_R4", first_ffn="IQ3_K_R4",
                     attn_q="Q4_K_R4", attn_qkv="IQ2_K_R4", shexp="IQ4_K_R4", ffn_down_first="Q2_K_R4",
                     attn_output=("Q5_K_R4", "IQ2_K_R4"))
_IQ2_KT_TYPES = dict(attn_v=("IQ4_K", "IQ3_K", "Q2_K"), attn_k="Q4_K", first_ffn="IQ3_K", attn_q="Q4_K",
                     attn_qkv="IQ3_K", shexp="IQ4_K", ffn_down_first="IQ3_K", attn_output=("Q5_K", "IQ3_K"))


class _Mixture:
    """llama_tensor_get_type's state: the counters run over the quantized tensors in file order."""

    def __init__(self, ftype: str, facts: ModelFacts, has_output: bool, output_name: str | None, n_attention_wv: int,
                 has_imatrix: bool, overrides: dict[str, str], output_tensor_type: str | None,
                 per_layer_token_embedding_type: str | None, token_embedding_type: str | None):
        self.ft = ftype
        self.m = facts
        self.has_output = has_output
        self.output_name = output_name
        self.has_imatrix = has_imatrix
        self.o = overrides
        self.output_tensor_type = output_tensor_type
        self.token_embedding_type = token_embedding_type
        self.per_layer_token_embedding_type = per_layer_token_embedding_type
        self.n_attention_wv = n_attention_wv
        self.n_ffn = facts.n_layer  # n_ffn_down = n_ffn_gate = n_ffn_up
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0

    def _layer(self, counter: int, name: str) -> tuple[int, int]:
        """(layer, n_layer): the counter, or for MoE models the layer in the name."""
        n_layer = self.n_ffn
        if max(1, self.m.n_expert) > 1:
            m = re.match(r"blk\.\s*([+-]?\d+)", name)
            if m is None:
                raise QuantizeRuleError(f"cannot tell the layer of tensor {name} (expected blk.N.…); "
                                        "ik_llama.cpp stops here too")
            layer = int(m.group(1))
            if not 0 <= layer < n_layer:
                raise QuantizeRuleError(f"tensor {name} is in layer {layer}, outside [0, {n_layer}) "
                                        "(the block_count of the metadata)")
            return layer, n_layer
        return counter, n_layer

    def choose(self, name: str, shape, new: str) -> tuple[str, str]:
        """(type, reason) for a tensor quantized from the file type's default `new`, before custom
        rules and fallbacks; advances the counters exactly as ik does."""
        ft, m, o = self.ft, self.m, self.o
        gqa, n_exp = m.n_gqa, m.n_expert
        big_vocab = m.n_vocab >= 127999 and m.size in ("8B", "70B")

        if name == self.output_name or (not self.has_output and name == "token_embd.weight"):
            why = "output" if name == self.output_name else "output (tied to token_embd)"
            if self.output_tensor_type:
                return self.output_tensor_type, why + ": --output-tensor-type"
            if m.arch == "falcon" or int(shape[0]) % 256:
                return "Q8_0", why
            if ft in _OUT_LOW:
                return ("IQ4_K" if not self.has_output else "Q5_K"), why
            if ft in _OUT_LOW_R4:
                return ("IQ4_K_R4" if not self.has_output else "Q5_K_R4"), why
            if ft in _OUT_TIED_IQ5K and not self.has_output:
                return "IQ5_K", why
            if new not in _OUT_KEEPS:
                return "Q6_K", why
            return new, why
        if name in ("token_embd.weight", "per_layer_token_embd.weight"):
            given = self.token_embedding_type if name == "token_embd.weight" else self.per_layer_token_embedding_type
            if given:
                return given, "token embeddings: given type"
            return _EMBD.get(ft, new), "token embeddings"
        if ft in _IQ1_R4:
            return self._iq1_r4(name, new)
        if ft == "IQ2_KT":
            return self._iq2_kt(name, new)
        if ft in _IQ2_FAMILY:
            return self._iq2_family(name, new)

        if "attn_v.weight" in name:
            t = new
            if o.get("attn_v"):
                t = o["attn_v"]
            elif n_exp >= 4:
                t = "Q8_0"  # for 4+ experts the attn_v tensors are small
            elif m.size == "70B":
                t = {"Q3_K": "Q5_K", "Q4_K": "Q5_K", "IQ3_K": "IQ5_K"}.get(new, new)
            elif ft == "Q2_K":
                t = "Q4_K" if gqa >= 4 else "Q3_K"
            elif ft == "IQ2_K":
                t = "IQ4_K" if gqa >= 2 else "IQ3_K"
            elif ft == "IQ2_K_R4":
                t = "IQ4_K_R4" if gqa >= 2 else "IQ3_K_R4"
            elif ft == "Q2_K_S" and gqa >= 4:
                t = "Q4_K"
            elif ft == "Q2_K_R4" and gqa >= 4:
                t = "Q4_K_R4"
            elif ft == "IQ3_XXS":
                t = "Q4_K" if gqa >= 4 else "IQ3_K" if gqa >= 2 else "IQ3_S" if not self.has_imatrix else "IQ3_XXS"
            elif ft == "IQ3_KT":
                t = "IQ4_K" if gqa >= 4 else "IQ3_K"
            elif ft == "IQ4_KT":
                t = "IQ5_K" if gqa >= 4 else "IQ4_K"
            elif ft == "IQ3_XXS_R4":
                t = ("Q4_K_R4" if gqa >= 4 else "IQ3_K_R4" if gqa >= 2
                     else "IQ3_K_R4" if not self.has_imatrix else "IQ3_XXS_R4")
            elif ft in _ATTN_V_GQA2 and gqa >= 2:
                t = _ATTN_V_GQA2[ft]
            elif ft in ("IQ3_KL", "IQ3_M"):
                t = "IQ5_K" if gqa >= 2 else "IQ4_K"
            elif ft == "Q3_K_M":
                t = "Q5_K" if self.i_attention_wv < 2 else "Q4_K"
            elif ft == "Q3_K_L":
                t = "Q5_K"
            elif ft in _ATTN_V_GQA2_LATE and gqa >= 2:
                t = _ATTN_V_GQA2_LATE[ft]
            elif ft in ("Q4_K_M", "Q5_K_M") and _use_more_bits(self.i_attention_wv, self.n_attention_wv):
                t = "Q6_K"
            elif ft in ("Q4_K_S", "Q4_K_R4") and self.i_attention_wv < 4:
                t = "Q5_K"
            elif ft == "Q5_K_S":
                t = "Q6_K" if big_vocab else new
            elif ft in ("IQ5_K", "IQ5_KS"):
                t = "IQ6_K" if big_vocab else new
            elif gqa >= 4 and not (m.arch == "dflash-draft" and ft in ("Q4_K_M", "Q5_K_M")):
                t = _ATTN_V_GQA4_BUMP.get(new, new)
            why = f"attn_v ({self.i_attention_wv} of {self.n_attention_wv})"
            self.i_attention_wv += 1
            return t, why
        if "attn_k" in name:  # also attn_k_b, attn_kv_a_mqa, attn_kv_b
            if o.get("attn_k"):
                return o["attn_k"], "attn_k: --attn-k-type"
            if n_exp >= 4:
                return "Q8_0", "attn_k of a 4+ expert model"
            if ft == "IQ3_XS":
                return "IQ3_XXS", "attn_k"
            if ft in ("IQ3_XXS", "IQ3_XXS_R4"):
                return "IQ2_S", "attn_k"
            return new, "attn_k"
        # also attn_q_a, attn_q_b and attn_qkv: ik's own attn_qkv rules (and --attn-qkv-type) come
        # after this test and are never reached
        if "attn_q" in name:
            if o.get("attn_q"):
                return o["attn_q"], "attn_q: --attn-q-type"
            if ft == "IQ3_XS":
                return "IQ3_XXS", "attn_q"
            if ft in ("IQ3_XXS", "IQ3_XXS_R4"):
                return "IQ2_S", "attn_q"
            if big_vocab and ft in ("Q5_K_S", "IQ5_K", "IQ5_KS"):
                return {"Q5_K_S": "Q4_K", "IQ5_K": "IQ4_K", "IQ5_KS": "IQ4_KS"}[ft], "attn_q (8B/70B)"
            return new, "attn_q"
        if "ffn_down" in name:
            i, n = self._layer(self.i_ffn_down, name)
            self.i_ffn_down += 1
            return self._ffn_down(new, i, n), f"ffn_down (layer {i} of {n})"
        if "attn_output.weight" in name:
            if o.get("attn_output"):
                return o["attn_output"], "attn_output: --attn-output-type"
            if m.arch == "falcon":
                return ("Q4_K" if ft == "Q3_K_L" else new), "attn_output"
            if n_exp >= 4:
                if ft in _MOE_ATTN_OUT_Q5K:
                    return "Q5_K", "attn_output of a 4+ expert model"
                return ("IQ4_KS" if ft == "IQ2_KL" else new), "attn_output of a 4+ expert model"
            if ft == "IQ3_KT":
                return ("IQ3_K" if gqa >= 4 else new), "attn_output"
            return _DENSE_ATTN_OUT.get(ft, new), "attn_output"
        for part in ("ffn_gate", "ffn_up"):  # ffn_gate also catches ffn_gate_inp, when it is quantized
            if part in name:
                counter = self.i_ffn_gate if part == "ffn_gate" else self.i_ffn_up
                i, n = self._layer(counter, name)
                if part == "ffn_gate":
                    self.i_ffn_gate += 1
                else:
                    self.i_ffn_up += 1
                why = f"{part} (layer {i} of {n})"
                if o.get(part):
                    return o[part], why + f": --{part.replace('_', '-')}-type"
                if ft == "IQ3_XS" and n // 8 <= i < 7 * n // 8:
                    return "IQ3_XXS", why
                if ft == "IQ3_KL" and _use_more_bits(i, n):
                    return "IQ4_KS", why
                return new, why
        return new, "file type default"

    def _ffn_down(self, new: str, i: int, n: int) -> str:
        ft, m, o = self.ft, self.m, self.o
        falcon = m.arch == "falcon"
        more = _use_more_bits(i, n)
        first = i < n // 8
        if o.get("ffn_down"):
            return o["ffn_down"]
        if ft == "Q2_K":
            return "Q3_K"
        if ft == "Q2_K_S":
            return "Q4_K" if first else new
        if ft == "Q2_K_R4":
            return "Q4_K_R4" if first else new
        if ft == "IQ3_XXS" and not self.has_imatrix:
            return "Q4_K" if first else "Q3_K"
        if ft == "IQ3_KT" and not self.has_imatrix:
            return "IQ4_K" if first else "IQ3_K"
        if ft == "IQ3_XXS_R4" and not self.has_imatrix:
            return "Q4_K_R4" if first else "IQ3_K_R4"
        if ft == "Q3_K_M":
            return "Q5_K" if i < n // 16 else "Q4_K" if not falcon or more else "Q3_K"
        if ft == "IQ3_M" and (first or (m.n_expert >= 4 and more)):
            return "IQ4_K"
        if ft == "Q3_K_L":
            return "Q4_K" if falcon else "Q5_K"
        if ft == "IQ3_KL":
            return "IQ4_KS" if more else "IQ3_K"
        if ft == "Q4_K_M":
            if falcon:
                return "Q6_K" if i < n // 16 else "Q5_K" if more else "Q4_K"
            return "Q6_K" if more else new
        if first and not self.has_imatrix and ft in _IQ4_LOW_DOWN:
            return "Q5_K"
        if ft == "IQ4_KS_R4" and first and not self.has_imatrix:
            return "Q5_K_R4"
        if ft == "Q5_K_M" and more:
            return "Q6_K"
        if ft in ("Q4_K_S", "Q4_K_R4") and not falcon and first:
            return "Q5_K"
        if ft in ("Q4_0", "Q5_0") and self.has_imatrix and first:
            return "Q4_1" if ft == "Q4_0" else "Q5_1"
        if ft == "Q4_0_R8" and self.has_imatrix and first:
            return "IQ4_NL_R4"
        return new

    def _iq1_r4(self, name: str, new: str) -> tuple[str, str]:
        return self._low_bit(name, new, _IQ1_R4_TYPES)

    def _iq2_kt(self, name: str, new: str) -> tuple[str, str]:
        return self._low_bit(name, new, _IQ2_KT_TYPES)

    def _low_bit(self, name: str, new: str, types: dict) -> tuple[str, str]:
        """The rules IQ1_S_R4/IQ1_M_R4 and IQ2_KT share, with the types of one of them."""
        gqa, n_exp = self.m.n_gqa, self.m.n_expert
        if "attn_v.weight" in name:
            self.i_attention_wv += 1
            many, two, one = types["attn_v"]
            return (many if n_exp >= 4 or gqa >= 4 else two if gqa >= 2 else one), "attn_v"
        if n_exp >= 8 and "attn_k" in name:
            return types["attn_k"], "attn_k of an 8+ expert model"
        if n_exp >= 8 and any(f"blk.0.{p}" in name for p in ("ffn_down", "ffn_gate", "ffn_up")):
            return types["first_ffn"], "first-layer FFN of an 8+ expert model"
        if n_exp >= 8 and "attn_q" in name:
            return types["attn_q"], "attn_q of an 8+ expert model"
        if "attn_qkv.weight" in name:
            return types["attn_qkv"], "attn_qkv"
        if "_shexp.weight" in name:
            return types["shexp"], "shared expert"
        if "ffn_down" in name:
            i, n = self._layer(self.i_ffn_down, name)
            self.i_ffn_down += 1
            why = f"ffn_down (layer {i} of {n})"
            if self.o.get("ffn_down"):
                return self.o["ffn_down"], why + ": --ffn-down-type"
            return (types["ffn_down_first"] if i < n // 8 else new), why
        if "attn_output.weight" in name:
            moe, dense = types["attn_output"]
            return (moe if n_exp >= 4 else dense), "attn_output"
        return new, "file type default"

    def _iq2_family(self, name: str, new: str) -> tuple[str, str]:
        ft, m, gqa, n_exp = self.ft, self.m, self.m.n_gqa, self.m.n_expert
        richer = ft in ("IQ2_S", "IQ2_M", "IQ2_M_R4")
        if "attn_v.weight" in name:
            self.i_attention_wv += 1
            if gqa >= 4 or n_exp >= 4:
                return "IQ4_K", "attn_v"
            if gqa >= 2 or n_exp >= 2:
                return "IQ3_K", "attn_v"
            return ("IQ3_S" if richer else "Q2_K"), "attn_v"
        if n_exp >= 8 and "attn_k" in name:
            return "Q4_K", "attn_k of an 8+ expert model"
        if n_exp >= 8 and "attn_q" in name:
            return "Q4_K", "attn_q of an 8+ expert model"
        if "attn_qkv.weight" in name:
            return ("IQ3_XXS" if richer else "IQ2_K"), "attn_qkv"
        if "ffn_down" in name:
            # this family counts ffn_down tensors (experts and shared ones too), not layers
            i = self.i_ffn_down
            self.i_ffn_down += 1
            why = f"ffn_down (tensor {i}, first {self.n_ffn // 8} get more bits)"
            if i < self.n_ffn // 8:
                return ("IQ3_S" if richer else "Q2_K"), why
            return new, why
        if "attn_output.weight" in name:
            if self.o.get("attn_output"):
                return self.o["attn_output"], "attn_output: --attn-output-type"
            if m.n_expert >= 4:
                return "Q5_K", "attn_output of a 4+ expert model"
            if ft in ("IQ1_S", "IQ1_M"):
                return "IQ2_K", "attn_output"
            return ("IQ3_S" if richer else new), "attn_output"
        return new, "file type default"


def _kept_because(name: str, shape, src: str, ft: FileType, arch: str, leave_output_tensor: bool,
                  ffn_gate_inp_type: str | None) -> str | None:
    """Why ik copies a tensor as it is without choosing a type for it; None when it does choose."""
    if src in _INT_TYPES:
        return "integer tensor"
    if not name.endswith("weight"):
        return "not a weight"
    if _n_dims(shape) < 2:
        return "1-D tensor"
    if "_norm.weight" in name:
        return "norm"
    if leave_output_tensor and name == "output.weight":
        return "--leave-output-tensor"
    if ft.only_copy:
        return "COPY"
    if "ffn_gate_inp.weight" in name and ffn_gate_inp_type in (None, src):
        return "expert router (ffn_gate_inp)"
    if name == "position_embd.weight" and arch in _POS_EMBD_ARCHS:
        return "position embeddings"
    if name == "token_types.weight" and arch in _TOKEN_TYPES_ARCHS:
        return "token-type embeddings"
    if any(s in name for s in ("ssm_conv1d", "ssm_x.weight", "ssm_dt.weight")):
        return "small Mamba tensor"
    if "attn_rel_b.weight" in name:
        return "relative position bias"
    return None


def default_types(
    ftype: str | int | FileType,
    metadata: dict,
    tensors: Iterable,
    *,
    pure: bool = False,
    leave_output_tensor: bool = False,
    token_embedding_type: str | None = None,
    output_tensor_type: str | None = None,
    overrides: dict | None = None,
    has_imatrix: bool = False,
    custom_rules=None,
    per_layer_token_embedding_type: str | None = None,
) -> list[TensorChoice]:
    """Per tensor (file order), what `llama-quantize` does with it for file type `ftype`.

    `tensors`: (name, ggml shape, type name) triples, or objects with .name/.shape/.type_name.
    `overrides`: the --attn-q-type style flags ({"attn_q": "Q5_K", ...} or keyed by flag or
    tensor suffix). `has_imatrix`: an importance matrix with at least one entry (after --include-weights
    / --exclude-weights) is given; some rules depend on it.
    `custom_rules`: --custom-q rules in order, (regex, type) pairs or objects with .regex and
    .type_name; the first match wins. Raises UnsupportedRowSizeError where a tensor's rows fit
    neither the chosen type nor a fallback, QuantizeRuleError where the tensor names do not
    fit the rules (a MoE tensor outside blk.N.)."""
    ft = ftype if isinstance(ftype, FileType) else file_type(ftype)
    rule_ft = _ALIASES.get(ft.name, ft.name)
    facts = ModelFacts.from_metadata(metadata)
    items = []
    for t in tensors:
        if isinstance(t, (tuple, list)):
            name, shape, src = t
        else:
            name, shape, src = t.name, t.shape, t.type_name
        items.append((str(name), tuple(int(d) for d in shape), str(src).upper()))

    over = _normalize_overrides(overrides)
    tok_type = _type_name(token_embedding_type, "--token-embedding-type")
    out_type = _type_name(output_tensor_type, "--output-tensor-type")
    ple_type = _type_name(per_layer_token_embedding_type, "--per-layer-token-embedding-type")
    rules = _custom_rules(custom_rules)

    n_attention_wv = sum(1 for n, _, _ in items if "attn_v.weight" in n or "attn_qkv.weight" in n)
    output_name = "output.weight" if facts.arch not in _NO_OUTPUT_ARCHS else None
    has_output = any(n == output_name for n, _, _ in items)
    if n_attention_wv not in (0, facts.n_layer, 3 * facts.n_layer) and facts.arch not in ("", "deci", "gemma4"):
        raise QuantizeRuleError(
            f"the file has {n_attention_wv} attn_v/attn_qkv tensors for {facts.n_layer} layers; "
            "ik_llama.cpp's rules (and its llama-quantize) need one per layer"
        )
    mix = _Mixture(rule_ft, facts, has_output, output_name, n_attention_wv, has_imatrix, over, out_type, ple_type,
                   tok_type)

    choices = []
    for name, shape, src in items:
        kept = _kept_because(name, shape, src, ft, facts.arch, leave_output_tensor, over.get("ffn_gate_inp"))
        if kept is not None:
            choices.append(TensorChoice(name, shape, src, False, src, src, False, notes=[f"kept: {kept}"]))
            continue
        new = ft.default_type
        notes: list[str] = []
        uses_rules = ft.mixture and not pure
        if uses_rules:
            chosen, why = mix.choose(name, shape, new)
            if chosen != new:
                notes.append(f"{why} rule: {chosen}")
        else:
            chosen = new
        custom = next(((p, t) for p, rx, t in rules if rx.search(name)), None) if uses_rules else None

        default_type, default_notes, default_error = _finish(
            name, shape, src, chosen, list(notes), uses_rules, pure, tok_type, out_type, ple_type, over)
        if custom is None:
            if default_error:
                raise UnsupportedRowSizeError(f"tensor {name}: {default_error}")
            choices.append(TensorChoice(name, shape, src, True, default_type, default_type, uses_rules,
                                        notes=default_notes))
            continue
        pattern, custom_type = custom
        final, final_notes, error = _finish(
            name, shape, src, custom_type, notes + [f"custom rule {pattern}={custom_type}"], uses_rules, pure,
            tok_type, out_type, ple_type, over)
        if error:
            raise UnsupportedRowSizeError(f"tensor {name}: {error}")
        choices.append(TensorChoice(name, shape, src, True, default_type, final, True,
                                    f"{pattern}={custom_type}", final_notes))
    return choices


def _finish(name, shape, src, chosen, notes, uses_rules, pure, tok_type, out_type, ple_type, over):
    """ik's steps after the rules: the fallback for rows that do not fit, no row-interleaved
    token embeddings, the type flags, and the plain type where rows do not fill interleaved
    groups. Returns (type, notes, error or None)."""
    t = chosen
    if uses_rules or pure:
        try:
            fitted = fallback_type(t, shape)
        except UnsupportedRowSizeError as e:
            return t, notes, str(e)
        if fitted != t:
            notes.append(f"rows of {shape[0]} do not fit {t}: fallback {fitted}")
            t = fitted
    if uses_rules and name in ("token_embd.weight", "per_layer_token_embd.weight") and plain_type(t) != t:
        notes.append(f"token embeddings are not row-interleaved: {plain_type(t)}")
        t = plain_type(t)
    if tok_type and name == "token_embd.weight":
        t = tok_type
    if ple_type and name == "per_layer_token_embd.weight":
        t = ple_type
    if out_type and name == "output.weight":
        t = out_type
    if over.get("ffn_gate_inp") and "ffn_gate_inp.weight" in name:
        t = over["ffn_gate_inp"]
    if name in _BARE_NAMES and over.get(name[:-7]):
        t = over[name[:-7]]  # ik also matches these flags against a tensor of exactly that name
    if name == "token_embd.weight" and plain_type(t) != t:
        notes.append(f"token embeddings are not row-interleaved: {plain_type(t)}")
        t = plain_type(t)
    if t == src:
        notes.append(f"already {src}")
        return t, notes, None
    fitted = interleave_fit(t, shape)
    if fitted != t:
        notes.append(f"{shape[1] if len(shape) > 1 else 1} rows do not fill {t} groups: {fitted}")
        t = fitted
    return t, notes, None
