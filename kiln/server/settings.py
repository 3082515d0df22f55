"""`ServerSettings`: the server's own flags (llama-server's), beside the engine's `Options`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REASONING_FORMATS = ("none", "auto", "deepseek", "deepseek-legacy")


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    alias: str | None = None  # --alias: the model id clients use; default: the model path
    n_parallel: int = 1  # --parallel: slots; each gets -c / N tokens of context
    api_keys: list[str] = field(default_factory=list)
    chat_template: str | None = None  # --chat-template-file contents, overriding the model's
    webui: bool = True
    slot_save_path: Path | None = None
    reasoning_format: str = "auto"
    metrics: bool = True
    slots_endpoint: bool = True
