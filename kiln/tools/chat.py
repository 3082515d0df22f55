"""`kiln chat`: an interactive chat in the terminal, using the model's chat template.

Each turn re-renders the whole conversation with the template; the engine
re-uses the KV cache for the part that has not changed, so only the new
message is evaluated. `/reset` starts over, `/exit` or end of input quits.
"""

from __future__ import annotations

import sys

from ..runtime import Options
from ..tokenizer import IncrementalDecoder
from ..tokenizer.chat import ChatTemplate
from .common import load_engine


def main(options: Options) -> int:
    engine, tokenizer = load_engine(options)
    try:
        template = ChatTemplate.from_metadata(engine.metadata, override=options.chat_template)
        system = [{"role": "system", "content": options.system_prompt}] if options.system_prompt else []
        messages = list(system)
        interactive = sys.stdin.isatty()
        if interactive:
            print("kiln chat: type a message; /reset starts over, /exit (or Ctrl-D) quits.", file=sys.stderr)
        while True:
            if interactive:
                sys.stdout.write("> ")
                sys.stdout.flush()
            line = sys.stdin.readline()
            if not line:
                break
            text = line.rstrip("\n")
            if text.strip() == "/exit":
                break
            if text.strip() == "/reset":
                messages = list(system)
                engine.reset(0)
                continue
            if not text.strip():
                continue
            messages.append({"role": "user", "content": text})
            prompt = template.render(messages, add_generation_prompt=True)
            ids = tokenizer.encode(prompt, add_special=True, parse_special=True)
            decoder = IncrementalDecoder(tokenizer)
            reply = []
            for token in engine.generate(ids):
                piece = decoder.feed(token)
                reply.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
            tail = decoder.flush()
            reply.append(tail)
            sys.stdout.write(tail + "\n")
            sys.stdout.flush()
            messages.append({"role": "assistant", "content": "".join(reply)})
    finally:
        engine.close()
    return 0
