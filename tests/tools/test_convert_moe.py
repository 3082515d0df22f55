"""`kiln convert` for deepseek2, qwen3moe and glm4moe against outside oracles.

- tensors, read back with the PyPI `gguf` reader (llama.cpp's Python), equal the
  checkpoint's state dict transformed the way ik_llama.cpp's converter
  transforms it (experts stacked, kv_b_proj split as DeepseekV2Model.modify_tensors
  splits it, restated here), under the names gguf-py's own TensorNameMap gives, in the
  tensor types ik's converter picks;
- metadata keys, value types and values are those ik's converter writes for the
  config (listed below per model); general.size_label is gguf-py's size_label
  of gguf-py's parameter count;
- the three MLA conventions hold the same numbers: kv_b rebuilt from k_b/v_b,
  and keys/values of transformers' own attention module reproduced from a latent
  with k_b/v_b;
- an fp8 checkpoint (float8_e4m3fn + weight_scale_inv in 128x128 blocks, ragged
  edges) converts to exactly what its reference bf16 dequantization converts to;
- bad configs and checkpoints raise ConvertError naming the field.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from kiln.errors import ConvertError
from kiln.gguf import GGUFFile
from kiln.tools.convert import convert
from tests.tiny_moe_models import KINDS, build_moe_model, make_tiny_moe_model, save_moe_model

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

U32, F32, BOOL, STR = (
    gguf.GGUFValueType.UINT32,
    gguf.GGUFValueType.FLOAT32,
    gguf.GGUFValueType.BOOL,
    gguf.GGUFValueType.STRING,
)
T_F32, T_F16, T_BF16 = (
    gguf.GGMLQuantizationType.F32,
    gguf.GGMLQuantizationType.F16,
    gguf.GGMLQuantizationType.BF16,
)
GGUF_ARCH = {
    "deepseek-v3": "deepseek2",
    "deepseek-v2": "deepseek2",
    "qwen3moe": "qwen3moe",
    "glm4moe": "glm4moe",
}
MODEL_ARCH = {
    "deepseek2": gguf.MODEL_ARCH.DEEPSEEK2,
    "qwen3moe": gguf.MODEL_ARCH.QWEN3MOE,
    "glm4moe": gguf.MODEL_ARCH.GLM4_MOE,
}
# one outtype per kind keeps the suite fast and covers all three
OUTTYPE = {"deepseek-v3": "f32", "deepseek-v2": "bf16", "qwen3moe": "f16", "glm4moe": "bf16"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """make_tiny_moe_model, once per (kind, outtype, convention) in this module."""
    cache = {}

    def get(kind: str, outtype: str = "f32", mla: str = "ik"):
        key = (kind, outtype, mla)
        if key not in cache:
            cache[key] = make_tiny_moe_model(kind, tmp_path_factory.mktemp(kind), outtype, mla)
        return cache[key]

    return get


def read(path):
    """(tensors: name -> (ggml shape, type, float32 array in torch order), fields: key -> (type, value))."""
    r = gguf.GGUFReader(path)
    tensors = {
        t.name: (tuple(int(d) for d in t.shape), t.tensor_type, gguf.quants.dequantize(t.data, t.tensor_type))
        for t in r.tensors
    }
    fields = {}
    for key, f in r.fields.items():
        if not key.startswith("GGUF."):
            fields[key] = (gguf.GGUFValueType(int(f.types[0])), f.contents())
    return tensors, fields


def checkpoint(path, kind):
    hf_dir = path.parent / f"{kind}-hf"
    config = json.loads((hf_dir / "config.json").read_text())
    return hf_dir, config, safetensors_torch.load_file(hf_dir / "model.safetensors")


# ----- the state dict as ik's converter transforms it -----


def ik_tensors(state: dict, config: dict, arch: str, mla: str = "ik") -> dict[str, np.ndarray]:
    """HF tensors -> {GGUF name: array in torch order}, after DeepseekV2Model/Qwen2MoeModel/Glm4MoeModel."""
    n_layer = config["num_hidden_layers"]
    n_expert = config.get("n_routed_experts") or config.get("num_experts") or config["num_local_experts"]
    names = gguf.get_tensor_name_map(MODEL_ARCH[arch], n_layer)
    out, experts = {}, {}
    for name, t in state.items():
        t = t.float()
        name = name.replace("e_score_correction_bias", "e_score_correction.bias")
        if ".mlp.experts." in name:
            bid = int(name.split(".")[2])
            experts.setdefault(bid, {})[name] = t
            if len(experts[bid]) == 3 * n_expert:
                for w in ("down_proj", "gate_proj", "up_proj"):
                    stacked = torch.stack(
                        [
                            experts[bid][f"model.layers.{bid}.mlp.experts.{x}.{w}.weight"]
                            for x in range(n_expert)
                        ]
                    )
                    out[
                        names.get_name(
                            f"model.layers.{bid}.mlp.experts.{w}.weight", try_suffixes=(".weight",)
                        )
                    ] = stacked.numpy()
            continue
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert gname is not None, name
        if name.endswith("kv_b_proj.weight"):
            # DeepseekV2Model.modify_tensors: per head, the qk_nope rows of kv_b transposed (k_b)
            # and the v_head rows as they are (v_b); ik flattens the heads into the rows
            n_head, v_dim, nope = (
                config[k] for k in ("num_key_value_heads", "v_head_dim", "qk_nope_head_dim")
            )
            step = nope + v_dim
            k_b = torch.stack([t[h * step : h * step + nope].T for h in range(n_head)])  # [H, rank, nope]
            v_b = torch.stack([t[h * step + nope : (h + 1) * step] for h in range(n_head)])  # [H, v, rank]
            if mla == "ik":
                k_b, v_b = torch.cat(list(k_b)), torch.cat(list(v_b))  # [H*rank, nope], [H*v, rank]
            if mla != "mainline-new":
                out[gname] = t.numpy()
            if mla != "mainline-old":
                out[gname.replace("attn_kv_b", "attn_k_b")] = k_b.numpy()
                out[gname.replace("attn_kv_b", "attn_v_b")] = v_b.numpy()
            continue
        out[gname] = t.numpy()
    return out


def ik_type(name: str, shape: tuple, outtype: str):
    if (
        len(shape) <= 1
        or name.endswith("_norm.weight")
        or ".ffn_gate_inp." in name
        or not name.endswith(".weight")
    ):
        return T_F32
    return {"f32": T_F32, "f16": T_F16, "bf16": T_BF16}[outtype]


@pytest.mark.parametrize("kind", KINDS)
def test_tensors_are_the_state_dict_as_ik_converts_it(kind, made):
    outtype = OUTTYPE[kind]
    _, path = made(kind, outtype)
    _, config, state = checkpoint(path, kind)
    want = ik_tensors(state, config, GGUF_ARCH[kind])
    got, _ = read(path)
    assert set(got) == set(want)
    for name, (shape, ttype, data) in got.items():
        assert shape == tuple(reversed(want[name].shape)), name
        assert ttype == ik_type(name, shape, outtype), name
        w = torch.from_numpy(want[name])
        if ttype == T_F16:
            w = w.half()
        elif ttype == T_BF16:
            w = w.bfloat16()
        assert np.array_equal(data.reshape(want[name].shape), w.float().numpy()), name
    with GGUFFile(path) as f:  # kiln's reader agrees
        assert {n: t.shape for n, t in f.tensors.items()} == {n: s for n, (s, _, _) in got.items()}


# ----- metadata -----


def expected_keys(kind: str, config: dict, mla: str = "ik") -> dict:
    """What ik's converter writes for the tiny configs: key -> (type, value)."""
    a = GGUF_ARCH[kind]
    rp = config.get("rope_parameters") or {}
    out = {
        f"{a}.block_count": (U32, config["num_hidden_layers"]),
        f"{a}.context_length": (U32, config["max_position_embeddings"]),
        f"{a}.embedding_length": (U32, config["hidden_size"]),
        f"{a}.feed_forward_length": (U32, config["intermediate_size"]),
        f"{a}.attention.head_count": (U32, config["num_attention_heads"]),
        f"{a}.attention.head_count_kv": (U32, config["num_key_value_heads"]),
        f"{a}.rope.freq_base": (F32, rp["rope_theta"]),
        f"{a}.attention.layer_norm_rms_epsilon": (F32, config["rms_norm_eps"]),
        f"{a}.expert_used_count": (U32, config["num_experts_per_tok"]),
    }
    if a == "deepseek2":
        r, nope, rope, v = (
            config[k] for k in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        )
        out.update(
            {
                f"{a}.leading_dense_block_count": (U32, config["first_k_dense_replace"]),
                f"{a}.vocab_size": (U32, config["vocab_size"]),
                f"{a}.attention.kv_lora_rank": (U32, r),
                f"{a}.attention.key_length": (U32, nope + rope),
                f"{a}.attention.value_length": (U32, v),
                f"{a}.expert_feed_forward_length": (U32, config["moe_intermediate_size"]),
                f"{a}.expert_count": (U32, config["n_routed_experts"]),
                f"{a}.expert_shared_count": (U32, config["n_shared_experts"]),
                f"{a}.expert_weights_scale": (F32, config["routed_scaling_factor"]),
                f"{a}.expert_weights_norm": (BOOL, config["norm_topk_prob"]),
                f"{a}.expert_gating_func": (U32, {"softmax": 1, "sigmoid": 2}[config["scoring_func"]]),
                f"{a}.rope.dimension_count": (U32, rope),
            }
        )
        if config.get("q_lora_rank") is not None:
            out[f"{a}.attention.q_lora_rank"] = (U32, config["q_lora_rank"])
        if rp.get("rope_type") == "yarn":
            out.update(
                {
                    f"{a}.rope.scaling.type": (STR, "yarn"),
                    f"{a}.rope.scaling.factor": (F32, rp["factor"]),
                    f"{a}.rope.scaling.original_context_length": (
                        U32,
                        rp["original_max_position_embeddings"],
                    ),
                    f"{a}.rope.scaling.yarn_log_multiplier": (F32, 0.1 * rp["mscale_all_dim"]),
                }
            )
        if mla == "mainline-new":  # llama.cpp's DeepseekV2Model: MLA as MQA over the latent
            out.update(
                {
                    f"{a}.attention.head_count_kv": (U32, 1),
                    f"{a}.attention.key_length": (U32, r + rope),
                    f"{a}.attention.value_length": (U32, r),
                    f"{a}.attention.key_length_mla": (U32, nope + rope),
                    f"{a}.attention.value_length_mla": (U32, v),
                }
            )
    else:
        out.update(
            {
                f"{a}.attention.key_length": (U32, config["head_dim"]),
                f"{a}.attention.value_length": (U32, config["head_dim"]),
                f"{a}.expert_feed_forward_length": (U32, config["moe_intermediate_size"]),
            }
        )
    if a == "qwen3moe":
        out[f"{a}.expert_count"] = (U32, config.get("num_experts") or config["num_local_experts"])
    if a == "glm4moe":
        prf = config.get("partial_rotary_factor") or rp["partial_rotary_factor"]
        out.update(
            {
                f"{a}.rope.dimension_count": (U32, int(config["head_dim"] * prf)),
                f"{a}.expert_count": (U32, config["n_routed_experts"]),
                f"{a}.expert_shared_count": (U32, config["n_shared_experts"]),
                f"{a}.leading_dense_block_count": (U32, config["first_k_dense_replace"]),
                f"{a}.expert_gating_func": (U32, 2),
                f"{a}.expert_weights_scale": (F32, config["routed_scaling_factor"]),
                f"{a}.expert_weights_norm": (BOOL, config["norm_topk_prob"]),
                # transformers saves no MTP weights: the blocks the file has, none of them MTP
                f"{a}.nextn_predict_layers": (U32, 0),
            }
        )
    if config.get("n_group") is not None:  # as mainline llama.cpp writes them
        out[f"{a}.expert_group_count"] = (U32, config["n_group"])
        out[f"{a}.expert_group_used_count"] = (U32, config["topk_group"])
    return out


def assert_keys(fields: dict, want: dict, arch: str) -> None:
    got = {k: v for k, v in fields.items() if k.startswith(arch + ".")}
    assert set(got) == set(want)
    for key, (vtype, value) in want.items():
        assert got[key][0] == vtype, key
        if vtype == F32:
            assert got[key][1] == pytest.approx(value, rel=1e-7), key
        else:
            assert got[key][1] == value, key


@pytest.mark.parametrize("kind", KINDS)
def test_metadata_is_what_ik_writes(kind, made):
    _, path = made(kind, OUTTYPE[kind])
    _, config, _ = checkpoint(path, kind)
    tensors, fields = read(path)
    assert fields["general.architecture"] == (STR, GGUF_ARCH[kind])
    assert fields["general.file_type"] == (U32, {"f32": 0, "f16": 1, "bf16": 32}[OUTTYPE[kind]])
    assert_keys(fields, expected_keys(kind, config), GGUF_ARCH[kind])
    # gguf-py's size label of gguf-py's parameter count (experts x parameters of one token's path)
    w = gguf.GGUFWriter(path=None, arch=GGUF_ARCH[kind])
    for name, (shape, _, _) in tensors.items():
        w.add_tensor_info(name, tuple(reversed(shape)), np.float32, math.prod(shape) * 4)
    assert fields["general.size_label"] == (STR, gguf.size_label(*w.get_total_parameter_count()))
    assert fields["general.size_label"][1].startswith("8x")


def test_glm_special_tokens(made):
    _, glm = made("glm4moe", "bf16")
    _, f = read(glm)
    tokens = f["tokenizer.ggml.tokens"][1]
    ids = {k: tokens[f[f"tokenizer.ggml.{k}_token_id"][1]] for k in ("bos", "eos", "eot", "eom", "unknown")}
    # ik's Glm4MoeModel.set_vocab: bos [gMASK], eot <|user|>, unk <|endoftext|>, eom <|observation|>
    assert ids == {
        "bos": "[gMASK]",
        "eos": "<|endoftext|>",
        "eot": "<|user|>",
        "eom": "<|observation|>",
        "unknown": "<|endoftext|>",
    }
    _, ds = made("deepseek-v3")
    _, f = read(ds)
    tokens = f["tokenizer.ggml.tokens"][1]
    assert tokens[f["tokenizer.ggml.bos_token_id"][1]] == "<|begin_of_text|>"
    assert "tokenizer.ggml.eom_token_id" not in f  # GLM's special tokens are GLM's only


# ----- the three MLA conventions -----


@pytest.mark.parametrize("kind", ["deepseek-v3", "deepseek-v2"])
def test_mla_conventions_hold_the_same_information(kind, made):
    model, ik_path = made(kind)
    files = {"ik": ik_path, **{m: made(kind, "f32", m)[1] for m in ("mainline-old", "mainline-new")}}
    read_back = {m: read(p) for m, p in files.items()}
    _, config, state = checkpoint(ik_path, kind)
    H, r, nope, v = (
        config[k] for k in ("num_attention_heads", "kv_lora_rank", "qk_nope_head_dim", "v_head_dim")
    )
    n_layer = config["num_hidden_layers"]

    # the tensors: the same, but for the MLA ones, each as ik's transcribed split gives it
    for mla, (tensors, fields) in read_back.items():
        want = ik_tensors(state, config, "deepseek2", mla)
        assert set(tensors) == set(want), mla
        for name, (shape, _, data) in tensors.items():
            assert shape == tuple(reversed(want[name].shape)), (mla, name)
            assert np.array_equal(data.reshape(want[name].shape), want[name]), (mla, name)
        assert_keys(fields, expected_keys(kind, config, mla), "deepseek2")
    ik, old, new = (read_back[m][0] for m in ("ik", "mainline-old", "mainline-new"))
    for bid in range(n_layer):
        p = f"blk.{bid}."
        assert old[p + "attn_kv_b.weight"][0] == (r, H * (nope + v))
        assert p + "attn_k_b.weight" not in old and p + "attn_kv_b.weight" not in new
        assert ik[p + "attn_k_b.weight"][0] == (nope, H * r) and ik[p + "attn_v_b.weight"][0] == (r, H * v)
        assert new[p + "attn_k_b.weight"][0] == (nope, r, H) and new[p + "attn_v_b.weight"][0] == (r, v, H)
        kv_b = old[p + "attn_kv_b.weight"][2].reshape(H, nope + v, r)
        for conv in (ik, new):
            k_b = conv[p + "attn_k_b.weight"][2].reshape(H, r, nope)
            v_b = conv[p + "attn_v_b.weight"][2].reshape(H, v, r)
            rebuilt = np.concatenate([k_b.transpose(0, 2, 1), v_b], axis=1)
            assert np.array_equal(rebuilt, kv_b)

        # transformers' attention expands a latent into per-head keys and values; k_b, v_b do the same
        attn = model.model.layers[bid].self_attn
        c = torch.randn(1, 1, 7, r, generator=torch.Generator().manual_seed(bid))
        with torch.no_grad():
            kv = attn.kv_b_proj(c[:, 0]).view(1, 7, H, nope + v).transpose(1, 2)
        k_hf, v_hf = kv[..., :nope][0].numpy(), kv[..., nope:][0].numpy()  # [H, T, nope], [H, T, v]
        latent = c[0, 0].numpy()  # [T, r]
        for conv in (ik, new):
            k_b = conv[p + "attn_k_b.weight"][2].reshape(H, r, nope)
            v_b = conv[p + "attn_v_b.weight"][2].reshape(H, v, r)
            np.testing.assert_allclose(np.einsum("tr,hrn->htn", latent, k_b), k_hf, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(np.einsum("hvr,tr->htv", v_b, latent), v_hf, rtol=1e-5, atol=1e-5)


# ----- the tiny models exercise what they should -----


@pytest.mark.parametrize("kind", ["deepseek-v3", "glm4moe"])
def test_score_bias_and_groups_change_the_experts(kind):
    model = build_moe_model(kind)
    caught = {}

    def keep(router, inputs, output, caught=caught):
        caught.setdefault(router, inputs[0])

    hooks = [
        layer.mlp.gate.register_forward_hook(keep)
        for layer in model.model.layers
        if hasattr(layer.mlp, "gate")
    ]
    with torch.no_grad():
        logits = model(torch.arange(40)[None] % model.config.vocab_size).logits
        assert torch.isfinite(logits).all() and logits.abs().max() > 1
        assert len(caught) == 2
        for router, x in caught.items():
            x = x.reshape(-1, x.shape[-1])
            chosen = router(x)[2].sort(-1).values
            bias = router.e_score_correction_bias.clone()
            router.e_score_correction_bias.zero_()
            unbiased = router(x)[2].sort(-1).values
            router.e_score_correction_bias.copy_(bias)
            assert (chosen != unbiased).any(-1).float().mean() > 0.3
            if kind == "deepseek-v3":
                scores = torch.sigmoid(x @ router.weight.T) + bias
                ungrouped = scores.topk(router.top_k, -1).indices.sort(-1).values
                assert (chosen != ungrouped).any(-1).float().mean() > 0.1
    for h in hooks:
        h.remove()


# ----- MTP layers -----


def _add_mtp_layer(hf_dir, config: dict, n_layer: int) -> None:
    state = safetensors_torch.load_file(hf_dir / "model.safetensors")
    last = n_layer - 1
    for name in list(state):
        if name.startswith(f"model.layers.{last}."):
            state[name.replace(f"layers.{last}.", f"layers.{n_layer}.")] = state[name].clone()
    d, vocab = config["hidden_size"], config["vocab_size"]
    p = f"model.layers.{n_layer}."
    state.update(
        {
            p + "eh_proj.weight": torch.randn(d, 2 * d),
            p + "enorm.weight": torch.ones(d),
            p + "hnorm.weight": torch.ones(d),
            p + "shared_head.norm.weight": torch.ones(d),
            p + "embed_tokens.weight": torch.randn(vocab, d),
            p + "shared_head.head.weight": torch.randn(vocab, d),
        }
    )
    safetensors_torch.save_file(state, hf_dir / "model.safetensors", metadata={"format": "pt"})


def test_mtp_layers_glm_keeps_deepseek_drops(made, tmp_path):
    _, glm = made("glm4moe", "bf16")
    hf_dir, config, _ = checkpoint(glm, "glm4moe")
    mtp_dir = shutil.copytree(hf_dir, tmp_path / "glm-mtp")
    _add_mtp_layer(mtp_dir, config, 3)
    tensors, fields = read(convert(mtp_dir, tmp_path / "glm-mtp.gguf", outtype="bf16"))
    assert fields["glm4moe.block_count"] == (U32, 4) and fields["glm4moe.nextn_predict_layers"] == (U32, 1)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GLM4_MOE, 4)
    for inner in ("eh_proj", "enorm", "hnorm", "shared_head.norm", "embed_tokens", "shared_head.head"):
        gname = names.get_name(f"model.layers.3.{inner}.weight", try_suffixes=(".weight",))
        shape, ttype, _ = tensors[gname]
        assert ttype == (T_F32 if len(shape) == 1 else T_BF16), gname
    assert "blk.3.ffn_up_exps.weight" in tensors and "blk.3.attn_q.bias" in tensors

    _, ds = made("deepseek-v3")
    hf_dir, config, _ = checkpoint(ds, "deepseek-v3")
    ds_dir = shutil.copytree(hf_dir, tmp_path / "ds-mtp")
    _add_mtp_layer(ds_dir, config, 3)
    tensors, fields = read(convert(ds_dir, tmp_path / "ds-mtp.gguf", outtype="f32"))
    assert fields["deepseek2.block_count"] == (U32, 3)
    assert not [n for n in tensors if n.startswith("blk.3.")]
    assert "deepseek2.nextn_predict_layers" not in fields


# ----- fp8 checkpoints -----

BLOCK = 128
FP8_MAX = 448.0


def reference_dequant(w8: torch.Tensor, scale_inv: torch.Tensor) -> torch.Tensor:
    """DeepSeek's fp8_cast_bf16: each 128x128 block times its scale, in float32, then bf16."""
    out = torch.empty(w8.shape, dtype=torch.float32)
    for i in range(scale_inv.shape[0]):
        for j in range(scale_inv.shape[1]):
            rows, cols = slice(i * BLOCK, (i + 1) * BLOCK), slice(j * BLOCK, (j + 1) * BLOCK)
            out[rows, cols] = w8[rows, cols].float() * scale_inv[i, j]
    return out.bfloat16()


def quantize_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = math.ceil(w.shape[0] / BLOCK), math.ceil(w.shape[1] / BLOCK)
    scale = torch.empty(rows, cols)
    q = torch.empty(w.shape, dtype=torch.float8_e4m3fn)
    for i in range(rows):
        for j in range(cols):
            blk = w[i * BLOCK : (i + 1) * BLOCK, j * BLOCK : (j + 1) * BLOCK]
            scale[i, j] = blk.abs().max() / FP8_MAX
            q[i * BLOCK : (i + 1) * BLOCK, j * BLOCK : (j + 1) * BLOCK] = (blk / scale[i, j]).to(
                torch.float8_e4m3fn
            )
    return q, scale


def _is_quantized(name: str, t: torch.Tensor) -> bool:
    skip = ("embed_tokens", "lm_head", "norm", "mlp.gate.weight")
    return t.dim() == 2 and name.endswith(".weight") and not any(s in name for s in skip)


def test_fp8_checkpoint_converts_like_its_reference_dequantization(tmp_path):
    # hidden 160 and a dense ffn of 200: blocks of 128 with ragged edges in both directions
    model = build_moe_model("deepseek-v3", {"hidden_size": 160, "intermediate_size": 200})
    hf_dir = save_moe_model(model, "deepseek-v3", tmp_path / "bf16-src")
    state = safetensors_torch.load_file(hf_dir / "model.safetensors")
    fp8, ref = {}, {}
    for name, t in state.items():
        if _is_quantized(name, t):
            q, s = quantize_fp8(t)
            fp8[name], fp8[name + "_scale_inv"] = q, s
            ref[name] = reference_dequant(q, s)
        else:
            fp8[name] = ref[name] = t
    assert fp8["model.layers.0.mlp.gate_proj.weight"].shape == (200, 160)
    assert fp8["model.layers.0.mlp.gate_proj.weight_scale_inv"].shape == (2, 2)
    fp8_dir = shutil.copytree(hf_dir, tmp_path / "fp8")
    ref_dir = shutil.copytree(hf_dir, tmp_path / "ref")
    safetensors_torch.save_file(fp8, fp8_dir / "model.safetensors", metadata={"format": "pt"})
    safetensors_torch.save_file(ref, ref_dir / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((fp8_dir / "config.json").read_text())
    config["quantization_config"] = {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    }
    (fp8_dir / "config.json").write_text(json.dumps(config))

    for outtype in ("bf16", "f32"):
        got, _ = read(convert(fp8_dir, tmp_path / f"fp8-{outtype}.gguf", outtype=outtype))
        want, _ = read(convert(ref_dir, tmp_path / f"ref-{outtype}.gguf", outtype=outtype))
        assert set(got) == set(want) and not [n for n in got if "scale" in n]
        for name in want:
            assert got[name][:2] == want[name][:2], name
            assert np.array_equal(got[name][2], want[name][2]), name
    # and directly: the ragged dense weight is the reference's bf16
    gate = got["blk.0.ffn_gate.weight"][2].reshape(200, 160)
    assert np.array_equal(gate, ref["model.layers.0.mlp.gate_proj.weight"].float().numpy())


# ----- errors -----


def _config_error(made, tmp_path, kind, change, match, outtype=None):
    _, path = made(kind, outtype or OUTTYPE[kind])
    hf_dir, config, _ = checkpoint(path, kind)
    bad = shutil.copytree(hf_dir, tmp_path / "bad")
    change(config)
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConvertError, match=match):
        convert(bad, tmp_path / "bad.gguf", outtype="f32")


def _rope(**kw):
    def change(c):
        c["rope_parameters"].update(kw)
        for k, v in kw.items():
            if v is None:
                del c["rope_parameters"][k]

    return change


CONFIG_ERRORS = [
    ("deepseek-v3", lambda c: c.pop("kv_lora_rank"), "kv_lora_rank"),
    ("deepseek-v3", lambda c: c.pop("n_routed_experts"), "n_routed_experts"),
    ("deepseek-v3", lambda c: c.update(scoring_func="relu"), "scoring_func"),
    ("deepseek-v3", lambda c: c.update(num_experts_per_tok=9), "num_experts_per_tok"),
    ("deepseek-v3", lambda c: c.update(n_group=3), "n_group"),
    ("deepseek-v3", lambda c: c.update(rope_interleave=False), "rope_interleave"),
    ("deepseek-v3", lambda c: c.update(qk_nope_head_dim=24), "qk_nope_head_dim"),
    ("deepseek-v3", lambda c: c.update(routed_scaling_factor="2.5"), "routed_scaling_factor"),
    ("deepseek-v3", _rope(mscale=0.707), "mscale"),
    ("deepseek-v3", _rope(mscale_all_dim=None, mscale=None), "mscale_all_dim"),
    ("deepseek-v3", lambda c: c.update(quantization_config={"quant_method": "gptq"}), "gptq"),
    (
        "deepseek-v3",
        lambda c: c.update(quantization_config={"quant_method": "fp8", "weight_block_size": [128]}),
        "weight_block_size",
    ),
    ("qwen3moe", lambda c: c.pop("num_local_experts"), "num_experts"),
    ("qwen3moe", lambda c: c.update(norm_topk_prob=False), "norm_topk_prob"),
    ("qwen3moe", lambda c: c.update(mlp_only_layers=[0]), "mlp_only_layers"),
    ("glm4moe", _rope(partial_rotary_factor=2), "partial_rotary_factor"),
    ("glm4moe", lambda c: c.update(norm_topk_prob="yes"), "norm_topk_prob"),
]


@pytest.mark.parametrize("kind, change, match", CONFIG_ERRORS)
def test_bad_configs_name_the_field(kind, change, match, made, tmp_path):
    _config_error(made, tmp_path, kind, change, match)


def test_bad_checkpoints_and_options(made, tmp_path):
    _, path = made("deepseek-v3")
    hf_dir, _, state = checkpoint(path, "deepseek-v3")
    with pytest.raises(ConvertError, match="--mla-convention"):
        convert(hf_dir, tmp_path / "x.gguf", mla_convention="mainline")

    def write(changed: dict, name: str):
        d = shutil.copytree(hf_dir, tmp_path / name)
        safetensors_torch.save_file(changed, d / "model.safetensors", metadata={"format": "pt"})
        return d

    missing = dict(state)
    del missing["model.layers.2.mlp.experts.5.up_proj.weight"]
    with pytest.raises(ConvertError, match=r"layer 2 has 23 of the 24 expert tensors"):
        convert(write(missing, "missing"), tmp_path / "m.gguf")

    w = "model.layers.0.mlp.gate_proj.weight"
    no_scale = {**state, w: state[w].to(torch.float8_e4m3fn)}
    with pytest.raises(ConvertError, match=f"{w} is F8_E4M3 without a {w}_scale_inv"):
        convert(write(no_scale, "no-scale"), tmp_path / "n.gguf")
    bad_scale = {**no_scale, w + "_scale_inv": torch.ones(3, 1)}
    with pytest.raises(ConvertError, match=r"_scale_inv has shape \[3, 1\].*needs \[1, 1\]"):
        convert(write(bad_scale, "bad-scale"), tmp_path / "s.gguf")
    extra = {**state, "model.layers.1.mlp.experts.8.up_proj.weight": state[w].clone()}
    with pytest.raises(ConvertError, match="expert 8, but the config has 8 experts"):
        convert(write(extra, "extra"), tmp_path / "e.gguf")

    _, glm = made("glm4moe", "bf16")
    hf_dir, config, _ = checkpoint(glm, "glm4moe")
    mtp = shutil.copytree(hf_dir, tmp_path / "glm-mtp")
    _add_mtp_layer(mtp, config, 3)
    config["num_nextn_predict_layers"] = 2
    (mtp / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConvertError, match="num_nextn_predict_layers=2"):
        convert(mtp, tmp_path / "g.gguf")
