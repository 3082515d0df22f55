"""`kiln run -p PROMPT`: print the model's continuation of a prompt, streamed token by token."""

from __future__ import annotations

import sys

from ..runtime import Options
from ..tokenizer import IncrementalDecoder
from .common import load_engine, prompt_text


def main(options: Options) -> int:
    text = prompt_text(options)
    engine, tokenizer = load_engine(options)
    try:
        prompt = tokenizer.encode(text, add_special=True, parse_special=True)
        decoder = IncrementalDecoder(tokenizer)
        for token in engine.generate(prompt):
            sys.stdout.write(decoder.feed(token))
            sys.stdout.flush()
        sys.stdout.write(decoder.flush())
        sys.stdout.write("\n")
        sys.stdout.flush()
    finally:
        engine.close()
    return 0
