"""Small vocabularies for the tokenizer tests, written to GGUF with the PyPI `gguf` package.

There are no real model files here for most pre-tokenizers, so the tests use
two vocabularies trained on a slice of ../shared/data/wiki.test.raw plus
`TEXTS`, stored in tests/tokenizer/data/ (so that the ik_llama.cpp figures in
data/llama_cpp_golden.json stay valid):

- data/bpe.json: a byte-level BPE (2000 tokens, trained with `tokenizers`),
  to which `bpe_metadata` appends special tokens of every kind;
- data/spm.model: a SentencePiece BPE with byte fallback (1000 pieces,
  trained with `sentencepiece`), read by `spm_metadata` as llama.cpp's
  converter reads it.

`python -m tests.tokenizer.vocabs` trains them again (only when the data must change:
the golden figures then have to be made again, see data/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
WIKI = Path(__file__).resolve().parents[3] / "shared" / "data" / "wiki.test.raw"

# varied text: numbers, whitespace runs, several scripts, emoji (with ZWJ and skin tones), contractions
TEXTS = [
    "Hello world! It's 2024-11-24, 1234567 items costing $3.50 (≈ €3,21).\n\n  Indented   spaces\tand tabs.\r\n",
    "Ünïcödé façade, ÉCOLE NORMALE, naïve café; 日本語のテキスト、カタカナ and 中文字符 with 한국어 텍스트.",
    "Emoji: 🎉👍🏽 🦙.cpp 😶‍🌫️ ✅ — and مرحبا بالعالم, Привет мир, Ελληνικά, हिन्दी.",
    "Numbers: 3 33 333 3333 33333 ½ ² Ⅻ ٣٤٥ 1.5e-10 0x1F 1,000,000 and 12345678901234567890",
    "Code: def f(x):\n    return x**2  # squared\n\n\n\tif a != b and c <= d: pass\n",
    "I'LL DO IT, you'd've, we're, they'RE, it's 'quoted' ''double'' ```fences``` ... !!! ???",
    "   leading and trailing spaces   ",
    "\n\n\nnewlines\n \n\t\n",
    " ",
    "a",
]

# special tokens appended to the trained byte-level vocabulary: (text, token type)
BPE_SPECIALS = [
    ("<|endoftext|>", 3),
    ("<|im_start|>", 3),
    ("<|im_end|>", 3),
    ("<think>", 4),  # user-defined: matched even without parse_special
    ("</think>", 4),
    ("[A]", 3),  # with "A]]x": llama.cpp cuts the longer special text first, wherever it starts
    ("A]]x", 3),
    ("<|eot_id|>", 1),  # typed normal, but llama.cpp makes it a control token by its text
    ("<unused0>", 5),  # unused: never matched, prints nothing
    ("Ġunreachableword", 1),  # a token no merge sequence reaches: only `ignore_merges` finds it
    ("ĠÃīCOLE", 1),  # " ÉCOLE": whole only where the pre-tokenizer keeps it whole (Tekken: not in llama.cpp)
]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# the llama.* keys llama.cpp needs to load a vocabulary-only file
LLAMA_KEYS = {
    "llama.block_count": 1,
    "llama.context_length": 256,
    "llama.embedding_length": 64,
    "llama.feed_forward_length": 128,
    "llama.attention.head_count": 4,
    "llama.attention.head_count_kv": 4,
    "llama.attention.layer_norm_rms_epsilon": 1e-5,
    "llama.rope.dimension_count": 16,
}


def bpe_metadata(pre: str, **extra) -> dict:
    """`tokenizer.*` metadata of the stored byte-level BPE vocabulary with pre-tokenizer `pre`."""
    data = json.loads((DATA / "bpe.json").read_text(encoding="utf-8"))
    tokens = list(data["tokens"]) + [t for t, _ in BPE_SPECIALS]
    types = [1] * len(data["tokens"]) + [k for _, k in BPE_SPECIALS]
    ids = {t: i for i, t in enumerate(tokens)}
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": list(data["merges"]),
        "tokenizer.ggml.bos_token_id": ids["<|endoftext|>"],
        "tokenizer.ggml.eos_token_id": ids["<|endoftext|>"],
        "tokenizer.ggml.padding_token_id": ids["<|endoftext|>"],
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": CHATML,
    }
    meta.update(extra)
    return {k: v for k, v in meta.items() if v is not None}


def spm_metadata(extra_tokens: list[tuple[str, int]] = (), **extra) -> dict:
    """`tokenizer.*` metadata of the stored SentencePiece model, as llama.cpp's converter writes it,
    with `extra_tokens` ((text, type) pairs) appended."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((DATA / "spm.model").read_bytes())
    # sentencepiece piece types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte (as GGUF's)
    tokens = [p.piece for p in proto.pieces] + [t for t, _ in extra_tokens]
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": [p.score for p in proto.pieces] + [0.0] * len(extra_tokens),
        "tokenizer.ggml.token_type": [p.type for p in proto.pieces] + [k for _, k in extra_tokens],
        "tokenizer.ggml.bos_token_id": proto.trainer_spec.bos_id,
        "tokenizer.ggml.eos_token_id": proto.trainer_spec.eos_id,
        "tokenizer.ggml.unknown_token_id": proto.trainer_spec.unk_id,
        "tokenizer.chat_template": (
            "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
            "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
        ),
    }
    meta.update(extra)
    return {k: v for k, v in meta.items() if v is not None}


def write_gguf(path: Path, metadata: dict, name: str = "kiln-test-vocab") -> Path:
    """A vocabulary-only GGUF file (llama architecture, no tensors), written with the PyPI gguf package."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    for key, value in {**LLAMA_KEYS, "llama.vocab_size": len(metadata["tokenizer.ggml.tokens"])}.items():
        if isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_uint32(key, value)
    for key, value in metadata.items():
        if key == "tokenizer.ggml.scores":
            w.add_array(key, [float(s) for s in value])
        elif key == "tokenizer.ggml.token_type":
            w.add_array(key, [int(t) for t in value])  # written as INT32 arrays
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
        else:
            raise TypeError(f"{key}: cannot write {type(value).__name__}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ----- making the stored vocabularies (run once; see the module docstring) -----


def _training_lines() -> list[str]:
    text = WIKI.read_text(encoding="utf-8")[:400_000]
    return [line for line in text.splitlines(keepends=True) if line.strip()] + TEXTS * 3


def make_bpe(vocab_size: int = 2000) -> None:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    llama3 = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
        r"|\s+(?!\S)|\s+"
    )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(llama3), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_lines(), trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(vocab)))
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    data = {"tokens": [t for t, _ in vocab], "merges": merges}
    (DATA / "bpe.json").write_text(
        json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
    )


def make_spm(vocab_size: int = 1000) -> None:
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_lines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=0.9995,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (DATA / "spm.model").write_bytes(model.getvalue())


if __name__ == "__main__":
    DATA.mkdir(exist_ok=True)
    make_bpe()
    make_spm()
    print("wrote", DATA / "bpe.json", DATA / "spm.model")
