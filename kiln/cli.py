"""`kiln SUBCOMMAND ...`: parse ik_llama.cpp-style flags into `Options` and run a tool.

Errors of the `KilnError` family are printed as one line, without a
traceback, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields

from . import tools
from .errors import KilnError
from .runtime.options import Options
from .tools.flags import add_model_flags, add_sampling_flags


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; with `command`, only that tool's module is imported to
    declare its flags (the others keep their name and help line)."""
    parser = argparse.ArgumentParser(prog="kiln", description="Run and cook GGUF language models (ik_llama.cpp's flags).", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="continue a prompt", allow_abbrev=False)
    add_model_flags(run)
    add_sampling_flags(run)
    run.add_argument("-p", "--prompt", dest="prompt")
    run.add_argument("-f", "--file", dest="file", help="read the prompt from a file")

    chat = sub.add_parser("chat", help="interactive chat with the model's template", allow_abbrev=False)
    add_model_flags(chat)
    add_sampling_flags(chat)
    chat.add_argument("-sys", "--system-prompt", dest="system_prompt")
    chat.add_argument("--chat-template", dest="chat_template", help="a Jinja chat template to use instead of the file's")

    dump = sub.add_parser("dump", help="print a GGUF file's metadata and tensor table", allow_abbrev=False)
    dump.add_argument("inputs", nargs=1, metavar="FILE")
    dump.add_argument("--json", dest="json", action="store_true", help="print JSON")

    for name, help_text in tools.ARGUMENT_TOOLS.items():
        p = sub.add_parser(name, help=help_text, allow_abbrev=False)
        if command in (None, name):  # only the tool being run is imported (quantize must not load torch)
            tools.tool_module(name).add_arguments(p, add_model_flags)
    return parser


_OPTION_FIELDS = {f.name for f in fields(Options)}


# flags whose value may start with "-" and hold a comma ("-ser -1,0"), which argparse would
# otherwise take for another flag
_DASH_VALUE_FLAGS = ("-ser", "--smart-expert-reduction")


def _join_dash_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if a in _DASH_VALUE_FLAGS and nxt.startswith("-") and nxt[1:2].isdigit():
            out.append(f"{a}={nxt}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def parse_command(argv: list[str]) -> tuple[str, Options, argparse.Namespace]:
    """(command, Options from ik_llama.cpp's flags, the tool's own arguments)."""
    argv = _join_dash_values(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    ns = vars(build_parser(command).parse_args(argv))
    command = ns.pop("command")
    if getattr(tools.tool_module(command), "PARSES_OWN_FLAGS", False):
        return command, Options(), argparse.Namespace(**ns)
    if "flash_attn" in ns:
        ns["flash_attn"] = str(ns["flash_attn"]).lower() in ("on", "1", "auto", "true")
    own = {k: ns.pop(k) for k in list(ns) if k not in _OPTION_FIELDS}
    return command, Options(**ns), argparse.Namespace(**own)


def parse_options(argv: list[str]) -> tuple[str, Options]:
    command, options, _ = parse_command(argv)
    return command, options


class _StderrHandler(logging.Handler):
    """Log lines (model loading, KV cache size) to the current sys.stderr, like ik_llama.cpp's."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def _log_to_stderr() -> None:
    root = logging.getLogger("kiln")
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        root.addHandler(_StderrHandler())
    root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command, options, args = parse_command(argv)
    _log_to_stderr()
    try:
        options.validate()
        ignored = options.ignored_flags()
        if ignored:
            print(f"kiln: note: {' '.join(ignored)} accepted but not used by this version (CPU only)", file=sys.stderr)
        return tools.run_tool(command, options, args) or 0
    except KilnError as e:
        print(f"kiln {command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
