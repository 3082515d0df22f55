"""Vocabularies written by `kiln convert` (tests/tiny_models.py: Llama 3 and Qwen style byte-level BPE,
Gemma style SentencePiece) against the transformers tokenizers they were converted from."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from kiln.tokenizer import ChatTemplate, IncrementalDecoder, Tokenizer
from tests.tiny_models import make_tiny_model

from .conftest import read_metadata
from .vocabs import TEXTS

TEXT = "".join(TEXTS[:6])
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there 🎉"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Count: 1 2 3"},
]


@pytest.fixture(scope="module", params=["llama", "qwen2", "qwen3", "gemma3"])
def tiny(request, tmp_path_factory):
    """(kiln tokenizer from the GGUF, the transformers tokenizer it was converted from, metadata)."""
    d = tmp_path_factory.mktemp(request.param)
    _, path = make_tiny_model(request.param, d)
    meta = read_metadata(path)
    return Tokenizer.from_metadata(meta), AutoTokenizer.from_pretrained(d / f"{request.param}-hf"), meta


def test_vocab_matches_source_tokenizer(tiny):
    ours, hf, _ = tiny
    for text in [TEXT, *TEXTS]:
        assert ours.encode(text, add_special=False) == hf(text, add_special_tokens=False)["input_ids"], text
        assert ours.encode(text) == hf(text)["input_ids"], text  # BOS as the file says
    assert ours.decode(ours.encode(TEXT, add_special=False), clean_spaces=False) == TEXT


def test_chat_template_and_special_tokens(tiny):
    ours, hf, meta = tiny
    messages = MESSAGES if meta["general.architecture"] != "gemma3" else MESSAGES[1:]
    rendered = ChatTemplate.from_metadata(meta).render(messages, add_generation_prompt=True)
    assert rendered == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert (
        ours.encode(rendered, add_special=False, parse_special=True)
        == hf(rendered, add_special_tokens=False)["input_ids"]
    )
    specials = [t for t in hf.all_special_tokens if t in rendered]
    if specials:  # without parse_special, control-token text is ordinary text
        assert ours.encode(specials[0], add_special=False) != [hf.convert_tokens_to_ids(specials[0])]


def test_incremental_decoder(tiny):
    ours, _, _ = tiny
    ids = ours.encode(TEXT, add_special=False)
    dec = IncrementalDecoder(ours)
    parts = [dec.feed(t) for t in ids] + [dec.flush()]
    assert "".join(parts) == b"".join(ours.token_to_piece(t) for t in ids).decode("utf-8")
    assert all("\ufffd" not in p for p in parts)
