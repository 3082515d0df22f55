"""`kiln serve` (alias `kiln server`): llama-server's OpenAI-compatible HTTP server.

    kiln serve -m model.gguf -c 8192 --parallel 4 --port 8080 --api-key KEY

The context `-c` is split into `--parallel` slots (as llama-server splits it); the
sampling flags are the defaults of requests that do not set their own. See docs/server.md.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from ..errors import OptionError
from ..runtime import Options
from ..server.settings import REASONING_FORMATS, ServerSettings
from .common import load_engine
from .flags import add_sampling_flags


def add_arguments(parser: argparse.ArgumentParser, add_model_flags) -> None:
    add_model_flags(parser)
    add_sampling_flags(parser, "sampling defaults (a request's own fields win)")
    s = parser.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free port)")
    s.add_argument("-a", "--alias", help="the model name clients use (default: the model path)")
    s.add_argument("-np", "--parallel", type=int, default=1, help="slots: requests served at once; each gets -c / N tokens")
    s.add_argument("--api-key", action="append", default=[], help="require this key (Authorization: Bearer KEY); repeatable")
    s.add_argument("--api-key-file", help="a file of keys, one per line")
    s.add_argument("--chat-template-file", help="a Jinja chat template to use instead of the model's")
    s.add_argument("--chat-template", dest="chat_template", help="a Jinja chat template (text) to use instead of the model's")
    s.add_argument("--no-webui", action="store_true", help="do not serve the chat page at /")
    s.add_argument("--webui", help="llama-server's page choice: 'none' turns the page off; other values serve kiln's page")
    s.add_argument("--slot-save-path", help="directory for slot save/restore (POST /slots/ID?action=save)")
    s.add_argument("--reasoning-format", default="auto", choices=REASONING_FORMATS,
                   help="'none' leaves <think> blocks in the content; otherwise they go to reasoning_content")
    s.add_argument("--no-slots", action="store_true", help="turn off GET /slots")
    c = parser.add_argument_group("accepted for llama-server compatibility (always on, or not needed)")
    c.add_argument("--jinja", action="store_true", help="chat templates are always rendered with Jinja")
    c.add_argument("-cb", "--cont-batching", action="store_true", help="continuous batching is always on")
    c.add_argument("--metrics", action="store_true", help="GET /metrics is always on")
    c.add_argument("--threads-http", type=int, default=-1)


def _settings(options: Options, args: argparse.Namespace) -> ServerSettings:
    if args.parallel < 1:
        raise OptionError(f"--parallel {args.parallel}: give at least 1 slot")
    if not 0 <= args.port <= 65535:
        raise OptionError(f"--port {args.port}: give a port between 0 and 65535")
    keys = list(args.api_key)
    if args.api_key_file:
        path = Path(args.api_key_file)
        if not path.is_file():
            raise OptionError(f"--api-key-file {path}: no such file")
        keys += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    template = options.chat_template
    if args.chat_template_file:
        path = Path(args.chat_template_file)
        if not path.is_file():
            raise OptionError(f"--chat-template-file {path}: no such file")
        template = path.read_text(encoding="utf-8")
    save_path = None
    if args.slot_save_path:
        save_path = Path(args.slot_save_path)
        save_path.mkdir(parents=True, exist_ok=True)
    return ServerSettings(
        host=args.host, port=args.port, alias=args.alias, n_parallel=args.parallel, api_keys=keys,
        chat_template=template, webui=not args.no_webui and (args.webui or "").lower() != "none",
        slot_save_path=save_path, reasoning_format=args.reasoning_format, slots_endpoint=not args.no_slots,
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OptionError(f"cannot listen on {host}:{port}: {e.strerror}; pick another --port or --host") from None
    return sock


def main(options: Options, args: argparse.Namespace) -> int:
    import uvicorn

    from ..server.app import create_app
    from ..server.context import ServerContext
    from ..server.logs import info

    settings = _settings(options, args)
    sock = _bind(settings.host, settings.port)
    engine, tokenizer = load_engine(options)
    try:
        if engine.n_ctx // settings.n_parallel < 8:
            raise OptionError(f"-c {engine.n_ctx} split into --parallel {settings.n_parallel} slots leaves "
                              f"{engine.n_ctx // settings.n_parallel} tokens per slot; raise -c")
        ctx = ServerContext(engine, tokenizer, settings)
        app = create_app(ctx)
        host, port = sock.getsockname()[:2]
        info("main", "HTTP server listening", hostname=host, port=str(port), n_threads_http=str(args.threads_http))
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        engine.close()
    return 0
