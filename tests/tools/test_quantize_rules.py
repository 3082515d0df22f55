"""kiln's per-tensor quantization mixtures against ik_llama.cpp's own choices.

tests/tools/data/quantize_rules_<model>.json.gz (gzipped JSON; `zcat` to read) hold, for nine models, the tensor list (names,
ggml shapes, types) and what ik_llama.cpp's `llama-quantize --dry-run` (commit 8337e4cd)
printed for every tensor: for each file type with and without an imatrix, and with --pure,
--leave-output-tensor, --token-embedding-type, --output-tensor-type, the --attn-q-type style
flags, --ffn-gate-inp-type and --custom-q. The models: the golden tiny llama
(../shared/golden/src.gguf), tiny DeepSeek-V3 (8 layers, MLA, 8 experts), Qwen3-MoE (8
layers, GQA 4) and tied-embedding llama (8 layers) made by tests/tiny_*models.py, and
synthetic zero-weight files: ones that ik classifies as a Llama 8B and a Llama 70B, a Falcon
(attn_qkv), a multi-head llama with odd tensors (1-D in disguise, int, bias, Mamba and
router names, a dense shared expert) and a dflash-draft. ik's choices were recorded by hand
with the scripts in the project notes (/work/notes/qrules: make_models.py, make_synthetic.py,
record.py); no ik_llama.cpp runs here.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from kiln.errors import KilnError, OptionError, QuantizeError
from kiln.tools import quantize_rules as rules
from kiln.tools.quantize_ftypes import FILE_TYPES, file_type

DATA = Path(__file__).parent / "data"
MODELS = sorted(p.name.removeprefix("quantize_rules_").removesuffix(".json.gz")
                for p in DATA.glob("quantize_rules_*.json.gz"))
TYPE_FLAGS = {"--attn-q-type": "attn_q", "--attn-k-type": "attn_k", "--attn-v-type": "attn_v",
              "--attn-qkv-type": "attn_qkv", "--attn-output-type": "attn_output",
              "--ffn-gate-type": "ffn_gate", "--ffn-up-type": "ffn_up", "--ffn-down-type": "ffn_down",
              "--ffn-gate-inp-type": "ffn_gate_inp"}


def _load(model: str) -> dict:
    doc = json.loads(gzip.decompress((DATA / f"quantize_rules_{model}.json.gz").read_bytes()))
    meta = dict(doc["metadata"])
    meta["tokenizer.ggml.tokens"] = [""] * meta.pop("n_tokens", 0)
    doc["metadata"] = meta
    return doc


def _expand(rle: str) -> list[str | None]:
    out = []
    for tok in rle.split():
        name, _, n = tok.partition("*")
        out += [None if name == "=" else name] * int(n or 1)
    return out


def _kwargs(args: list[str]) -> dict:
    kw: dict = {"overrides": {}}
    it = iter(args)
    for a in it:
        if a == "--pure":
            kw["pure"] = True
        elif a == "--leave-output-tensor":
            kw["leave_output_tensor"] = True
        elif a == "--token-embedding-type":
            kw["token_embedding_type"] = next(it)
        elif a == "--output-tensor-type":
            kw["output_tensor_type"] = next(it)
        elif a in TYPE_FLAGS:
            kw["overrides"][TYPE_FLAGS[a]] = next(it)
        elif a == "--custom-q":
            kw["custom_rules"] = [tuple(item.rsplit("=", 1)) for item in next(it).split(",")]
        else:
            raise AssertionError(f"flag {a} not handled by the test")
    return kw


def _runs(doc: dict):
    for run in doc["runs"]:
        modes = [False, True] if run["imatrix"] == "both" else [run["imatrix"]]
        for has_imatrix in modes:
            yield run, has_imatrix


@pytest.mark.parametrize("model", MODELS)
def test_every_tensor_type_matches_ik(model):
    doc = _load(model)
    tensors = [(n, tuple(s), t) for n, s, t in doc["tensors"]]
    n_checked = 0
    for run, has_imatrix in _runs(doc):
        label = f"{model} {run['type']} {' '.join(run['args'])} imatrix={has_imatrix}"
        kwargs = _kwargs(run["args"])
        if "error" in run:
            with pytest.raises(rules.UnsupportedRowSizeError, match="Unsupported tensor size"):
                rules.default_types(run["type"], doc["metadata"], tensors, has_imatrix=has_imatrix, **kwargs)
            continue
        choices = rules.default_types(run["type"], doc["metadata"], tensors, has_imatrix=has_imatrix, **kwargs)
        expected = _expand(run["result"])
        assert len(choices) == len(expected) == len(tensors)
        wrong = [
            (c.name, c.type_name if c.action == "quantize" else "=", want or "=", c.notes)
            for c, want in zip(choices, expected, strict=True)
            if (c.type_name if c.action == "quantize" else None) != want
        ]
        assert not wrong, f"{label}: {len(wrong)} tensors differ from ik, e.g. {wrong[:3]}"
        n_checked += 1
    assert n_checked >= len(doc["runs"]) - 5


def test_the_data_covers_every_file_type():
    seen = {run["type"] for m in MODELS for run in _load(m)["runs"]}
    aliases = {"Q3_K", "Q4_K", "Q5_K"}  # same ids as Q3_K_M, Q4_K_M, Q5_K_M
    assert seen == set(FILE_TYPES) - aliases
    assert {"deepseek3", "golden", "qwen3moe", "llama70b", "falcon"} <= set(MODELS)


def test_default_is_separate_from_custom_rules():
    doc = _load("deepseek3")
    tensors = [(n, tuple(s), t) for n, s, t in doc["tensors"]]
    plain = rules.default_types("Q4_K_M", doc["metadata"], tensors)
    custom = rules.default_types("Q4_K_M", doc["metadata"], tensors, custom_rules=[("ffn_down_exps", "IQ2_K_R4")])
    for p, c in zip(plain, custom, strict=True):
        assert c.default_type == p.type_name == p.default_type
        if "ffn_down_exps" in c.name:
            assert c.type_name == "IQ2_K_R4" and c.custom_rule == "ffn_down_exps=IQ2_K_R4"
            assert p.type_name != "IQ2_K_R4"
        else:
            assert c.type_name == p.type_name and c.custom_rule is None
    # under --pure ik ignores --custom-q
    pure = rules.default_types("Q4_K_M", doc["metadata"], tensors, pure=True,
                               custom_rules=[("ffn_down_exps", "IQ2_K_R4")])
    assert all(c.type_name != "IQ2_K_R4" and not c.custom_rules_apply for c in pure)


def test_notes_say_why():
    doc = _load("golden")
    tensors = [(n, tuple(s), t) for n, s, t in doc["tensors"]]
    by_name = {c.name: c for c in rules.default_types("Q4_K_M", doc["metadata"], tensors)}
    assert by_name["blk.0.attn_norm.weight"].notes == ["kept: 1-D tensor"]
    assert by_name["blk.0.ffn_down.weight"].type_name == "Q6_K"
    assert any("ffn_down" in n and "Q6_K" in n for n in by_name["blk.0.ffn_down.weight"].notes)
    ds = _load("deepseek3")
    choices = rules.default_types("IQ4_KS", ds["metadata"], [(n, tuple(s), t) for n, s, t in ds["tensors"]])
    out = next(c for c in choices if c.name == "blk.0.attn_output.weight")  # rows of 96 values, Q5_K for MoE
    assert out.type_name == "Q6_0" and any("fallback Q6_0" in n for n in out.notes)
    router = next(c for c in choices if c.name == "blk.1.ffn_gate_inp.weight")
    assert router.action == "copy" and router.notes == ["kept: expert router (ffn_gate_inp)"]


def test_file_type_lookup():
    assert file_type("q4_k_m").name == "Q4_K_M" and file_type("Q4_K_M").id == 15
    assert file_type("15").name == "Q4_K"  # ik: the first name with that id
    assert file_type(0).name == "F32" and file_type("COPY").only_copy
    assert file_type("iq2_k_r4").default_type == "IQ2_K_R4"
    assert file_type("IQ3_KL").default_type == "IQ3_K"
    assert len(FILE_TYPES) == 87
    assert FILE_TYPES["Q4_K_M"].usage_line() == "  15  or  Q4_K_M  : 4.5 bpw Q4_K, with per-tensor rules"
    with pytest.raises(OptionError, match="did you mean Q4_K_M"):
        file_type("Q4_KM")
    with pytest.raises(OptionError, match="tensor type but not a file type"):
        file_type("Q8_K")
    with pytest.raises(KilnError, match="no file type has the id 4"):
        file_type("4")


def test_aliases_give_the_same_mixture():
    doc = _load("llama70b")
    tensors = [(n, tuple(s), t) for n, s, t in doc["tensors"]]
    for alias, full in (("Q3_K", "Q3_K_M"), ("Q4_K", "Q4_K_M"), ("Q5_K", "Q5_K_M")):
        a = [c.type_name for c in rules.default_types(alias, doc["metadata"], tensors)]
        assert a == [c.type_name for c in rules.default_types(full, doc["metadata"], tensors)]
        assert len(set(a)) >= 3  # a real mixture


def test_fallback_and_interleave_helpers():
    assert rules.fallback_type("Q4_K", (96, 8)) == "Q5_0"
    assert rules.fallback_type("IQ2_K_R4", (128, 8)) == "IQ4_NL"
    assert rules.fallback_type("Q6_K", (512, 8)) == "Q6_K"
    with pytest.raises(QuantizeError, match="Unsupported tensor size"):
        rules.fallback_type("IQ2_BN", (96, 8))
    assert rules.interleave_fit("Q8_K_R8", (256, 12)) == "Q8_0"
    assert rules.interleave_fit("IQ4_K_R4", (256, 12)) == "IQ4_K_R4"
    assert rules.repacked_file_type(15) == 214 and rules.repacked_file_type(1) == 1


def test_layer_outside_block_count_is_an_error():
    doc = _load("qwen3moe")
    meta = dict(doc["metadata"], **{"qwen3moe.block_count": 4})
    tensors = [(n, tuple(s), t) for n, s, t in doc["tensors"]
               if not n.startswith("blk.") or int(n.split(".")[1]) < 4 or n == "blk.7.ffn_down_exps.weight"]
    with pytest.raises(rules.QuantizeRuleError, match="layer 7, outside"):
        rules.default_types("Q4_K_M", meta, tensors)
    with pytest.raises(rules.QuantizeRuleError, match="8 attn_v/attn_qkv tensors for 4 layers"):
        rules.default_types("Q4_K_M", meta, [(n, tuple(s), t) for n, s, t in doc["tensors"]])
