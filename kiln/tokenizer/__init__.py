"""Tokenizers built from a GGUF file's vocabulary (byte-level BPE and SentencePiece BPE),
streaming detokenization, and chat templates."""

from .chat import ChatTemplate
from .tokenizer import IncrementalDecoder, Tokenizer
from .vocab import Vocabulary

__all__ = ["ChatTemplate", "IncrementalDecoder", "Tokenizer", "Vocabulary"]
