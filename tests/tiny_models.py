"""Tiny random Hugging Face models of each architecture kiln runs, written to GGUF by `kiln convert`.

    hf_model, gguf_path = make_tiny_model("gemma3", tmp_path, outtype="f16")

The oracle for kiln's model code: `hf_model` (transformers, float32, eager
attention, eval mode) and the GGUF file converted from the very same
checkpoint. Each model is seeded and built in well under a second (after
transformers' import), and exercises every feature of its architecture
that a GGUF file can carry:

- llama: 3 layers, GQA (4 heads, 2 kv heads), untied output, a Llama 3 style
  byte-level BPE vocabulary with BOS added; variants `llama-tied`
  (tie_word_embeddings) and `llama-rope-scaling` (Llama 3.1 rope scaling,
  written as rope_freqs.weight, with an original context of 32 so that the
  scaling matters within 80 tokens);
- qwen2: 2 layers, q/k/v biases, tied embeddings, rope base 1e6, a Qwen
  vocabulary padded to a multiple of 64 (unused [PAD] tokens);
- qwen3: 3 layers, q/k norms, head_dim 32 (so heads*head_dim != hidden),
  untied output, non-special added tokens (<think>);
- gemma3: 6 layers, because llama.cpp fixes Gemma 3's pattern at five
  sliding-window layers (window 8 here) then one global layer; head_dim 32,
  all four norms per layer plus q/k norms with random weights (the GGUF
  holds them +1), global rope base 1e6 with linear scaling 8 (llama.cpp
  applies it to the global layers only), local base 10000,
  query_pre_attn_scalar = head_dim and final_logit_softcapping 5, a
  SentencePiece BPE vocabulary with byte fallback (tokenizer.model and
  tokenizer.json).

Where llama.cpp hard-codes a Gemma 3 value instead of reading it from the
file (pattern 6, local base 10000, 1/sqrt(head_dim) query scale), the tiny
model uses that value, so kiln and transformers can agree.

All weights are drawn with std 0.2 (norm weights around 1, or around 0 for
Gemma, biases 0.1), large enough that attention is far from uniform and
logits reach a few units, so rope, masks and softcapping are visible in
the output.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import tempfile
from pathlib import Path

import torch

from kiln.tools.convert import convert

WIKI = Path(__file__).resolve().parents[2] / "shared" / "data" / "wiki.test.raw"
SEED = 1234
WEIGHT_STD = 0.2

LLAMA3_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)

# name -> (architecture, config overrides)
VARIANTS: dict[str, tuple[str, dict]] = {
    "llama": ("llama", {}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "llama-rope-scaling": (
        "llama",
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            }
        },
    ),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
    "gemma3": ("gemma3", {}),
}
ARCHS = ("llama", "qwen2", "qwen3", "gemma3")


def make_tiny_model(arch: str, tmp_path, outtype: str = "f32", **config_overrides):
    """Build, save and convert a tiny random model; returns (transformers model, GGUF path).

    For f16 and bf16 the model's 2-D weights are first rounded to that type (kept
    as float32), so `hf_model` holds exactly the weights the GGUF file holds and a
    comparison measures arithmetic, not the rounding of the weights.

    `arch`: llama, qwen2, qwen3, gemma3 or a variant of VARIANTS (llama-tied,
    llama-rope-scaling). `config_overrides` go into the transformers config.
    The checkpoint is saved in `tmp_path/<arch>-hf`, the GGUF file is
    `tmp_path/<arch>-<outtype>.gguf`.
    """
    if arch not in VARIANTS:
        raise ValueError(f"unknown tiny model {arch!r}; choose one of {', '.join(VARIANTS)}")
    family, overrides = VARIANTS[arch]
    tmp_path = Path(tmp_path)
    hf_dir = tmp_path / f"{arch}-hf"
    model = build_model(family, {**overrides, **config_overrides})
    round_weights(model, outtype)
    save_model(model, family, hf_dir)
    gguf_path = convert(hf_dir, tmp_path / f"{arch}-{outtype}.gguf", outtype=outtype)
    return model, gguf_path


@torch.no_grad()
def round_weights(model, outtype: str) -> None:
    """Round the 2-D weights to the values an f16/bf16 GGUF holds (1-D tensors stay f32 there too)."""
    dtype = {"f32": None, "f16": torch.float16, "bf16": torch.bfloat16}[outtype]
    if dtype is None:
        return
    for p in model.parameters():
        if p.dim() >= 2:
            p.copy_(p.to(dtype).to(torch.float32))


def save_model(model, family: str, hf_dir: Path, **save_kwargs) -> Path:
    """save_pretrained plus the tokenizer files of the family."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(hf_dir, **save_kwargs)
    for name, data in tokenizer_files(family).items():
        (hf_dir / name).write_bytes(data)
    return hf_dir


def build_model(family: str, overrides: dict | None = None):
    """The seeded random transformers model of a family (float32, eager attention, eval mode)."""
    import transformers

    files = tokenizer_files(family)
    n_tokens, special = _token_ids(files)
    cfg = dict(COMMON)
    if family == "llama":
        cls, config_cls = transformers.LlamaForCausalLM, transformers.LlamaConfig
        cfg.update(
            num_hidden_layers=3,
            head_dim=16,
            rms_norm_eps=1e-5,
            vocab_size=n_tokens,
            tie_word_embeddings=False,
            bos_token_id=special["<|begin_of_text|>"],
            eos_token_id=[special["<|end_of_text|>"], special["<|eot_id|>"]],
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        )
    elif family in ("qwen2", "qwen3"):
        if family == "qwen2":
            cls, config_cls = transformers.Qwen2ForCausalLM, transformers.Qwen2Config
            cfg.update(num_hidden_layers=2, head_dim=16, tie_word_embeddings=True)
        else:
            cls, config_cls = transformers.Qwen3ForCausalLM, transformers.Qwen3Config
            cfg.update(num_hidden_layers=3, head_dim=32, tie_word_embeddings=False, attention_bias=False)
        cfg.update(
            rms_norm_eps=1e-6,
            vocab_size=64 * math.ceil(n_tokens / 64) + (64 if n_tokens % 64 == 0 else 0),
            bos_token_id=special["<|endoftext|>"],
            eos_token_id=special["<|im_end|>"],
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        )
    elif family == "gemma3":
        cls, config_cls = transformers.Gemma3ForCausalLM, transformers.Gemma3TextConfig
        cfg.update(
            num_hidden_layers=6,
            head_dim=32,
            query_pre_attn_scalar=32,
            rms_norm_eps=1e-6,
            vocab_size=n_tokens,
            sliding_window=8,
            layer_types=["sliding_attention"] * 5 + ["full_attention"],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
            },
            final_logit_softcapping=5.0,
            attn_logit_softcapping=None,
            hidden_activation="gelu_pytorch_tanh",
            tie_word_embeddings=True,
            pad_token_id=0,
            eos_token_id=[1, special["<end_of_turn>"]],
            bos_token_id=2,
        )
    else:
        raise ValueError(f"unknown family {family!r}")
    cfg.update(overrides or {})
    config = config_cls(**cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = cls(config).to(torch.float32)
    randomize(model, gemma=family == "gemma3")
    return model.eval()


@torch.no_grad()
def randomize(model, gemma: bool = False, seed: int = SEED) -> None:
    """Every parameter drawn from a seeded generator: weights N(0, 0.2), norms 1 + N(0, 0.1) (Gemma: N(0, 0.1))."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if "norm" in name:
            p.copy_((0.0 if gemma else 1.0) + 0.1 * noise)
        elif name.endswith(".bias"):
            p.copy_(0.1 * noise)
        else:
            p.copy_(WEIGHT_STD * noise)


# ----- tokenizers (built once per process, deterministic) -----

_TOKENIZER_CACHE: dict[str, dict[str, bytes]] = {}


def tokenizer_files(family: str) -> dict[str, bytes]:
    """{file name: contents} of the tokenizer of a family."""
    if family not in _TOKENIZER_CACHE:
        if family == "llama":
            files = _llama_tokenizer()
        elif family in ("qwen2", "qwen3"):
            files = _qwen_tokenizer(think=family == "qwen3")
        elif family == "gemma3":
            files = _gemma_tokenizer()
        else:
            raise ValueError(f"unknown family {family!r}")
        _TOKENIZER_CACHE[family] = files
    return _TOKENIZER_CACHE[family]


def _training_text() -> list[str]:
    text = WIKI.read_text(encoding="utf-8")[:24000]
    return [line for line in text.splitlines() if line.strip()]


def _byte_level_bpe(regex: str, vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    return tok


def _added(tok, specials: list[str], normal: list[str] = ()) -> dict:
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if normal:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in normal])
    return {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t in specials,
        }
        for t in list(specials) + list(normal)
    }


def _dump(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _llama_tokenizer() -> dict[str, bytes]:
    from tokenizers import processors

    tok = _byte_level_bpe(LLAMA3_REGEX, 384)
    specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ]
    decoder = _added(tok, specials)
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, tok.token_to_id(bos))],
    )
    config = {
        "added_tokens_decoder": decoder,
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": bos,
        "chat_template": LLAMA3_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|eot_id|>",
        "model_max_length": 512,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    return {"tokenizer.json": tok.to_str(pretty=True).encode("utf-8"), "tokenizer_config.json": _dump(config)}


def _qwen_tokenizer(think: bool) -> dict[str, bytes]:
    from tokenizers import processors

    tok = _byte_level_bpe(QWEN2_REGEX, 384)
    decoder = _added(
        tok, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], ["<think>", "</think>"] if think else []
    )
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    config = {
        **({"add_bos_token": False} if think else {}),
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "bos_token": None,
        "chat_template": CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 512,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    return {"tokenizer.json": tok.to_str(pretty=True).encode("utf-8"), "tokenizer_config.json": _dump(config)}


GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]


def _gemma_tokenizer() -> dict[str, bytes]:
    """A SentencePiece BPE model with byte fallback (Gemma's layout of special ids), and its tokenizer.json."""
    import sentencepiece as spm
    from transformers import GemmaTokenizer

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_text()),
        model_writer=buf,
        model_type="bpe",
        vocab_size=512,
        byte_fallback=True,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=GEMMA_SPECIALS[4:],
        character_coverage=1.0,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        allow_whitespace_only_pieces=True,
        num_threads=1,
        minloglevel=2,
    )
    model = buf.getvalue()
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "tokenizer.model").write_bytes(model)
        GemmaTokenizer.from_pretrained(d).save_pretrained(Path(d) / "out")
        tj = json.loads((Path(d) / "out" / "tokenizer.json").read_text(encoding="utf-8"))
        shutil.rmtree(Path(d) / "out")
    for t in tj["added_tokens"]:
        t["special"] = True  # as in Gemma's own files: <start_of_turn> and <end_of_turn> are special
    tj["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": "<bos>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": "<bos>", "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}},
    }
    decoder = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(GEMMA_SPECIALS)
    }
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "bos_token": "<bos>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>",
        "model_max_length": 512,
        "pad_token": "<pad>",
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
    }
    return {
        "tokenizer.model": model,
        "tokenizer.json": _dump(tj),
        "tokenizer_config.json": _dump(config),
        "chat_template.jinja": GEMMA_TEMPLATE.encode("utf-8"),
    }


def _token_ids(files: dict[str, bytes]) -> tuple[int, dict[str, int]]:
    """(number of tokens, {added token: id}) of a tokenizer.json."""
    tj = json.loads(files["tokenizer.json"])
    ids = dict(tj["model"]["vocab"])
    ids.update({t["content"]: t["id"] for t in tj["added_tokens"]})
    return max(ids.values()) + 1, {t["content"]: t["id"] for t in tj["added_tokens"]}
