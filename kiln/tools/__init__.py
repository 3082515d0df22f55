"""One module per subcommand; each has `main(options) -> int`."""

from __future__ import annotations

import importlib

from ..runtime.options import Options

TOOLS = {
    "run": "run",
    "chat": "chat",
    "dump": "dump",
    "convert": "convert_cli",
}


def run_tool(name: str, options: Options) -> int:
    module = importlib.import_module(f"{__name__}.{TOOLS[name]}")
    return module.main(options)
