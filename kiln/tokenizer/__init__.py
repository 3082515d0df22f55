"""Tokenizers built from a GGUF file's vocabulary, the way llama.cpp builds them, and chat templates.

    tok = Tokenizer.from_metadata(GGUFFile(path).metadata)
    ids = tok.encode("Hello", add_special=True, parse_special=False)
    text = tok.decode(ids)
    prompt = ChatTemplate.from_metadata(metadata).render(messages, add_generation_prompt=True)

Modules: `vocab` (the metadata, llama.cpp's defaults and fixes), `pretokenizers`
(the regexes of each `tokenizer.ggml.pre`), `special` (cutting out special
tokens), `bpe` (byte-level BPE), `spm` (SentencePiece BPE), `tokenizer`
(encode/decode), `stream` (incremental decoding), `chat` (chat templates).
"""

from .chat import ChatTemplate, render_chat_template
from .stream import IncrementalDecoder
from .tokenizer import Tokenizer
from .vocab import Vocabulary

__all__ = ["ChatTemplate", "IncrementalDecoder", "Tokenizer", "Vocabulary", "render_chat_template"]
