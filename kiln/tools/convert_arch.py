"""The architecture part of `kiln convert`: config.json to `<arch>.*` metadata, HF tensor names to GGUF ones.

Facts from llama.cpp's `convert_hf_to_gguf.py` and gguf-py (keys, value
types, tensor names, transformations):

- llama: q/k rows are permuted from Hugging Face's "neox" rope layout (two
  halves) to GGUF llama's interleaved one (pairs); `vocab_size` and
  `rope.dimension_count` are written; linear rope scaling as keys, Llama 3
  rope scaling as a `rope_freqs.weight` tensor of per-frequency factors.
- qwen2, qwen3: no permutation, the generic keys only (YaRN as keys).
- gemma3: every `*norm.weight` gets +1 (Gemma's RMSNorm multiplies by
  1 + w); the embedding is cut to the tokenizer's size; rope base of the
  global layers, `sliding_window`, `final_logit_softcapping` when set.

Counts and lengths are UINT32, epsilons/bases/factors FLOAT32, as gguf-py's
writer types them.

The Mixture-of-Experts architectures (deepseek2, qwen3moe, glm4moe) share
`HParams`, `Arch` and the architecture list with these, and keep their names,
keys and tensor plans in `convert_moe`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConvertError
from ..gguf import ValueType

U32, F32, STR, BOOL = ValueType.UINT32, ValueType.FLOAT32, ValueType.STRING, ValueType.BOOL

# HF name inside a decoder layer -> GGUF name inside blk.N (shared by the four architectures)
_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GLOBAL_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
# tensors llama.cpp drops without a word
_IGNORED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")
_VISION_PARTS = ("vision_tower.", "vision_model.", "multi_modal_projector.", "multimodal_projector.")


class HParams:
    """config.json (with a text_config merged in) and typed lookups whose errors name the key."""

    def __init__(self, config: dict, source: str):
        self.raw = config
        text = config.get("text_config")
        self.cfg = {**config, **text} if isinstance(text, dict) else dict(config)
        self.source = source

    def get(self, key: str, default: Any = None) -> Any:
        value = self.cfg.get(key)
        return default if value is None else value

    def require(self, key: str) -> Any:
        if self.cfg.get(key) is None:
            raise ConvertError(
                f"{self.source}: has no {key!r}; the checkpoint's config is incomplete or not a text model"
            )
        return self.cfg[key]

    def rope_parameters(self) -> dict:
        """rope_scaling (transformers 4) or rope_parameters (transformers 5), {} when absent."""
        rp = self.cfg.get("rope_scaling") or self.cfg.get("rope_parameters") or {}
        return rp if isinstance(rp, dict) else {}

    def rope_theta(self, layer_type: str | None = None) -> float | None:
        if self.cfg.get("rope_theta") is not None:
            return float(self.cfg["rope_theta"])
        rp = self.rope_parameters()
        if layer_type and isinstance(rp.get(layer_type), dict):
            rp = rp[layer_type]
        theta = rp.get("rope_theta")
        return None if theta is None else float(theta)

    def rope_scaling(self, layer_type: str | None = None) -> dict | None:
        """The scaling dict when a scaling other than 'default' is configured."""
        rp = self.rope_parameters()
        if layer_type and isinstance(rp.get(layer_type), dict):
            rp = rp[layer_type]
        kind = rp.get("rope_type", rp.get("type"))
        if not kind or kind == "default":
            return None
        return rp


@dataclass(frozen=True)
class Arch:
    """What differs between the supported architectures."""

    name: str  # general.architecture
    permute_qk: bool = False
    norm_shift: float = 0.0
    post_norms: bool = False  # gemma: post_attention_layernorm is a post-norm, not the ffn norm
    moe: bool = False  # names, keys and tensors from convert_moe

    def layer_name(self, inner: str) -> str | None:
        if self.post_norms:
            extra = {
                "post_attention_layernorm": "post_attention_norm",
                "pre_feedforward_layernorm": "ffn_norm",
                "post_feedforward_layernorm": "post_ffw_norm",
            }
        else:
            extra = {"post_attention_layernorm": "ffn_norm"}
        return extra.get(inner) or _LAYER_NAMES.get(inner)


ARCHITECTURES = {
    "LlamaForCausalLM": Arch("llama", permute_qk=True),
    "Qwen2ForCausalLM": Arch("qwen2"),
    "Qwen3ForCausalLM": Arch("qwen3"),
    "Gemma3ForCausalLM": Arch("gemma3", norm_shift=1.0, post_norms=True),
    "Gemma3ForConditionalGeneration": Arch("gemma3", norm_shift=1.0, post_norms=True),
    "DeepseekV2ForCausalLM": Arch("deepseek2", moe=True),
    "DeepseekV3ForCausalLM": Arch("deepseek2", moe=True),
    "Qwen3MoeForCausalLM": Arch("qwen3moe", moe=True),
    "Glm4MoeForCausalLM": Arch("glm4moe", moe=True),
}


def pick_architecture(hp: HParams) -> Arch:
    names = hp.raw.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    supported = ", ".join(sorted(ARCHITECTURES))
    got = ", ".join(names) if names else "none (no 'architectures' list)"
    raise ConvertError(
        f"{hp.source}: architecture {got} is not supported by kiln convert; it converts {supported}"
    )


def gguf_tensor_name(arch: Arch, hf_name: str, n_layer: int) -> str | None:
    """The GGUF name of a checkpoint tensor; None for tensors that are dropped; ConvertError if unknown."""
    name = normalize_name(hf_name)
    if name is None or name.endswith(_IGNORED_SUFFIXES):
        return None
    for suffix in (".weight", ".bias"):
        if name.endswith(suffix) and name[: -len(suffix)] in _GLOBAL_NAMES:
            return _GLOBAL_NAMES[name[: -len(suffix)]] + suffix
    m = _LAYER_RE.match(name)
    if m and int(m.group(1)) < n_layer:
        inner = arch.layer_name(m.group(2))
        if inner is not None:
            return f"blk.{int(m.group(1))}.{inner}.{m.group(3)}"
    raise ConvertError(
        f"tensor {hf_name}: no GGUF name for it in architecture {arch.name} with {n_layer} layers; the checkpoint "
        "has a part kiln convert does not know (an adapter, extra layers, a quantized format?)"
    )


def normalize_name(name: str) -> str | None:
    """Checkpoint names of multimodal wrappers to plain text-model names; None for vision tensors."""
    if any(name.startswith(p) or f".{p}" in name for p in _VISION_PARTS):
        return None
    if "language_model." in name:
        # language_model.model.X (original Gemma 3) and model.language_model.X (transformers >= 4.52)
        name = name.replace("model.language_model.", "model.").replace("language_model.", "")
    return name


# ----- metadata -----

Meta = list[tuple[str, Any, ValueType]]


def _generic(arch: str, hp: HParams, file_type: int) -> Meta:
    """The keys llama.cpp's base converter writes for every model, in its order."""
    a = arch
    out: Meta = [(f"{a}.block_count", int(hp.require("num_hidden_layers")), U32)]
    if hp.get("max_position_embeddings") is not None:
        out.append((f"{a}.context_length", int(hp.get("max_position_embeddings")), U32))
    out.append((f"{a}.embedding_length", int(hp.require("hidden_size")), U32))
    if hp.get("intermediate_size") is not None:
        out.append((f"{a}.feed_forward_length", int(hp.get("intermediate_size")), U32))
    out.append((f"{a}.attention.head_count", int(hp.require("num_attention_heads")), U32))
    if hp.get("num_key_value_heads") is not None:
        out.append((f"{a}.attention.head_count_kv", int(hp.get("num_key_value_heads")), U32))
    if (theta := hp.rope_theta()) is not None:
        out.append((f"{a}.rope.freq_base", theta, F32))
    if hp.get("rms_norm_eps") is not None:
        out.append((f"{a}.attention.layer_norm_rms_epsilon", float(hp.get("rms_norm_eps")), F32))
    if hp.get("head_dim") is not None:
        out.append((f"{a}.attention.key_length", int(hp.get("head_dim")), U32))
        out.append((f"{a}.attention.value_length", int(hp.get("head_dim")), U32))
    out.append(("general.file_type", file_type, U32))
    return out


def _yarn(a: str, rs: dict | None) -> Meta:
    if not rs or rs.get("rope_type", rs.get("type")) != "yarn" or "factor" not in rs:
        return []
    out: Meta = [
        (f"{a}.rope.scaling.type", "yarn", STR),
        (f"{a}.rope.scaling.factor", float(rs["factor"]), F32),
    ]
    if rs.get("original_max_position_embeddings") is not None:
        out.append(
            (f"{a}.rope.scaling.original_context_length", int(rs["original_max_position_embeddings"]), U32)
        )
    return out


def _llama_meta(hp: HParams, file_type: int, tokenizer_config: dict) -> Meta:
    out = _generic("llama", hp, file_type)
    out.append(("llama.vocab_size", int(hp.require("vocab_size")), U32))
    out.append(("llama.rope.dimension_count", _head_dim(hp), U32))
    rs = hp.rope_scaling()
    if rs and rs.get("rope_type", rs.get("type")) == "linear" and "factor" in rs:
        out += [
            ("llama.rope.scaling.type", "linear", STR),
            ("llama.rope.scaling.factor", float(rs["factor"]), F32),
        ]
    out += _yarn("llama", rs)
    if "add_prefix_space" in tokenizer_config:
        out.append(("tokenizer.ggml.add_space_prefix", bool(tokenizer_config["add_prefix_space"]), BOOL))
    if int(hp.get("vocab_size", 0)) == 49152:
        # llama.cpp's rule for Granite's small models (SmolLM shares the vocabulary size)
        out.append(("tokenizer.ggml.add_bos_token", False, BOOL))
    return out


def _qwen_meta(arch: str) -> Callable[[HParams, int, dict], Meta]:
    def meta(hp: HParams, file_type: int, tokenizer_config: dict) -> Meta:
        return _generic(arch, hp, file_type) + _yarn(arch, hp.rope_scaling())

    return meta


def _gemma3_meta(hp: HParams, file_type: int, tokenizer_config: dict) -> Meta:
    a = "gemma3"
    head_dim = int(hp.get("head_dim", 256))
    out: Meta = [
        (f"{a}.context_length", int(hp.get("max_position_embeddings", 131072)), U32),
        (f"{a}.embedding_length", int(hp.require("hidden_size")), U32),
        (f"{a}.block_count", int(hp.require("num_hidden_layers")), U32),
        (f"{a}.feed_forward_length", int(hp.require("intermediate_size")), U32),
        (f"{a}.attention.head_count", int(hp.get("num_attention_heads", 8)), U32),
        (f"{a}.attention.layer_norm_rms_epsilon", float(hp.get("rms_norm_eps", 1e-6)), F32),
        (f"{a}.attention.key_length", head_dim, U32),
        (f"{a}.attention.value_length", head_dim, U32),
        ("general.file_type", file_type, U32),
        # the base of the global layers; llama.cpp uses 10000 for the sliding ones
        (f"{a}.rope.freq_base", hp.rope_theta("full_attention") or 1_000_000.0, F32),
    ]
    if hp.get("attn_logit_softcapping") is not None:
        raise ConvertError(
            f"{hp.source}: attn_logit_softcapping is set, which Gemma 3 does not have; check the config"
        )
    if hp.get("final_logit_softcapping"):
        out.append((f"{a}.final_logit_softcapping", float(hp.get("final_logit_softcapping")), F32))
    if not _all_global(hp):
        out.append((f"{a}.attention.sliding_window", int(hp.require("sliding_window")), U32))
    out.append((f"{a}.attention.head_count_kv", int(hp.get("num_key_value_heads", 4)), U32))
    rs = hp.rope_scaling("full_attention")
    if rs and rs.get("rope_type", rs.get("type")) == "linear" and "factor" in rs:
        # applies to the global layers only
        out += [
            (f"{a}.rope.scaling.type", "linear", STR),
            (f"{a}.rope.scaling.factor", float(rs["factor"]), F32),
        ]
    return out


def _all_global(hp: HParams) -> bool:
    pattern = hp.get("sliding_window_pattern", hp.get("_sliding_window_pattern"))
    types = hp.get("layer_types")
    if types:
        return all(t == "full_attention" for t in types)
    return pattern == 1


METADATA = {
    "llama": _llama_meta,
    "qwen2": _qwen_meta("qwen2"),
    "qwen3": _qwen_meta("qwen3"),
    "gemma3": _gemma3_meta,
}


def arch_metadata(arch: Arch, hp: HParams, file_type: int, tokenizer_config: dict) -> Meta:
    return METADATA[arch.name](hp, file_type, tokenizer_config)


def _head_dim(hp: HParams) -> int:
    if hp.get("head_dim") is not None:
        return int(hp.get("head_dim"))
    return int(hp.require("hidden_size")) // int(hp.require("num_attention_heads"))


# ----- tensors -----


def llama3_rope_factors(hp: HParams) -> torch.Tensor | None:
    """rope_freqs.weight of a Llama 3 rope-scaled model: the divisor of each rotary frequency."""
    rs = hp.rope_scaling()
    if not rs or str(rs.get("rope_type", rs.get("type", ""))).lower() != "llama3":
        return None
    base = hp.rope_theta() or 10000.0
    dim = _head_dim(hp)
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor = float(rs.get("factor", 8.0))
    low = float(rs.get("low_freq_factor", 1.0))
    high = float(rs.get("high_freq_factor", 4.0))
    old_ctx = float(
        rs.get("original_max_position_embeddings", hp.get("original_max_position_embeddings", 8192))
    )
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    if low_wavelen == high_wavelen:
        raise ConvertError(
            f"{hp.source}: llama3 rope scaling with low_freq_factor == high_freq_factor is invalid"
        )
    factors = []
    for f in freqs.tolist():
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)


def permute_qk(t: torch.Tensor, n_head: int, name: str) -> torch.Tensor:
    """Rows of each head from [first halves | second halves] to interleaved pairs (llama.cpp's permute)."""
    rows = t.shape[0]
    if rows % (2 * n_head):
        raise ConvertError(f"tensor {name}: {rows} rows cannot be split into {n_head} heads of rotary pairs")
    return t.reshape(n_head, 2, rows // n_head // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)


def transform(
    arch: Arch, hp: HParams, hf_name: str, t: torch.Tensor, n_vocab_rows: int | None
) -> torch.Tensor:
    """The changes llama.cpp makes to a tensor's values before writing it."""
    name = normalize_name(hf_name) or hf_name
    if arch.permute_qk:
        n_head = int(hp.require("num_attention_heads"))
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            t = permute_qk(t, n_head, hf_name)
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            t = permute_qk(t, int(hp.get("num_key_value_heads", n_head)), hf_name)
    if n_vocab_rows is not None and "embed_tokens.weight" in name:
        t = t[:n_vocab_rows]
    if arch.norm_shift and name.endswith("norm.weight"):
        t = t + arch.norm_shift
    return t
