"""The Mixture-of-Experts part of `kiln convert`: deepseek2, qwen3moe, glm4moe.

What ik_llama.cpp's `convert_hf_to_gguf.py` writes (classes DeepseekV2Model,
Qwen2MoeModel/Qwen3MoeModel, Glm4MoeModel; names from gguf-py's
constants.py and tensor_mapping.py):

- routed experts `mlp.experts.E.{gate,up,down}_proj.weight` are stacked into
  one 3-D tensor per layer and kind, `blk.N.ffn_{gate,up,down}_exps.weight`,
  ggml shape {n_in, n_out, n_expert} (written down, gate, up when the last
  expert of the layer has been read);
- the router `mlp.gate.weight` is `ffn_gate_inp` and always F32;
  `mlp.gate.e_score_correction_bias` is `exp_probs_b.bias` (F32); shared
  experts are `ffn_{gate,up,down}_shexp`; leading dense layers keep
  `ffn_{gate,up,down}`;
- deepseek2 (DeepseekV2ForCausalLM, DeepseekV3ForCausalLM): MLA tensors
  `attn_q` (no q LoRA) or `attn_q_a`, `attn_q_a_norm`, `attn_q_b`;
  `attn_kv_a_mqa`, `attn_kv_a_norm`, `attn_kv_b`, and from `kv_b_proj` also
  `attn_k_b`/`attn_v_b` (see `mla_tensors` for the three conventions); layers
  past num_hidden_layers (DeepSeek V3's multi-token-prediction layer) are
  dropped; no rope permutation (DeepSeek's q/k rope parts are interleaved
  pairs already, GGML's normal rope);
- glm4moe: `post_attention_layernorm` is `post_attention_norm` (ik's loader
  reads the ffn norm under that name); q/k/v biases and q/k norms kept; the
  num_nextn_predict_layers MTP layers after the last layer are written as
  extra blocks (`block_count` counts them) with their `nextn.*` tensors, and
  `nextn_predict_layers` says how many;
- qwen3moe: q/k norms; no shared experts, every layer MoE.

Deliberate differences from ik's converter, where it would fail or write a
file its own loader misreads: transformers >= 5 saves DeepSeek configs with
`head_dim = qk_rope_head_dim`, so deepseek2's key_length is always
qk_nope + qk_rope (ik takes head_dim); `num_local_experts` is accepted for
qwen3moe's `num_experts`; a GLM checkpoint without its MTP weights (as
transformers saves one) gets the blocks it has and `nextn_predict_layers = 0`;
`expert_group_count`/`expert_group_used_count` are written from
n_group/topk_group as mainline llama.cpp writes them (ik's converter omits
them; its loader ignores them for these architectures).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ConvertError
from .convert_arch import (
    _IGNORED_SUFFIXES,
    BOOL,
    F32,
    STR,
    U32,
    Arch,
    HParams,
    Meta,
    _generic,
    _yarn,
    normalize_name,
)

log = logging.getLogger("kiln.convert")

MLA_CONVENTIONS = ("ik", "mainline-old", "mainline-new")
# gguf-py's ExpertGatingFuncType
GATING = {"softmax": 1, "sigmoid": 2, "sqrtsoftplus": 4}

_GLOBAL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_ATTN = {"input_layernorm": "attn_norm", "self_attn.o_proj": "attn_output"}
_GQA = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v"}
_QK_NORM = {"self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
_MLA = {
    "self_attn.q_proj": "attn_q",
    "self_attn.q_a_proj": "attn_q_a",
    "self_attn.q_a_layernorm": "attn_q_a_norm",
    "self_attn.q_b_proj": "attn_q_b",
    "self_attn.kv_a_proj_with_mqa": "attn_kv_a_mqa",
    "self_attn.kv_a_layernorm": "attn_kv_a_norm",
    "self_attn.kv_b_proj": "attn_kv_b",
}
_DENSE = {"mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
_ROUTER = {"mlp.gate": "ffn_gate_inp", "mlp.gate.e_score_correction": "exp_probs_b"}
_SHARED = {
    "mlp.shared_experts.gate_proj": "ffn_gate_shexp",
    "mlp.shared_experts.up_proj": "ffn_up_shexp",
    "mlp.shared_experts.down_proj": "ffn_down_shexp",
}
_NEXTN = {
    "eh_proj": "nextn.eh_proj",
    "embed_tokens": "nextn.embed_tokens",
    "enorm": "nextn.enorm",
    "hnorm": "nextn.hnorm",
    "shared_head.head": "nextn.shared_head_head",
    "shared_head.norm": "nextn.shared_head_norm",
}
LAYER_NAMES = {
    "deepseek2": {**_ATTN, "post_attention_layernorm": "ffn_norm", **_MLA, **_DENSE, **_ROUTER, **_SHARED},
    "qwen3moe": {
        **_ATTN,
        "post_attention_layernorm": "ffn_norm",
        **_GQA,
        **_QK_NORM,
        "mlp.gate": "ffn_gate_inp",
    },
    "glm4moe": {
        **_ATTN,
        "post_attention_layernorm": "post_attention_norm",
        **_GQA,
        **_QK_NORM,
        **_DENSE,
        **_ROUTER,
        **_SHARED,
    },
}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_EXPERT_RE = re.compile(r"^mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$")
# ik's Glm4MoeModel sets these special tokens from the added vocabulary
GLM_SPECIAL_TOKENS = (
    ("bos", "[gMASK]"),
    ("eot", "<|user|>"),
    ("unk", "<|endoftext|>"),
    ("eom", "<|observation|>"),
)


@dataclass(frozen=True)
class Planned:
    """One GGUF tensor: its name, numpy-order shape (squeezed), the checkpoint tensors it is made of."""

    name: str
    shape: tuple[int, ...]
    sources: tuple[str, ...]
    # None: the source as it is, or the sources stacked along a new first dimension (experts)
    build: Callable[[list[torch.Tensor]], torch.Tensor] | None
    f32: bool  # written F32 whatever --outtype says


@dataclass(frozen=True)
class Layout:
    """How many blocks the file has, and the nextn_predict_layers key (None: not written)."""

    block_count: int
    nextn: int | None


# ----- config -----


def _count(hp: HParams, key: str, minimum: int = 1) -> int:
    value = hp.require(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConvertError(f"{hp.source}: {key} is {value!r}; expected an integer >= {minimum}")
    return value


def _number(hp: HParams, key: str) -> float:
    value = hp.require(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConvertError(f"{hp.source}: {key} is {value!r}; expected a number")
    return float(value)


def _flag(hp: HParams, key: str, default: bool | None = None) -> bool:
    value = hp.require(key) if default is None else hp.get(key, default)
    if not isinstance(value, bool):
        raise ConvertError(f"{hp.source}: {key} is {value!r}; expected true or false")
    return value


def n_experts(arch: Arch, hp: HParams) -> int:
    if arch.name == "qwen3moe":
        key = "num_experts" if hp.get("num_experts") is not None else "num_local_experts"
        if hp.get(key) is None:
            raise ConvertError(f"{hp.source}: has no 'num_experts'; the checkpoint's config is incomplete")
        return _count(hp, key)
    return _count(hp, "n_routed_experts")


def _is_v3(hp: HParams) -> bool:
    return "DeepseekV3ForCausalLM" in (hp.raw.get("architectures") or [])


def _scoring(hp: HParams) -> str:
    """deepseek2's router function: scoring_func, else what transformers computes (V2 softmax, V3 sigmoid)."""
    func = hp.get("scoring_func", "sigmoid" if _is_v3(hp) else "softmax")
    if not isinstance(func, str) or func not in GATING:
        raise ConvertError(
            f"{hp.source}: scoring_func {func!r} is not supported; expected one of {', '.join(GATING)}"
        )
    return func


def _groups(arch: str, hp: HParams, n_expert: int) -> Meta:
    out: Meta = []
    n_group, topk_group = hp.get("n_group"), hp.get("topk_group")
    if n_group is not None:
        n_group = _count(hp, "n_group")
        if n_expert % n_group:
            raise ConvertError(
                f"{hp.source}: n_group={n_group} does not divide the {n_expert} routed experts"
            )
        out.append((f"{arch}.expert_group_count", n_group, U32))
    if topk_group is not None:
        topk_group = _count(hp, "topk_group")
        if n_group is not None and topk_group > n_group:
            raise ConvertError(f"{hp.source}: topk_group={topk_group} is larger than n_group={n_group}")
        out.append((f"{arch}.expert_group_used_count", topk_group, U32))
    return out


def layout(arch: Arch, hp: HParams, names) -> Layout:
    """Block count and nextn layers from the config and the layers the checkpoint holds."""
    n_layer = _count(hp, "num_hidden_layers")
    if arch.name != "glm4moe":
        return Layout(n_layer, None)
    configured = hp.get("num_nextn_predict_layers")
    n_nextn = 0 if configured is None else _count(hp, "num_nextn_predict_layers", minimum=0)
    extra = set()
    for name in names:
        m = _LAYER_RE.match(normalize_name(name) or "")
        if m and int(m.group(1)) >= n_layer:
            extra.add(int(m.group(1)))
    if not extra:
        if n_nextn:
            log.info("the checkpoint has no MTP (nextn) layer; writing %d blocks", n_layer)
        return Layout(n_layer, None if configured is None else 0)
    if extra != set(range(n_layer, n_layer + n_nextn)):
        raise ConvertError(
            f"{hp.source}: num_nextn_predict_layers={n_nextn} after {n_layer} layers, but the checkpoint has "
            f"layers {sorted(extra)}; the config and the weights disagree"
        )
    return Layout(n_layer + n_nextn, n_nextn)


def moe_metadata(arch: Arch, hp: HParams, file_type: int, lay: Layout, mla: str) -> Meta:
    """The `<arch>.*` keys, as ik's converter writes them (value types of gguf-py's writer)."""
    if arch.name == "deepseek2":
        return _deepseek2_meta(hp, file_type, mla)
    a = arch.name
    n_expert = n_experts(arch, hp)
    n_used = _count(hp, "num_experts_per_tok")
    if n_used > n_expert:
        raise ConvertError(f"{hp.source}: num_experts_per_tok={n_used} is more than the {n_expert} experts")
    out = _generic(a, hp, file_type)
    out[0] = (f"{a}.block_count", lay.block_count, U32)
    out.insert(len(out) - 1, (f"{a}.expert_used_count", n_used, U32))  # before general.file_type, as ik
    if a == "qwen3moe":
        if hp.get("norm_topk_prob") is not None and not _flag(hp, "norm_topk_prob"):
            raise ConvertError(
                f"{hp.source}: norm_topk_prob is false; ik_llama.cpp's qwen3moe always renormalizes the "
                "expert weights, so the converted model would compute something else"
            )
        if hp.get("decoder_sparse_step", 1) != 1 or hp.get("mlp_only_layers"):
            raise ConvertError(
                f"{hp.source}: decoder_sparse_step/mlp_only_layers make some layers dense; qwen3moe in "
                "ik_llama.cpp has experts in every layer"
            )
        out += [
            (f"{a}.expert_count", n_expert, U32),
            (f"{a}.expert_feed_forward_length", _count(hp, "moe_intermediate_size"), U32),
        ]
        if hp.get("shared_expert_intermediate_size") is not None:
            size = _count(hp, "shared_expert_intermediate_size")
            out.append((f"{a}.expert_shared_feed_forward_length", size, U32))
        return out + _yarn(a, hp.rope_scaling())
    # glm4moe: the optional keys are written when the config has them, as ik does
    head_dim = hp.get("head_dim")
    if head_dim is None:
        head_dim = _count(hp, "hidden_size") // _count(hp, "num_attention_heads")
    prf = hp.get("partial_rotary_factor", hp.rope_parameters().get("partial_rotary_factor", 0.5))
    if isinstance(prf, bool) or not isinstance(prf, (int, float)) or not 0 < prf <= 1:
        raise ConvertError(f"{hp.source}: partial_rotary_factor is {prf!r}; expected a number in (0, 1]")
    out += [
        (f"{a}.rope.dimension_count", int(int(head_dim) * prf), U32),
        (f"{a}.expert_count", n_expert, U32),
        (f"{a}.expert_feed_forward_length", _count(hp, "moe_intermediate_size"), U32),
    ]
    if hp.get("n_shared_experts") is not None:
        out.append((f"{a}.expert_shared_count", _count(hp, "n_shared_experts", minimum=0), U32))
    if hp.get("first_k_dense_replace") is not None:
        n_dense = _count(hp, "first_k_dense_replace", minimum=0)
        if n_dense > lay.block_count:
            raise ConvertError(f"{hp.source}: first_k_dense_replace={n_dense} is more than the layers")
        out.append((f"{a}.leading_dense_block_count", n_dense, U32))
    out.append((f"{a}.expert_gating_func", GATING["sigmoid"], U32))
    if hp.get("routed_scaling_factor") is not None:
        out.append((f"{a}.expert_weights_scale", _number(hp, "routed_scaling_factor"), F32))
    if hp.get("norm_topk_prob") is not None:
        out.append((f"{a}.expert_weights_norm", _flag(hp, "norm_topk_prob"), BOOL))
    if lay.nextn is not None:
        out.append((f"{a}.nextn_predict_layers", lay.nextn, U32))
    return out + _groups(a, hp, n_expert) + _yarn(a, hp.rope_scaling())


def _deepseek2_meta(hp: HParams, file_type: int, mla: str) -> Meta:
    a = "deepseek2"
    n_layer = _count(hp, "num_hidden_layers")
    n_head = _count(hp, "num_attention_heads")
    n_head_kv = _count(hp, "num_key_value_heads") if hp.get("num_key_value_heads") is not None else n_head
    if n_head_kv != n_head:
        raise ConvertError(
            f"{hp.source}: num_key_value_heads={n_head_kv} differs from num_attention_heads={n_head}; "
            "MLA expands the latent to every head"
        )
    kv_lora = _count(hp, "kv_lora_rank")
    nope, rope, v_dim = (
        _count(hp, "qk_nope_head_dim"),
        _count(hp, "qk_rope_head_dim"),
        _count(hp, "v_head_dim"),
    )
    n_expert = n_experts(Arch(a), hp)
    n_used = _count(hp, "num_experts_per_tok")
    if n_used > n_expert:
        raise ConvertError(f"{hp.source}: num_experts_per_tok={n_used} is more than the {n_expert} experts")
    n_dense = (
        _count(hp, "first_k_dense_replace", minimum=0) if hp.get("first_k_dense_replace") is not None else 0
    )
    if n_dense > n_layer:
        raise ConvertError(f"{hp.source}: first_k_dense_replace={n_dense} is not between 0 and {n_layer}")
    if hp.get("moe_layer_freq", 1) != 1:
        raise ConvertError(f"{hp.source}: moe_layer_freq={hp.get('moe_layer_freq')}; deepseek2 needs 1")
    if hp.get("rope_interleave") is False:
        raise ConvertError(
            f"{hp.source}: rope_interleave is false; GGUF deepseek2 files hold DeepSeek's interleaved "
            "rope layout, which this checkpoint does not use"
        )

    out: Meta = [(f"{a}.block_count", n_layer, U32)]
    if hp.get("max_position_embeddings") is not None:
        out.append((f"{a}.context_length", int(hp.get("max_position_embeddings")), U32))
    out.append((f"{a}.embedding_length", _count(hp, "hidden_size"), U32))
    if hp.get("intermediate_size") is not None:
        out.append((f"{a}.feed_forward_length", int(hp.get("intermediate_size")), U32))
    out.append((f"{a}.attention.head_count", n_head, U32))
    out.append((f"{a}.attention.head_count_kv", 1 if mla == "mainline-new" else n_head_kv, U32))
    if (theta := hp.rope_theta()) is not None:
        out.append((f"{a}.rope.freq_base", theta, F32))
    if hp.get("rms_norm_eps") is not None:
        out.append((f"{a}.attention.layer_norm_rms_epsilon", float(hp.get("rms_norm_eps")), F32))
    out.append((f"{a}.expert_used_count", n_used, U32))
    out.append(("general.file_type", file_type, U32))

    out.append((f"{a}.leading_dense_block_count", n_dense, U32))
    out.append((f"{a}.vocab_size", _count(hp, "vocab_size"), U32))
    if hp.get("q_lora_rank") is not None:
        out.append((f"{a}.attention.q_lora_rank", _count(hp, "q_lora_rank"), U32))
    out.append((f"{a}.attention.kv_lora_rank", kv_lora, U32))
    if mla == "mainline-new":
        out += [
            (f"{a}.attention.key_length", kv_lora + rope, U32),
            (f"{a}.attention.value_length", kv_lora, U32),
            (f"{a}.attention.key_length_mla", nope + rope, U32),
            (f"{a}.attention.value_length_mla", v_dim, U32),
        ]
    else:
        out += [(f"{a}.attention.key_length", nope + rope, U32), (f"{a}.attention.value_length", v_dim, U32)]
    out += [
        (f"{a}.expert_feed_forward_length", _count(hp, "moe_intermediate_size"), U32),
        (f"{a}.expert_count", n_expert, U32),
        (f"{a}.expert_shared_count", _count(hp, "n_shared_experts", minimum=0), U32),
        (f"{a}.expert_weights_scale", _number(hp, "routed_scaling_factor"), F32),
        (f"{a}.expert_weights_norm", _flag(hp, "norm_topk_prob", _is_v3(hp)), BOOL),
        (f"{a}.expert_gating_func", GATING[_scoring(hp)], U32),
        (f"{a}.rope.dimension_count", rope, U32),
    ]
    out += _deepseek_yarn(a, hp)
    return out + _groups(a, hp, n_expert)


def _deepseek_yarn(a: str, hp: HParams) -> Meta:
    rs = hp.rope_scaling()
    if not rs:
        return []
    kind = rs.get("rope_type", rs.get("type"))
    where = "rope_scaling" if hp.cfg.get("rope_scaling") else "rope_parameters"
    if kind != "yarn":
        raise ConvertError(f"{hp.source}: {where} type {kind!r}; deepseek2 supports yarn rope scaling only")
    for key in ("factor", "original_max_position_embeddings", "mscale_all_dim"):
        if rs.get(key) is None:
            raise ConvertError(f"{hp.source}: {where} has no {key!r}; DeepSeek's yarn scaling needs it")
    mscale, mscale_all = float(rs.get("mscale", rs["mscale_all_dim"])), float(rs["mscale_all_dim"])
    if mscale != mscale_all:
        raise ConvertError(
            f"{hp.source}: {where}.mscale={mscale} differs from mscale_all_dim={mscale_all}; llama.cpp's "
            "deepseek2 can only express equal ones (rope.scaling.yarn_log_multiplier)"
        )
    if float(rs.get("beta_fast", 32)) != 32 or float(rs.get("beta_slow", 1)) != 1:
        log.warning("%s: yarn beta_fast/beta_slow differ from 32/1, which llama.cpp assumes", hp.source)
    return [
        (f"{a}.rope.scaling.type", "yarn", STR),
        (f"{a}.rope.scaling.factor", float(rs["factor"]), F32),
        (f"{a}.rope.scaling.original_context_length", int(rs["original_max_position_embeddings"]), U32),
        (f"{a}.rope.scaling.yarn_log_multiplier", 0.1 * mscale_all, F32),
    ]


def glm_special_tokens(tokens: list[str], special_ids: dict[str, int]) -> None:
    """GLM's bos [gMASK], eot <|user|>, unk <|endoftext|>, eom <|observation|> where not set already."""
    index = {t: i for i, t in enumerate(tokens)}
    for typ, token in GLM_SPECIAL_TOKENS:
        if token in index and typ not in special_ids:
            special_ids[typ] = index[token]


# ----- tensors -----


def _squeeze(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape if d != 1)  # llama.cpp's converter squeezes every tensor


def _f32(gguf_name: str, hf_name: str, shape: tuple[int, ...]) -> bool:
    return (
        len(shape) <= 1
        or gguf_name.endswith("_norm.weight")
        or ".ffn_gate_inp." in gguf_name
        or not hf_name.endswith(".weight")
    )


def _unknown(arch: Arch, hf_name: str, n_layer: int) -> ConvertError:
    return ConvertError(
        f"tensor {hf_name}: no GGUF name for it in architecture {arch.name} with {n_layer} layers; the checkpoint "
        "has a part kiln convert does not know (an adapter, extra layers, a quantized format?)"
    )


def plan_tensors(
    arch: Arch, hp: HParams, shapes: dict[str, tuple[int, ...]], lay: Layout, mla: str
) -> list[Planned]:
    """Every GGUF tensor of a MoE checkpoint (names and shapes only, nothing read), in ik's order."""
    n_layer = _count(hp, "num_hidden_layers")
    n_expert = n_experts(arch, hp)
    tied = bool(hp.get("tie_word_embeddings", False))
    names = LAYER_NAMES[arch.name]
    planned: list[Planned] = []
    experts: dict[int, dict[tuple[str, int], str]] = {}

    def add(p: Planned) -> None:
        planned.append(p)

    for hf_name, shape in shapes.items():
        name = normalize_name(hf_name)
        if name is None or name.endswith(_IGNORED_SUFFIXES):
            continue
        if name.endswith("e_score_correction_bias"):
            name = name[: -len("_bias")] + ".bias"
        base, _, suffix = name.rpartition(".")
        if base in _GLOBAL and suffix in ("weight", "bias"):
            gname = f"{_GLOBAL[base]}.{suffix}"
            if gname == "output.weight" and tied:
                continue
            sq = _squeeze(shape)
            add(Planned(gname, sq, (hf_name,), None, _f32(gname, hf_name, sq)))
            continue
        m = _LAYER_RE.match(name)
        if not m:
            raise _unknown(arch, hf_name, n_layer)
        bid, inner = int(m.group(1)), m.group(2)
        if bid >= lay.block_count:
            if arch.name == "deepseek2":
                continue  # the multi-token-prediction layer(s): ik drops them
            raise _unknown(arch, hf_name, n_layer)
        if e := _EXPERT_RE.match(inner):
            xid, kind = int(e.group(1)), e.group(2)
            if xid >= n_expert:
                raise ConvertError(f"tensor {hf_name}: expert {xid}, but the config has {n_expert} experts")
            layer = experts.setdefault(bid, {})
            layer[(kind, xid)] = hf_name
            if len(layer) == 3 * n_expert:
                for p in _merged_experts(bid, layer, n_expert, shapes):
                    add(p)
                del experts[bid]
            continue
        ibase, _, suffix = inner.rpartition(".")
        if suffix not in ("weight", "bias"):
            raise _unknown(arch, hf_name, n_layer)
        if bid >= n_layer and ibase in _NEXTN:
            gname = f"blk.{bid}.{_NEXTN[ibase]}.{suffix}"
        elif ibase in names:
            gname = f"blk.{bid}.{names[ibase]}.{suffix}"
        else:
            raise _unknown(arch, hf_name, n_layer)
        if ibase == "self_attn.kv_b_proj":
            for p in mla_tensors(hp, bid, hf_name, tuple(shape), mla):
                add(p)
            continue
        sq = _squeeze(shape)
        add(Planned(gname, sq, (hf_name,), None, _f32(gname, hf_name, sq)))

    for bid, layer in sorted(experts.items()):
        have = len(layer)
        raise ConvertError(
            f"layer {bid} has {have} of the {3 * n_expert} expert tensors ({n_expert} experts x gate/up/down); "
            "the checkpoint is incomplete"
        )
    seen = {p.name for p in planned}
    for required in ("token_embd.weight", "output_norm.weight"):
        if required not in seen:
            raise ConvertError(f"the checkpoint has no {required} tensor; the weights are incomplete")
    return planned


def _merged_experts(bid: int, layer: dict, n_expert: int, shapes: dict) -> list[Planned]:
    out = []
    for kind in ("down", "gate", "up"):
        sources = tuple(layer[(kind, x)] for x in range(n_expert))
        shape = tuple(shapes[sources[0]])
        for s in sources[1:]:
            if tuple(shapes[s]) != shape:
                raise ConvertError(f"tensor {s} has shape {list(shapes[s])}, expert 0 has {list(shape)}")
        sq = _squeeze((n_expert, *shape))
        name = f"blk.{bid}.ffn_{kind}_exps.weight"
        out.append(Planned(name, sq, sources, None, False))
    return out


def mla_tensors(hp: HParams, bid: int, hf_name: str, shape: tuple[int, ...], mla: str) -> list[Planned]:
    """attn_kv_b and/or attn_k_b, attn_v_b from kv_b_proj (torch shape [H*(nope+v), kv_lora_rank]).

    In ggml order (first dimension the row length), with H heads:
      ik            attn_kv_b {r, H*(nope+v)}, attn_k_b {nope, H*r}, attn_v_b {r, H*v}
      mainline-old  attn_kv_b {r, H*(nope+v)}
      mainline-new  attn_k_b {nope, r, H}, attn_v_b {r, v, H}
    k_b holds each head's nope rows of kv_b transposed (k_b[h][c][d] = kv_b[h*(nope+v) + d][c]);
    v_b each head's v rows as they are (v_b[h][d][c] = kv_b[h*(nope+v) + nope + d][c]).
    """
    if mla not in MLA_CONVENTIONS:
        raise ConvertError(f"--mla-convention {mla!r} is not known; use one of {', '.join(MLA_CONVENTIONS)}")
    n_head = _count(hp, "num_attention_heads")
    nope, v_dim, rank = _count(hp, "qk_nope_head_dim"), _count(hp, "v_head_dim"), _count(hp, "kv_lora_rank")
    if shape != (n_head * (nope + v_dim), rank):
        raise ConvertError(
            f"tensor {hf_name} has shape {list(shape)}; num_attention_heads={n_head}, qk_nope_head_dim={nope}, "
            f"v_head_dim={v_dim} and kv_lora_rank={rank} make it {[n_head * (nope + v_dim), rank]}"
        )
    blk = f"blk.{bid}"
    out = []
    if mla in ("ik", "mainline-old"):
        out.append(Planned(f"{blk}.attn_kv_b.weight", _squeeze(shape), (hf_name,), None, False))
    if mla == "mainline-old":
        return out

    def k_b(ts: list[torch.Tensor]) -> torch.Tensor:
        kv = ts[0].reshape(n_head, nope + v_dim, rank)
        kb = kv[:, :nope, :].transpose(1, 2)  # [H, r, nope]
        return kb.reshape(n_head * rank, nope) if mla == "ik" else kb

    def v_b(ts: list[torch.Tensor]) -> torch.Tensor:
        vb = ts[0].reshape(n_head, nope + v_dim, rank)[:, nope:, :]  # [H, v, r]
        return vb.reshape(n_head * v_dim, rank) if mla == "ik" else vb

    if mla == "ik":
        k_shape, v_shape = (n_head * rank, nope), (n_head * v_dim, rank)
    else:
        k_shape, v_shape = (n_head, rank, nope), (n_head, v_dim, rank)
    out.append(Planned(f"{blk}.attn_k_b.weight", _squeeze(k_shape), (hf_name,), k_b, False))
    out.append(Planned(f"{blk}.attn_v_b.weight", _squeeze(v_shape), (hf_name,), v_b, False))
    return out
