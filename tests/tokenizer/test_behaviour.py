"""Special tokens, decoding, streaming and errors, on the small test vocabularies (vocabs.py)."""

from __future__ import annotations

import pytest

from kiln.errors import TokenizerError
from kiln.tokenizer import IncrementalDecoder, Tokenizer
from kiln.tokenizer.pretokenizers import PRE_TOKENIZERS
from kiln.tokenizer.vocab import CONTROL, UNUSED, USER_DEFINED

from .vocabs import TEXTS, bpe_metadata, spm_metadata


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return Tokenizer.from_metadata(bpe_metadata("llama-bpe"))


@pytest.fixture(scope="module")
def spm() -> Tokenizer:
    return Tokenizer.from_metadata(spm_metadata())


def test_special_tokens_by_kind(bpe):
    ids = bpe.vocab.ids
    im_start, think, unused = ids["<|im_start|>"], ids["<think>"], ids["<unused0>"]
    text = "<|im_start|>a<think>b<unused0>"
    with_special = bpe.encode(text, add_special=False, parse_special=True)
    plain = bpe.encode(text, add_special=False)
    assert with_special[0] == im_start and think in with_special and unused not in with_special
    assert im_start not in plain and think in plain  # user-defined tokens are matched without parse_special
    assert bpe.decode(plain) == text


def test_longest_special_text_wins(bpe):
    """llama.cpp cuts special texts longest first: in "[A]]x", "A]]x" wins over "[A]" that starts earlier."""
    ids = bpe.vocab.ids
    out = bpe.encode("[A]]x", add_special=False, parse_special=True)
    assert out == [*bpe.encode("[", add_special=False), ids["A]]x"]]
    assert bpe.encode("[A]", add_special=False, parse_special=True) == [ids["[A]"]]


def test_pre_tokenizers_split_as_llama_cpp():
    """Readable cases of what the golden ids check everywhere."""
    text = "1234567 日本語abc, x"
    split = {
        "deepseek-v3": ["123", "456", "7", " ", "日本語", "abc", ",", " x"],
        "default": ["123", "456", "7", " 日本語abc", ",", " x"],
        "llama-bpe": ["123", "456", "7", " 日本語abc", ",", " x"],
        "qwen2": ["1", "2", "3", "4", "5", "6", "7", " 日本語abc", ",", " x"],
        "gpt-2": ["1234567", " 日本語abc", ",", " x"],
    }
    for pre, pieces in split.items():
        assert Tokenizer.from_metadata(bpe_metadata(pre)).pre_tokenize(text) == pieces, pre


def test_token_types_fixed_as_llama_cpp_does(bpe):
    ids, types = bpe.vocab.ids, bpe.vocab.types
    assert types[ids["<|eot_id|>"]] == CONTROL  # typed normal in the file; an end-of-turn text
    assert types[ids["<think>"]] == USER_DEFINED and types[ids["<unused0>"]] == UNUSED
    meta = bpe_metadata("gpt-2")
    meta["tokenizer.ggml.tokens"] = [
        *meta["tokenizer.ggml.tokens"],
        "<|channel|>",
        "",
        "<|return|>",
        "<|call|>",
        "<|end|>",
    ]
    meta["tokenizer.ggml.token_type"] = [*meta["tokenizer.ggml.token_type"], 3, 3, 3, 3, 3]
    tok = Tokenizer.from_metadata(meta)
    n = len(meta["tokenizer.ggml.tokens"])
    assert tok.token_type(n - 5) == USER_DEFINED  # gpt-oss: printed and matched like user-defined
    assert tok.token_text(n - 4) == f"[EMPTY_{n - 4}]"
    assert tok.token_type(n - 1) == USER_DEFINED  # <|end|> with <|return|> and <|call|>: not an end
    assert tok.token_to_piece(n - 5, special=False) == b"<|channel|>"


def test_eog_ids(bpe):
    ids = bpe.vocab.ids
    assert bpe.eog_ids >= {ids["<|endoftext|>"], ids["<|im_end|>"], ids["<|eot_id|>"]}
    assert ids["<|im_start|>"] not in bpe.eog_ids
    assert bpe.is_eog(ids["<|im_end|>"])


def test_defaults_when_the_file_is_silent():
    spm = Tokenizer.from_metadata(
        spm_metadata(**{"tokenizer.ggml.bos_token_id": None, "tokenizer.ggml.eos_token_id": None})
    )
    assert (spm.bos_id, spm.eos_id, spm.add_bos, spm.add_eos, spm.vocab.add_space_prefix) == (
        1,
        2,
        True,
        False,
        True,
    )
    assert 2 in spm.eog_ids
    meta = bpe_metadata("llama-bpe", **{"tokenizer.ggml.add_bos_token": None})
    assert Tokenizer.from_metadata(meta).add_bos  # the Llama 3 pre-tokenizer adds BOS by default
    meta = bpe_metadata("qwen2", **{"tokenizer.ggml.add_bos_token": None})
    assert not Tokenizer.from_metadata(meta).add_bos
    gpt2 = Tokenizer.from_metadata(bpe_metadata("gpt-2", **{"tokenizer.ggml.add_eos_token": True}))
    assert gpt2.encode("hi")[-1] == gpt2.eos_id


@pytest.mark.parametrize("pre", sorted(PRE_TOKENIZERS))
def test_round_trip_every_pre_tokenizer(pre):
    tok = Tokenizer.from_metadata(bpe_metadata(pre))
    for t in TEXTS:
        assert tok.decode(tok.encode(t, add_special=False), clean_spaces=False) == t, t


@pytest.mark.parametrize("prefix", [True, False])
def test_round_trip_sentencepiece(prefix):
    tok = Tokenizer.from_metadata(spm_metadata(**{"tokenizer.ggml.add_space_prefix": prefix}))
    for t in TEXTS:
        ids = tok.encode(t, add_special=False)
        assert tok.decode(ids) == t, t  # the added leading space is removed again
        assert (
            tok.decode(tok.encode(t)) == "<s>" + (" " if prefix else "") + t
        )  # llama.cpp: BOS takes the strip
        assert tok.decode(tok.encode(t), skip_special=True) == (" " if prefix else "") + t
    byte_tokens = tok.encode("😶‍🌫️", add_special=False)
    assert all(tok.token_text(i).startswith("<0x") for i in byte_tokens[1:])  # not in the vocabulary: bytes


def test_clean_spaces():
    gpt2 = Tokenizer.from_metadata(bpe_metadata("gpt-2"))  # llama.cpp cleans spaces for this one
    qwen = Tokenizer.from_metadata(bpe_metadata("qwen2"))  # ... not for this one
    text = "Hello , world ! Is it ? I 'm sure it 's fine . They 've gone , we 'll see , ' quoted ' end"
    cleaned = "Hello, world! Is it? I'm sure it's fine. They've gone, we 'll see,'quoted'end"
    assert gpt2.decode(gpt2.encode(text)) == cleaned
    assert gpt2.decode(gpt2.encode(text), clean_spaces=False) == text
    assert qwen.decode(qwen.encode(text)) == text


def test_token_to_piece(bpe, spm):
    ids = bpe.vocab.ids
    assert bpe.token_to_piece(ids["Ġthe"]) == b" the"
    assert bpe.token_to_piece(ids["<|im_end|>"]) == b"<|im_end|>"
    assert bpe.token_to_piece(ids["<|im_end|>"], special=False) == b""
    assert bpe.token_to_piece(ids["<unused0>"]) == b""  # unused tokens print nothing, as in llama.cpp
    assert bpe.token_to_piece(ids["<think>"], special=False) == b"<think>"
    assert spm.token_to_piece(spm.vocab.ids["<0xF0>"]) == b"\xf0"
    assert spm.token_to_piece(spm.vocab.ids["▁the"]) == b" the"
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        bpe.token_to_piece(bpe.vocab_size)


def test_incremental_decoder(bpe, spm):
    for tok in (bpe, spm):
        for t in TEXTS:
            ids = tok.encode(t, add_special=False)
            dec = IncrementalDecoder(tok)
            parts = [dec.feed(i) for i in ids] + [dec.flush()]
            expected = b"".join(tok.token_to_piece(i) for i in ids).decode("utf-8")  # no space stripped
            assert "".join(parts) == expected
            assert all("\ufffd" not in p for p in parts)
    emoji = spm.encode("🎉", add_special=False)  # four byte tokens after "▁"
    dec = IncrementalDecoder(spm)
    assert [dec.feed(i) for i in emoji] == [" ", "", "", "", "🎉"]
    dec.feed(spm.vocab.ids["<0xF0>"])
    assert dec.flush() == "\ufffd"  # an incomplete character at the end of the stream
    assert dec.feed(spm.vocab.ids["<0x41>"]) == "A"  # the decoder starts afresh


def test_errors():
    with pytest.raises(TokenizerError, match="unknown pre-tokenizer 'nope'.*kiln knows: .*deepseek-v3"):
        Tokenizer.from_metadata(bpe_metadata("nope"))
    with pytest.raises(TokenizerError, match="'kimi-k2'.*hand-written"):
        Tokenizer.from_metadata(bpe_metadata("kimi-k2"))
    with pytest.raises(TokenizerError, match="tokenizer model 'rwkv'"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "rwkv", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(TokenizerError, match="no vocabulary"):
        Tokenizer.from_metadata({})
    with pytest.raises(TokenizerError, match="vocabulary is empty"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": []})
    with pytest.raises(TokenizerError, match="no merges"):
        Tokenizer.from_metadata(bpe_metadata("gpt-2", **{"tokenizer.ggml.merges": None}))
    meta = bpe_metadata("gpt-2")
    meta["tokenizer.ggml.token_type"] = meta["tokenizer.ggml.token_type"][:10]
    with pytest.raises(TokenizerError, match="inconsistent"):
        Tokenizer.from_metadata(meta)
    no_bos = Tokenizer.from_metadata(
        bpe_metadata(
            "chatglm-bpe", **{"tokenizer.ggml.bos_token_id": None, "tokenizer.ggml.add_bos_token": True}
        )
    )
    with pytest.raises(TokenizerError, match="asks for a BOS token.*has none"):
        no_bos.encode("hi")
    assert no_bos.encode("hi", add_special=False)
    with pytest.raises(TokenizerError, match="needs a str"):
        no_bos.encode(b"hi")
