"""kiln against tokenizers outside kiln and llama.cpp:

- transformers' tokenizer loaded from the same GGUF file (its GGUF loader), for the pre-tokenizers
  it knows: GPT-2's (its default), Llama 3, Qwen 2, Qwen 3.5, Tekken, GPT-4o;
- SmolLM's pre-tokenizer as its tokenizer.json states it (Digits + ByteLevel), for 'smollm';
- the `sentencepiece` library itself, for the SentencePiece BPE vocabulary (with and without the
  leading space);
- llama.cpp's test vocabularies of real models (models/ggml-vocab-*.gguf in the ik_llama.cpp
  mirror, with the ids Hugging Face's tokenizers gave for their test texts), when the mirror is here.
"""

from __future__ import annotations

import pytest

from kiln.tokenizer import Tokenizer

from .conftest import hf_tokenizer, read_metadata
from .llama_cpp_golden import BPE_SPECIAL_TEXTS
from .vocabs import DATA, TEXTS, WIKI, bpe_metadata, spm_metadata

# pre-tokenizers transformers 5.24's GGUF loader rebuilds (gpt-2: its GPT2Tokenizer default)
HF_PRE = ["gpt-2", "llama-bpe", "qwen2", "qwen35", "tekken", "gpt-4o"]


@pytest.fixture(scope="module")
def wiki_part() -> str:
    return WIKI.read_text(encoding="utf-8")[:30_000]


@pytest.mark.parametrize("pre", HF_PRE)
def test_byte_level_bpe_matches_transformers(pre, make_gguf, wiki_part):
    path = make_gguf(f"bpe-{pre}", bpe_metadata(pre))
    ours = Tokenizer.from_metadata(read_metadata(path))
    hf = hf_tokenizer(path)
    if ours.vocab.pretokenizer.ignore_merges:
        # Llama 3's and Tekken's tokenizer.json say ignore_merges, as llama.cpp does; transformers'
        # GGUF loader leaves it off: restore it, as the model's own tokenizer has it
        hf.backend_tokenizer.model.ignore_merges = True
    for text in [*TEXTS, wiki_part, BPE_SPECIAL_TEXTS[2]]:
        if pre == "tekken" and "ÉCOLE" in text:
            continue  # see test_tekken_capital_words below
        assert ours.encode(text) == hf(text)["input_ids"], text[:80]
    # transformers always matches special tokens: compare with parse_special (on the chat text only:
    # for overlapping special texts it takes the leftmost where llama.cpp takes the longest, and it
    # does not make "<|eot_id|>", typed normal, a control token as llama.cpp does)
    text = BPE_SPECIAL_TEXTS[0]
    assert ours.encode(text, parse_special=True) == hf(text)["input_ids"], text


def test_tekken_capital_words(make_gguf):
    """llama.cpp rewrites Tekken's \\p{Lu}/\\p{Ll} classes as "letter not a-z"/"letter not A-Z", so an
    all-capital word starting with a non-ASCII letter splits after that letter: " ÉCOLE" is no longer
    one piece and the vocabulary's token for it is not used. kiln follows llama.cpp (the golden ids
    agree); the model's own regex, which transformers uses, keeps the word whole."""
    path = make_gguf("bpe-tekken", bpe_metadata("tekken"))
    ours = Tokenizer.from_metadata(read_metadata(path))
    hf = hf_tokenizer(path)
    hf.backend_tokenizer.model.ignore_merges = True
    word = ours.vocab.ids["ĠÃīCOLE"]
    assert ours.pre_tokenize(" ÉCOLE über") == [" É", "COLE", " über"]
    assert hf(" ÉCOLE")["input_ids"] == [word] and word not in ours.encode(" ÉCOLE")
    assert ours.decode(ours.encode(" ÉCOLE")) == " ÉCOLE"
    llama3 = Tokenizer.from_metadata(bpe_metadata("llama-bpe"))
    assert llama3.encode(" ÉCOLE") == [word]


def test_ignore_merges_takes_whole_tokens():
    """Llama 3 style: a piece that is a token is not merged (the Llama 3 tokenizer.json says
    ignore_merges; llama.cpp does the same); GPT-2 style runs the merges."""
    llama3 = Tokenizer.from_metadata(bpe_metadata("llama-bpe"))
    gpt2 = Tokenizer.from_metadata(bpe_metadata("gpt-2"))
    word = llama3.vocab.ids["Ġunreachableword"]
    assert llama3.encode(" unreachableword") == [word]
    assert gpt2.encode(" unreachableword") != [word]
    assert gpt2.decode(gpt2.encode(" unreachableword")) == " unreachableword"


def test_smollm_pre_tokenizer_matches_its_tokenizer_json(wiki_part):
    """SmolLM's tokenizer.json: Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)],
    a different statement of llama.cpp's 'smollm' regexes."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    meta = bpe_metadata("smollm")
    ours = Tokenizer.from_metadata(meta)
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    ref = HFTokenizer(models.BPE(vocab=dict(ours.vocab.ids), merges=merges))
    ref.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    for text in [*TEXTS, wiki_part]:
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False).ids, text[:80]


def _sentencepiece(add_dummy_prefix: bool):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((DATA / "spm.model").read_bytes())
    proto.normalizer_spec.add_dummy_prefix = add_dummy_prefix
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


@pytest.mark.parametrize("prefix", [True, False], ids=["llama2-style", "gemma-style"])
def test_sentencepiece_bpe_matches_sentencepiece(prefix):
    sp = _sentencepiece(prefix)
    ours = Tokenizer.from_metadata(spm_metadata(**{"tokenizer.ggml.add_space_prefix": prefix}))
    text = WIKI.read_text(encoding="utf-8")
    for t in [*TEXTS, text]:
        assert ours.encode(t, add_special=False) == sp.encode(t), t[:80]
        assert ours.encode(t) == [sp.bos_id(), *sp.encode(t)]
    if not prefix:
        # sentencepiece matches its user-defined pieces whole. So does llama.cpp with parse_special, but
        # it makes <end_of_turn> a control token by its text (without parse_special it is plain text);
        # with the prefix, sentencepiece puts its "▁" before the first piece where llama.cpp puts it after
        t = "<start_of_turn>user\nHi<end_of_turn>"
        assert ours.encode(t, add_special=False, parse_special=True) == sp.encode(t)


def test_sentencepiece_bpe_matches_transformers(make_gguf):
    """transformers' LlamaTokenizer from the GGUF (merges rebuilt from the scores) agrees, except on
    texts that start with spaces: its Metaspace pre-tokenizer ('first' scheme) splits off the runs
    of spaces differently from SentencePiece, which kiln and llama.cpp follow."""
    path = make_gguf("spm-llama", spm_metadata())
    ours = Tokenizer.from_metadata(read_metadata(path))
    hf = hf_tokenizer(path)
    for t in TEXTS:
        if t.startswith(" "):
            continue
        assert ours.encode(t) == hf(t)["input_ids"], t


@pytest.mark.parametrize(
    "name",
    ["llama-spm", "phi-3", "gpt-2", "deepseek-coder", "deepseek-llm", "falcon", "mpt", "refact", "starcoder"],
)
def test_real_vocabularies(name, llama_cpp_vocabs):
    path = llama_cpp_vocabs / f"ggml-vocab-{name}.gguf"
    if not path.exists():
        pytest.skip(f"{path.name} is not in the mirror")
    tok = Tokenizer.from_metadata(read_metadata(path))
    texts = (
        (llama_cpp_vocabs / f"{path.name}.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    )
    expected = (llama_cpp_vocabs / f"{path.name}.out").read_text(encoding="utf-8").split("\n")
    assert len(texts) >= 40
    for text, ids in zip(texts, expected, strict=False):
        assert tok.encode(text, add_special=False) == [int(x) for x in ids.split()], text
