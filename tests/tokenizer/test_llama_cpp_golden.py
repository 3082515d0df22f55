"""kiln's ids against ik_llama.cpp's own (data/llama_cpp_golden.json) for every pre-tokenizer name kiln
knows and for SentencePiece files in the Llama 2, Gemma and Phi-3 styles: varied texts, special
tokens with and without parse_special, BOS/EOS, and a 60 000-character slice of wiki.test.raw."""

from __future__ import annotations

import pytest

from kiln.tokenizer import Tokenizer
from kiln.tokenizer.pretokenizers import PRE_TOKENIZERS

from .conftest import read_metadata
from .llama_cpp_golden import FLAGS, VARIANTS, cases, ids_digest, load_golden, metadata, wiki_slice

GOLDEN = load_golden()


def test_every_pre_tokenizer_has_golden_ids():
    assert set(VARIANTS) == set(GOLDEN)
    assert {f"bpe-{p}" for p in PRE_TOKENIZERS} - set(VARIANTS) == {"bpe-gpt2"}  # an alias llama.cpp rejects


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ids_match_ik_llama_cpp(variant):
    tok = Tokenizer.from_metadata(metadata(variant))
    golden = GOLDEN[variant]
    for case, text in cases(variant):
        for add, parse in FLAGS:
            key = f"{case}.{int(add)}{int(parse)}"
            assert tok.encode(text, add_special=add, parse_special=parse) == golden[key], (key, text)
    ids = tok.encode(wiki_slice(), add_special=False)
    assert {"n": len(ids), "sha256": ids_digest(ids)} == golden["wiki.00"]


def test_golden_variants_read_back_from_gguf(make_gguf):
    """The same ids when the metadata comes through a GGUF file written by the PyPI gguf package and
    read by kiln.gguf (types, ids and flags survive the file)."""
    for variant in ("bpe-llama-bpe", "bpe-gpt-2-bos-eos", "spm-phi3"):
        path = make_gguf(f"golden-{variant}", VARIANTS[variant][0](), general_name=VARIANTS[variant][1])
        tok = Tokenizer.from_metadata(read_metadata(path))
        for case, text in cases(variant):
            assert tok.encode(text, parse_special=True) == GOLDEN[variant][f"{case}.11"], (variant, case)
