"""What several tools share: loading the engine with its tokenizer, reading the prompt."""

from __future__ import annotations

from pathlib import Path

from ..errors import KilnError
from ..runtime import Engine, Options
from ..tokenizer import Tokenizer


def load_engine(options: Options) -> tuple[Engine, Tokenizer]:
    engine = Engine.load(options.model, options)
    try:
        tokenizer = Tokenizer.from_metadata(engine.metadata)
    except BaseException:
        engine.close()
        raise
    return engine, tokenizer


def prompt_text(options: Options) -> str:
    if options.prompt is not None and options.file is not None:
        raise KilnError("give the prompt either with -p or with -f, not both")
    if options.file is not None:
        path = Path(options.file)
        if not path.is_file():
            raise KilnError(f"{path}: no such prompt file (-f)")
        return path.read_text(encoding="utf-8")
    if options.prompt is None:
        raise KilnError("no prompt: give one with -p TEXT or -f FILE")
    return options.prompt
