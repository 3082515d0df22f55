"""Tiny random Mixture-of-Experts models (DeepSeek V2/V3, Qwen3-MoE, GLM-4.5), written to GGUF by `kiln convert`.

    hf_model, gguf_path = make_tiny_moe_model("deepseek-v3", tmp_path, outtype="f32", mla_convention="ik")

The oracle for kiln's MoE model code, as `tiny_models` is for the dense ones:
`hf_model` (transformers, float32, eager attention, eval mode) and the GGUF file
converted from the very same checkpoint. Seeded, built in well under a second,
every feature of the architecture that a GGUF file carries exercised:

- deepseek-v3 (DeepseekV3ForCausalLM): 3 layers, the first dense
  (first_k_dense_replace 1); MLA with q LoRA (q_lora_rank 48, kv_lora_rank 32,
  qk_nope 32, qk_rope 16, v_head 32, 4 heads); YaRN rope (factor 4 over an
  original context of 32, so it matters within 80 tokens; mscale =
  mscale_all_dim = 1, i.e. yarn_log_multiplier 0.1); 8 routed experts, 2 used,
  sigmoid scores with a random e_score_correction_bias large enough to change
  the choice of experts, group-limited routing (n_group 4, topk_group 2),
  one shared expert, norm_topk_prob, routed_scaling_factor 2.5;
- deepseek-v2 (DeepseekV2ForCausalLM): no q LoRA (attn_q), softmax scores,
  greedy top-k without groups, 2 shared experts, first layer dense, no
  renormalization (transformers' V2 never renormalizes), routed_scaling_factor
  2, plain rope;
- qwen3moe (Qwen3MoeForCausalLM): 3 layers, all MoE, GQA (4 heads, 2 kv),
  head_dim 32, q/k norms, 8 experts, 2 used, norm_topk_prob;
- glm4moe (Glm4MoeForCausalLM): 3 layers, the first dense, partial rotary
  (factor 0.5 of head_dim 32), q/k/v biases, q/k norms, 8 experts, 2 used, one
  shared expert, sigmoid scores with a random e_score_correction_bias,
  routed_scaling_factor 1.5, a GLM-style vocabulary ([gMASK], <|user|>, ...).
  transformers saves no MTP (nextn) layer, so the file has 3 blocks and
  glm4moe.nextn_predict_layers = 0.

Weights N(0, 0.2), norms 1 + N(0, 0.1), biases N(0, 0.1) (as `tiny_models`),
e_score_correction_bias N(0, 0.25). For f16/bf16 the weights that the GGUF
file holds in that type are rounded in `hf_model` too (the router stays f32,
as in the file), so a comparison measures arithmetic, not weight rounding.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from kiln.tools.convert import convert
from tests.tiny_models import (
    QWEN2_REGEX,
    SEED,
    _added,
    _byte_level_bpe,
    _dump,
    _token_ids,
    randomize,
    tokenizer_files,
)

KINDS = ("deepseek-v3", "deepseek-v2", "qwen3moe", "glm4moe")
BIAS_STD = 0.25  # e_score_correction_bias: large enough that it changes which experts are chosen

COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    moe_intermediate_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_experts_per_tok=2,
    tie_word_embeddings=False,
)
# every MLA dimension different, so that a transposed or mislabelled one cannot go unnoticed
MLA = dict(num_key_value_heads=4, kv_lora_rank=40, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=24)

GLM_SPECIALS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
]
GLM_TEMPLATE = (
    "[gMASK]<sop>{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def make_tiny_moe_model(
    kind: str, tmp_path, outtype: str = "f32", mla_convention: str = "ik", **config_overrides
):
    """Build, save and convert a tiny random MoE model; returns (transformers model, GGUF path).

    `kind`: deepseek-v3, deepseek-v2, qwen3moe or glm4moe. `mla_convention` (deepseek only):
    ik, mainline-old or mainline-new. `config_overrides` go into the transformers config.
    The checkpoint is saved in `tmp_path/<kind>-hf`, the GGUF file is
    `tmp_path/<kind>-<outtype>.gguf` (`<kind>-<convention>-<outtype>.gguf` for other conventions).
    """
    tmp_path = Path(tmp_path)
    model = build_moe_model(kind, config_overrides)
    round_moe_weights(model, outtype)
    hf_dir = save_moe_model(model, kind, tmp_path / f"{kind}-hf")
    stem = kind if mla_convention == "ik" else f"{kind}-{mla_convention}"
    gguf_path = convert(
        hf_dir, tmp_path / f"{stem}-{outtype}.gguf", outtype=outtype, mla_convention=mla_convention
    )
    return model, gguf_path


def build_moe_model(kind: str, overrides: dict | None = None):
    """The seeded random transformers model of a kind (float32, eager attention, eval mode)."""
    import transformers

    n_tokens, special = _token_ids(moe_tokenizer_files(kind))
    cfg = dict(COMMON)
    if kind == "deepseek-v3":
        cls, config_cls = transformers.DeepseekV3ForCausalLM, transformers.DeepseekV3Config
        cfg.update(
            MLA,
            q_lora_rank=48,
            n_routed_experts=8,
            n_shared_experts=1,
            n_group=4,
            topk_group=2,
            topk_method="noaux_tc",
            scoring_func="sigmoid",
            norm_topk_prob=True,
            routed_scaling_factor=2.5,
            first_k_dense_replace=1,
            max_position_embeddings=128,
            rms_norm_eps=1e-6,
            rope_parameters={
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 32,
                "mscale": 1.0,
                "mscale_all_dim": 1.0,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
            },
        )
    elif kind == "deepseek-v2":
        cls, config_cls = transformers.DeepseekV2ForCausalLM, transformers.DeepseekV2Config
        cfg.update(
            MLA,
            q_lora_rank=None,
            n_routed_experts=8,
            n_shared_experts=2,
            topk_method="greedy",
            scoring_func="softmax",
            norm_topk_prob=False,
            routed_scaling_factor=2.0,
            first_k_dense_replace=1,
            max_position_embeddings=128,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        )
    elif kind == "qwen3moe":
        cls, config_cls = transformers.Qwen3MoeForCausalLM, transformers.Qwen3MoeConfig
        cfg.update(
            num_key_value_heads=2,
            head_dim=32,
            num_experts=8,
            norm_topk_prob=True,
            max_position_embeddings=512,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        )
    elif kind == "glm4moe":
        cls, config_cls = transformers.Glm4MoeForCausalLM, transformers.Glm4MoeConfig
        cfg.update(
            num_key_value_heads=2,
            head_dim=32,
            partial_rotary_factor=0.5,
            attention_bias=True,
            use_qk_norm=True,
            n_routed_experts=8,
            n_shared_experts=1,
            n_group=1,
            topk_group=1,
            norm_topk_prob=True,
            routed_scaling_factor=1.5,
            first_k_dense_replace=1,
            max_position_embeddings=512,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        )
    else:
        raise ValueError(f"unknown tiny MoE model {kind!r}; choose one of {', '.join(KINDS)}")
    if kind.startswith("deepseek"):
        cfg.update(
            vocab_size=n_tokens,
            bos_token_id=special["<|begin_of_text|>"],
            eos_token_id=special["<|eot_id|>"],
        )
    else:
        cfg.update(vocab_size=64 * math.ceil(n_tokens / 64) + (64 if n_tokens % 64 == 0 else 0))
        if kind == "qwen3moe":
            cfg.update(bos_token_id=special["<|endoftext|>"], eos_token_id=special["<|im_end|>"])
        else:
            cfg.update(
                eos_token_id=[special["<|endoftext|>"], special["<|user|>"], special["<|observation|>"]],
                pad_token_id=special["<|endoftext|>"],
            )
    cfg.update(overrides or {})
    config = config_cls(**cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = cls(config).to(torch.float32)
    randomize_moe(model)
    return model.eval()


@torch.no_grad()
def randomize_moe(model, seed: int = SEED) -> None:
    """`tiny_models.randomize`, plus a random e_score_correction_bias (a buffer, not a parameter)."""
    randomize(model, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    for name, buf in model.named_buffers():
        if name.endswith("e_score_correction_bias"):
            buf.copy_(BIAS_STD * torch.randn(buf.shape, generator=g, dtype=torch.float32))


@torch.no_grad()
def round_moe_weights(model, outtype: str) -> None:
    """Round the weights an f16/bf16 GGUF holds in that type; 1-D tensors and the router stay f32."""
    dtype = {"f32": None, "f16": torch.float16, "bf16": torch.bfloat16}[outtype]
    if dtype is None:
        return
    for name, p in model.named_parameters():
        if p.dim() >= 2 and not name.endswith("mlp.gate.weight"):
            p.copy_(p.to(dtype).to(torch.float32))


def save_moe_model(model, kind: str, hf_dir: Path, **save_kwargs) -> Path:
    """save_pretrained (experts saved one tensor each, as the original checkpoints) plus tokenizer files."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(hf_dir, **save_kwargs)
    for name, data in moe_tokenizer_files(kind).items():
        (hf_dir / name).write_bytes(data)
    return hf_dir


_GLM_CACHE: dict[str, bytes] = {}


def moe_tokenizer_files(kind: str) -> dict[str, bytes]:
    """DeepSeek: the tiny Llama 3 style vocabulary; Qwen3-MoE: Qwen 3's; GLM: Qwen's with GLM's specials."""
    if kind.startswith("deepseek"):
        return tokenizer_files("llama")
    if kind == "qwen3moe":
        return tokenizer_files("qwen3")
    if kind != "glm4moe":
        raise ValueError(f"unknown tiny MoE model {kind!r}; choose one of {', '.join(KINDS)}")
    if not _GLM_CACHE:
        from tokenizers import processors

        tok = _byte_level_bpe(QWEN2_REGEX, 384)
        decoder = _added(tok, GLM_SPECIALS)
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        config = {
            "added_tokens_decoder": decoder,
            "clean_up_tokenization_spaces": False,
            "do_lower_case": False,
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "model_max_length": 512,
            "chat_template": GLM_TEMPLATE,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        _GLM_CACHE.update(
            {
                "tokenizer.json": tok.to_str(pretty=True).encode("utf-8"),
                "tokenizer_config.json": _dump(config),
            }
        )
    return dict(_GLM_CACHE)
