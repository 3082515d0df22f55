"""Model hyper-parameters read from the `<arch>.*` GGUF metadata keys, as llama.cpp reads them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelError


@dataclass
class HParams:
    arch: str
    n_layer: int
    n_embd: int
    n_ff: list[int]
    n_head: list[int]
    n_head_kv: list[int]
    head_dim_k: int
    head_dim_v: int
    n_rot: int
    n_vocab: int
    n_ctx_train: int
    norm_eps: float
    rope_freq_base: float = 10000.0
    rope_freq_scale: float = 1.0
    rope_scaling_type: str = "linear"
    rope_attn_factor: float = 1.0
    n_ctx_orig_yarn: int = 0
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    sliding_window: int = 0
    final_logit_softcap: float = 0.0
    attn_logit_softcap: float = 0.0
    # Mixture of experts (0 experts: a dense model)
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0  # one routed expert's hidden size
    n_ff_shexp: int = 0  # the shared expert's hidden size (0: n_ff_exp * n_expert_shared)
    n_expert_shared: int = 0
    n_layer_dense_lead: int = 0  # leading blocks with a dense FFN
    expert_gating_func: int = 0  # 1 softmax, 2 sigmoid (ik_llama.cpp's ExpertGatingFuncType); 0 unset
    expert_weights_norm: bool = False
    expert_weights_scale: float = 0.0
    n_expert_groups: int = 0
    n_group_used: int = 0
    nextn_predict_layers: int = 0  # trailing multi-token-prediction blocks, not run
    # Multi-head latent attention (DeepSeek)
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    rope_yarn_log_mul: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def yarn_ext_factor(self) -> float:
        """ggml's ext_factor: 1 for YaRN-scaled models, 0 otherwise (llama.cpp's default)."""
        return 1.0 if self.rope_scaling_type == "yarn" else 0.0


class MetadataView:
    """Typed access to `<arch>.<key>` metadata with errors that name the file and the key."""

    def __init__(self, metadata: Mapping[str, Any], arch: str, source: str = "the model file"):
        self.metadata = metadata
        self.arch = arch
        self.source = source

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.arch}.{key}", default)

    def require(self, key: str) -> Any:
        full = f"{self.arch}.{key}"
        if full not in self.metadata:
            raise ModelError(f"{self.source}: metadata key {full} is missing; the file is incomplete, convert it again")
        return self.metadata[full]

    def per_layer(self, key: str, n_layer: int, default: Any = None) -> list:
        """A value that may be one number or one per layer (llama.cpp's get_key_or_arr)."""
        value = self.get(key, default) if default is not None else self.require(key)
        if isinstance(value, list):
            if len(value) != n_layer:
                raise ModelError(
                    f"{self.source}: {self.arch}.{key} has {len(value)} entries for {n_layer} layers; the file is corrupt"
                )
            return list(value)
        return [value] * n_layer


def read_hparams(metadata: Mapping[str, Any], source: str = "the model file") -> HParams:
    arch = metadata.get("general.architecture")
    if not arch:
        raise ModelError(f"{source}: general.architecture is missing; this is not a model file kiln can run")
    m = MetadataView(metadata, arch, source)
    n_layer = int(m.require("block_count"))
    n_embd = int(m.require("embedding_length"))
    n_head = [int(h) for h in m.per_layer("attention.head_count", n_layer)]
    n_head_kv = [int(h) for h in m.per_layer("attention.head_count_kv", n_layer, default=n_head[0])]
    n_ff = [int(f) for f in m.per_layer("feed_forward_length", n_layer, default=0)]
    head_dim_k = int(m.get("attention.key_length", n_embd // max(1, n_head[0])))
    head_dim_v = int(m.get("attention.value_length", n_embd // max(1, n_head[0])))
    tokens = metadata.get("tokenizer.ggml.tokens")
    n_vocab = int(m.get("vocab_size", len(tokens) if tokens else 0))
    scale_factor = float(m.get("rope.scaling.factor", m.get("rope.scale_linear", 0.0)) or 0.0)
    n_ctx_train = int(m.require("context_length"))
    return HParams(
        arch=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_ff=n_ff,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_rot=int(m.get("rope.dimension_count", head_dim_k)),
        n_vocab=n_vocab,
        n_ctx_train=n_ctx_train,
        norm_eps=float(m.get("attention.layer_norm_rms_epsilon", m.get("attention.layer_norm_epsilon", 1e-5))),
        rope_freq_base=float(m.get("rope.freq_base", 10000.0)),
        rope_freq_scale=1.0 / scale_factor if scale_factor else 1.0,
        rope_scaling_type=str(m.get("rope.scaling.type", "linear")),
        rope_attn_factor=float(m.get("rope.scaling.attn_factor", 1.0)),
        n_ctx_orig_yarn=int(m.get("rope.scaling.original_context_length", n_ctx_train)),
        yarn_beta_fast=float(m.get("rope.scaling.yarn_beta_fast", 32.0)),
        yarn_beta_slow=float(m.get("rope.scaling.yarn_beta_slow", 1.0)),
        sliding_window=int(m.get("attention.sliding_window", 0) or 0),
        final_logit_softcap=float(m.get("final_logit_softcapping", 0.0) or 0.0),
        attn_logit_softcap=float(m.get("attn_logit_softcapping", 0.0) or 0.0),
        n_expert=int(m.get("expert_count", 0) or 0),
        n_expert_used=int(m.get("expert_used_count", 0) or 0),
        n_ff_exp=int(m.get("expert_feed_forward_length", 0) or 0),
        n_ff_shexp=int(m.get("expert_shared_feed_forward_length", 0) or 0),
        n_expert_shared=int(m.get("expert_shared_count", 0) or 0),
        n_layer_dense_lead=int(m.get("leading_dense_block_count", 0) or 0),
        expert_gating_func=int(m.get("expert_gating_func", 0) or 0),
        expert_weights_norm=bool(m.get("expert_weights_norm", False)),
        expert_weights_scale=float(m.get("expert_weights_scale", 0.0) or 0.0),
        n_expert_groups=int(m.get("expert_group_count", 0) or 0),
        n_group_used=int(m.get("expert_group_used_count", 0) or 0),
        nextn_predict_layers=int(m.get("nextn_predict_layers", 0) or 0),
        q_lora_rank=int(m.get("attention.q_lora_rank", 0) or 0),
        kv_lora_rank=int(m.get("attention.kv_lora_rank", 0) or 0),
        rope_yarn_log_mul=float(m.get("rope.scaling.yarn_log_multiplier", 0.0) or 0.0),
        extra={
            k: m.get(k) for k in ("attention.key_length_mla", "attention.value_length_mla") if m.get(k) is not None
        },
    )
