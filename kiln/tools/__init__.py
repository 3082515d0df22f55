"""One module per subcommand.

The first tools take everything from `Options` (`main(options) -> int`). Tools in
`ARGUMENT_TOOLS` also declare their own flags: `add_arguments(parser, add_model_flags)`
adds them (calling `add_model_flags(parser)` for the shared `-m -c -b ...` group when the
tool loads a model), and `main(options, args) -> int` receives the ik_llama.cpp flags in
`options` and the tool's own in `args`. A tool that sets `PARSES_OWN_FLAGS = True` (bench:
every flag is a comma list) gets default `Options` and all parsed flags in `args`.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from ..runtime.options import Options

TOOLS = {
    "run": "run",
    "chat": "chat",
    "dump": "dump",
    "convert": "convert_cli",
    "perplexity": "perplexity",
    "imatrix": "imatrix",
    "bench": "bench",
    "sweep-bench": "sweep_bench",
    "plot": "plot",
    "quantize": "quantize",
    "split": "split",
    "serve": "serve",
    "server": "serve",
}

# subcommand -> one-line help; these modules define add_arguments() and main(options, args)
ARGUMENT_TOOLS = {
    "convert": "convert a Hugging Face checkpoint to GGUF (f32, f16, bf16, q8_0; --split-max-size)",
    "perplexity": "perplexity (and KL-divergence) of a model over a text file, as llama-perplexity",
    "imatrix": "collect an importance matrix over a text file, as llama-imatrix",
    "bench": "llama-bench: prompt processing and generation speed, sweeping comma-separated flags",
    "sweep-bench": "llama-sweep-bench: speed as the KV cache fills up to -c",
    "plot": "plot perplexity against size (Pareto front) or sweep-bench runs",
    "quantize": "quantize a GGUF model (llama-quantize): file types, --custom-q recipes, imatrix, --dry-run",
    "split": "split a GGUF model into shards or merge shards (llama-gguf-split): --split-max-size, --merge",
    "serve": "OpenAI-compatible HTTP server (llama-server): parallel slots, streaming, prompt cache, chat page",
    "server": "alias of serve",
}


def tool_module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{TOOLS[name]}")


def run_tool(name: str, options: Options, args: argparse.Namespace | None = None) -> int:
    module = tool_module(name)
    if name in ARGUMENT_TOOLS:
        return module.main(options, args if args is not None else argparse.Namespace())
    return module.main(options)
