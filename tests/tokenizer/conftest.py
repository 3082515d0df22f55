"""Fixtures of the tokenizer tests: the default model's vocabulary, GGUF files written with the
PyPI `gguf` package, and transformers tokenizers loaded from them (the outside oracle)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from kiln.gguf import GGUFFile
from kiln.tokenizer import Tokenizer

from .vocabs import write_gguf

IK_MIRROR = Path("/work/.mirror/ikawrakow+ik_llama.cpp/repo")


def read_metadata(path: Path) -> dict:
    """A GGUF file's metadata, as kiln's reader gives it."""
    with GGUFFile(path) as f:
        return dict(f.metadata)


def hf_tokenizer(path: Path):
    """transformers' tokenizer built from a GGUF file (its GGUF loader: the outside oracle)."""
    from transformers import AutoTokenizer

    logging.getLogger("transformers").setLevel(logging.ERROR)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@pytest.fixture(scope="session")
def gguf_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vocab-gguf")


@pytest.fixture(scope="session")
def make_gguf(gguf_dir):
    """make_gguf(name, metadata) -> path of a vocabulary-only GGUF file (written once per name)."""

    def make(name: str, metadata: dict, general_name: str = "kiln-test-vocab") -> Path:
        path = gguf_dir / f"{name}.gguf"
        if not path.exists():
            write_gguf(path, metadata, name=general_name)
        return path

    return make


@pytest.fixture(scope="session")
def smollm2_meta(smollm2) -> dict:
    return read_metadata(smollm2)


@pytest.fixture(scope="session")
def smollm2_tok(smollm2_meta) -> Tokenizer:
    return Tokenizer.from_metadata(smollm2_meta)


@pytest.fixture(scope="session")
def smollm2_hf(smollm2):
    return hf_tokenizer(smollm2)


@pytest.fixture(scope="session")
def llama_cpp_vocabs(tmp_path_factory) -> Path:
    """llama.cpp's own test vocabularies (models/ggml-vocab-*.gguf with .inp texts and .out ids, made by
    llama.cpp from the Hugging Face tokenizers), taken from the ik_llama.cpp mirror when it is here."""
    if not (IK_MIRROR / "HEAD").exists() and not (IK_MIRROR / ".git").exists():
        pytest.skip(
            f"ik_llama.cpp mirror not found at {IK_MIRROR} (its models/ggml-vocab-*.gguf are the oracle)"
        )
    out = tmp_path_factory.mktemp("ggml-vocab")
    listing = subprocess.run(
        ["git", "-C", str(IK_MIRROR), "ls-tree", "--name-only", "HEAD", "models/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listing:
        if name.startswith("models/ggml-vocab-"):
            blob = subprocess.run(["git", "-C", str(IK_MIRROR), "show", f"HEAD:{name}"], capture_output=True)
            if blob.returncode == 0 and blob.stdout:
                (out / Path(name).name).write_bytes(blob.stdout)
    return out
