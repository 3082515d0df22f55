"""Tokenizers built from GGUF vocabularies against the tokenizers they were converted from
(transformers), and against the figures of reference/smollm2.md."""

from __future__ import annotations

import hashlib

import pytest
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer

from kiln.errors import TokenizerError
from kiln.gguf import GGUFFile
from kiln.tokenizer import ChatTemplate, IncrementalDecoder, Tokenizer
from kiln.tokenizer.pretokenizers import PRE_TOKENIZERS
from tests.conftest import WIKI, reference_value
from tests.tiny_models import make_tiny_model

TEXT = (
    "Hello world! It's 2024-11-24, 1234567 items.\n\n  Indented   spaces\tand tabs. "
    "Ünïcödé façade, 日本語のテキスト, emoji 🎉👍🏽 and مرحبا.  I'LL DO IT, you'd've.\r\n"
)
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there 🎉"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Count: 1 2 3"},
]


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2):
    with GGUFFile(smollm2) as f:
        return Tokenizer.from_metadata(f.metadata)


def test_smollm2_prompt(smollm2_tokenizer):
    assert smollm2_tokenizer.encode("The capital of France is") == [504, 3575, 282, 4649, 314]
    assert not smollm2_tokenizer.add_bos


def test_smollm2_wiki_matches_reference(smollm2_tokenizer):
    ids = smollm2_tokenizer.encode(WIKI.read_text(encoding="utf-8"), add_special=False)
    assert len(ids) == int(reference_value("wiki_token_count"))
    digest = hashlib.sha256(",".join(map(str, ids)).encode("ascii")).hexdigest()
    assert digest == reference_value("wiki_token_ids_sha256")


@pytest.mark.slow
def test_smollm2_wiki_matches_transformers_gguf_tokenizer(smollm2, smollm2_tokenizer):
    """transformers' GGUF loader drops SmolLM2's Digits pre-tokenizer (its tokenizer.json has
    Sequence[Digits(individual_digits), ByteLevel]); with it restored, the ids are identical.
    Unrestored, they differ only where a non-decimal numeral (\u00bd) follows a space."""
    hf = AutoTokenizer.from_pretrained(smollm2.parent, gguf_file=smollm2.name)
    text = WIKI.read_text(encoding="utf-8")
    ours = smollm2_tokenizer.encode(text, add_special=False)
    plain = hf(text, add_special_tokens=False)["input_ids"]
    assert len(plain) == len(ours)
    differ = [i for i, (a, b) in enumerate(zip(ours, plain, strict=True)) if a != b]
    assert len(differ) == 2 and smollm2_tokenizer.decode(ours[differ[0] : differ[1] + 1]) == " \u00bd"
    hf.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    assert ours == hf(text, add_special_tokens=False)["input_ids"]
    assert smollm2_tokenizer.encode(TEXT, add_special=False) == hf(TEXT, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module", params=["llama", "qwen2", "qwen3", "gemma3"])
def tiny(request, tmp_path_factory):
    """(kiln tokenizer from the GGUF, the transformers tokenizer it was converted from, pre name)."""
    d = tmp_path_factory.mktemp(request.param)
    _, path = make_tiny_model(request.param, d)
    with GGUFFile(path) as f:
        meta = dict(f.metadata)
    return Tokenizer.from_metadata(meta), AutoTokenizer.from_pretrained(d / f"{request.param}-hf"), meta


def test_tiny_vocab_matches_source_tokenizer(tiny):
    ours, hf, meta = tiny
    assert ours.encode(TEXT, add_special=False) == hf(TEXT, add_special_tokens=False)["input_ids"]
    assert ours.encode(TEXT) == hf(TEXT)["input_ids"]  # BOS as the file says
    assert ours.decode(ours.encode(TEXT, add_special=False)) == TEXT


def test_tiny_chat_template_and_special_tokens(tiny):
    ours, hf, meta = tiny
    messages = MESSAGES if meta["general.architecture"] != "gemma3" else MESSAGES[1:]
    template = ChatTemplate.from_metadata(meta)
    rendered = template.render(messages, add_generation_prompt=True)
    assert rendered == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours.encode(rendered, add_special=False, parse_special=True) == hf(rendered, add_special_tokens=False)["input_ids"]
    # without parse_special, control-token text is ordinary text
    specials = [t for t in hf.all_special_tokens if t in rendered]
    if specials:
        plain = ours.encode(specials[0], add_special=False)
        assert plain != [hf.convert_tokens_to_ids(specials[0])]


def test_incremental_decoder_holds_partial_utf8(tiny):
    ours, _, _ = tiny
    ids = ours.encode(TEXT, add_special=False)
    dec = IncrementalDecoder(ours)
    parts = [dec.feed(t) for t in ids] + [dec.flush()]
    assert "".join(parts) == TEXT
    assert all("\ufffd" not in p for p in parts)


def test_incremental_decoder_split_emoji(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok.encode("🎉", add_special=False)
    assert len(ids) > 1  # the emoji's four bytes are spread over several tokens
    dec = IncrementalDecoder(tok)
    assert [dec.feed(t) for t in ids[:-1]] == [""] * (len(ids) - 1)
    assert dec.feed(ids[-1]) == "🎉"


def test_smollm2_chat_template(smollm2, smollm2_tokenizer):
    with GGUFFile(smollm2) as f:
        template = ChatTemplate.from_metadata(f.metadata)
    hf = AutoTokenizer.from_pretrained(smollm2.parent, gguf_file=smollm2.name)
    for add in (True, False):
        assert template.render(MESSAGES, add_generation_prompt=add) == hf.apply_chat_template(
            MESSAGES, tokenize=False, add_generation_prompt=add
        )
    ids = smollm2_tokenizer.encode(template.render(MESSAGES), parse_special=True)
    assert ids[0] == 1 and 2 in ids  # <|im_start|> and <|im_end|> as single tokens
    assert smollm2_tokenizer.eog_ids >= {2}


def test_every_pre_tokenizer_builds(smollm2):
    with GGUFFile(smollm2) as f:
        meta = dict(f.metadata)
    for name in PRE_TOKENIZERS:
        tok = Tokenizer.from_metadata({**meta, "tokenizer.ggml.pre": name})
        assert tok.decode(tok.encode(TEXT, add_special=False)) == TEXT, name


def test_deepseek_v3_pre_tokenizer(smollm2):
    with GGUFFile(smollm2) as f:
        meta = {**f.metadata, "tokenizer.ggml.pre": "deepseek-v3"}
    tok = Tokenizer.from_metadata(meta)
    assert tok.pre_tokenize("1234567 日本語abc, x") == ["123", "456", "7", " ", "日本語", "abc", ",", " x"]
    ids = tok.encode("1234567 日本語abc, x", add_special=False)
    assert tok.decode(ids) == "1234567 日本語abc, x"


def test_errors():
    with pytest.raises(TokenizerError, match="unknown pre-tokenizer 'nope'"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "nope", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(TokenizerError, match="tokenizer model 'rwkv'"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "rwkv", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(TokenizerError, match="no vocabulary"):
        Tokenizer.from_metadata({})
    with pytest.raises(TokenizerError, match="no chat template"):
        ChatTemplate.from_metadata({"tokenizer.ggml.tokens": ["a"]})
