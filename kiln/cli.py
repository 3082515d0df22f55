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


def _add_model_flags(p: argparse.ArgumentParser, model_required: bool = False) -> None:
    g = p.add_argument_group("model and context")
    g.add_argument("-m", "--model", dest="model", required=model_required, help="GGUF file (first part of a split set is fine); default: SmolLM2-135M-Instruct Q4_1")
    g.add_argument("-c", "--ctx-size", dest="ctx_size", type=int, default=0, help="context size in tokens (0: the model's training context)")
    g.add_argument("-b", "--batch-size", dest="batch_size", type=int, default=2048, help="logical batch size for prompt processing")
    g.add_argument("-ub", "--ubatch-size", dest="ubatch_size", type=int, default=512, help="physical batch size for prompt processing")
    g.add_argument("-t", "--threads", dest="threads", type=int, default=0, help="CPU threads (0: all cores)")
    g.add_argument("-tb", "--threads-batch", dest="threads_batch", type=int, default=0, help="CPU threads for batches")
    g.add_argument("-ctk", "--cache-type-k", dest="cache_type_k", default="f16", help="K cache type (the latent cache with MLA): f32, f16, bf16, q8_0")
    g.add_argument("-ctv", "--cache-type-v", dest="cache_type_v", default="f16", help="V cache type: f32, f16, bf16, q8_0")
    g.add_argument("--no-mmap", dest="no_mmap", action="store_true", help="read the weights into memory instead of mapping the file")
    m = p.add_argument_group("attention and experts")
    m.add_argument("-mla", "--mla-use", dest="mla", type=int, default=3, help="MLA mode for DeepSeek models: 0, 1, 2, 3 (default 3; see docs/moe.md)")
    m.add_argument("-amb", "--attention-max-batch", dest="attn_max_batch", type=int, default=256, help="max MiB of K*Q per attention chunk (0: no limit)")
    m.add_argument("-fmoe", "--fused-moe", dest="fused_moe", action="store_true", default=True, help="fuse the experts' up and gate products (default on)")
    m.add_argument("-no-fmoe", "--no-fused-moe", dest="fused_moe", action="store_false")
    m.add_argument("-ser", "--smart-expert-reduction", dest="ser", help="K,T: keep at least K experts, skip the others scoring below T x the best")
    m.add_argument("-fa", "--flash-attn", dest="flash_attn", nargs="?", const="on", default="on", help="accepted; kiln's attention is always exact")
    c = p.add_argument_group("accepted for ik_llama.cpp compatibility (not acted on by this version)")
    c.add_argument("-ngl", "--gpu-layers", "--n-gpu-layers", dest="n_gpu_layers", type=int, default=0)
    c.add_argument("-ot", "--override-tensor", dest="override_tensor", action="append", default=[])
    c.add_argument("-ts", "--tensor-split", dest="tensor_split")
    c.add_argument("-mg", "--main-gpu", dest="main_gpu", type=int, default=0)
    c.add_argument("-sm", "--split-mode", dest="split_mode")
    c.add_argument("-rtr", "--run-time-repack", dest="run_time_repack", action="store_true")
    c.add_argument("-op", "--offload-policy", dest="offload_policy", action="append", default=[])


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("-n", "--n-predict", dest="n_predict", type=int, default=-1, help="tokens to generate (-1: until end of generation)")
    g.add_argument("-s", "--seed", dest="seed", type=int, default=-1, help="random seed (-1: random)")
    g.add_argument("--temp", dest="temp", type=float, default=0.8, help="temperature (0: greedy)")
    g.add_argument("--top-k", dest="top_k", type=int, default=40)
    g.add_argument("--top-p", dest="top_p", type=float, default=0.95)
    g.add_argument("--min-p", dest="min_p", type=float, default=0.05)
    g.add_argument("--repeat-penalty", dest="repeat_penalty", type=float, default=1.0)
    g.add_argument("--repeat-last-n", dest="repeat_last_n", type=int, default=64)
    g.add_argument("--ignore-eos", dest="ignore_eos", action="store_true")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; with `command`, only that tool's module is imported to
    declare its flags (the others keep their name and help line)."""
    parser = argparse.ArgumentParser(prog="kiln", description="Run and cook GGUF language models (ik_llama.cpp's flags).", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="continue a prompt", allow_abbrev=False)
    _add_model_flags(run)
    _add_sampling_flags(run)
    run.add_argument("-p", "--prompt", dest="prompt")
    run.add_argument("-f", "--file", dest="file", help="read the prompt from a file")

    chat = sub.add_parser("chat", help="interactive chat with the model's template", allow_abbrev=False)
    _add_model_flags(chat)
    _add_sampling_flags(chat)
    chat.add_argument("-sys", "--system-prompt", dest="system_prompt")
    chat.add_argument("--chat-template", dest="chat_template", help="a Jinja chat template to use instead of the file's")

    dump = sub.add_parser("dump", help="print a GGUF file's metadata and tensor table", allow_abbrev=False)
    dump.add_argument("inputs", nargs=1, metavar="FILE")
    dump.add_argument("--json", dest="json", action="store_true", help="print JSON")

    for name, help_text in tools.ARGUMENT_TOOLS.items():
        p = sub.add_parser(name, help=help_text, allow_abbrev=False)
        if command in (None, name):  # only the tool being run is imported (quantize must not load torch)
            tools.tool_module(name).add_arguments(p, _add_model_flags)
    return parser


_OPTION_FIELDS = {f.name for f in fields(Options)}


def parse_command(argv: list[str]) -> tuple[str, Options, argparse.Namespace]:
    """(command, Options from ik_llama.cpp's flags, the tool's own arguments)."""
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
