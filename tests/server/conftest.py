"""Fixtures of the server tests: `kiln serve`'s app in this process (uvicorn in a thread, on
a free port) over the default model, with 4 slots, and a small HTTP client."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiln.runtime import Options
from kiln.tools.common import load_engine

N_PARALLEL = 4
CTX = 4096  # 1024 tokens per slot


@dataclass
class Served:
    host: str
    port: int
    ctx: object  # kiln.server.context.ServerContext
    slot_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
        """(status, parsed JSON or text, headers) of one request on a fresh connection."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8")
        conn.close()
        ctype = resp.getheader("content-type", "")
        return resp.status, (json.loads(text) if "json" in ctype else text), dict(resp.getheaders())

    def post(self, path: str, body=None, **kw):
        status, data, _ = self.request("POST", path, body, **kw)
        return status, data

    def get(self, path: str, **kw):
        status, data, _ = self.request("GET", path, **kw)
        return status, data

    def stream(self, path: str, body: dict) -> list:
        """The `data:` events of a streamed answer, parsed ([DONE] kept as the string)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        assert resp.getheader("content-type").startswith("text/event-stream")
        events = []
        for line in resp.read().decode("utf-8").split("\n"):
            if line.startswith("data: "):
                payload = line[6:]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
        conn.close()
        return events

    def wait_idle(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.get("/health")[1]["slots_processing"] == 0:
                return
            time.sleep(0.05)
        raise AssertionError("the server's slots did not become idle")


def free_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def serve_in_thread(ctx):
    """Run the app of `ctx` with uvicorn in a daemon thread; returns (server, thread, port)."""
    import uvicorn

    from kiln.server.app import create_app

    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), log_level="warning", access_log=False,
                                         timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return server, thread, port


@pytest.fixture(scope="session")
def served(smollm2, tmp_path_factory) -> Served:
    from kiln.server.context import ServerContext
    from kiln.server.settings import ServerSettings

    slot_dir = tmp_path_factory.mktemp("slots")
    engine, tokenizer = load_engine(Options(model=str(smollm2), ctx_size=CTX))
    ctx = ServerContext(engine, tokenizer, ServerSettings(port=0, n_parallel=N_PARALLEL, slot_save_path=slot_dir))
    server, thread, port = serve_in_thread(ctx)
    yield Served("127.0.0.1", port, ctx, slot_dir)
    server.should_exit = True
    thread.join(timeout=30)
    engine.close()


@pytest.fixture(scope="session")
def oracle_engine(smollm2):
    """A second engine on the same file, for outputs computed without the server."""
    # computed as the served engine computes (--parallel > 1: no one-call generation stack)
    engine, tokenizer = load_engine(Options(model=str(smollm2), ctx_size=1024, block_steps=False))
    yield engine, tokenizer
    engine.close()


def greedy(engine_and_tokenizer, prompt_text: str, n: int) -> str:
    """The greedy continuation of a prompt by Engine.generate (the runtime's own loop)."""
    from kiln.runtime import SamplingParams
    from kiln.tokenizer import IncrementalDecoder

    engine, tok = engine_and_tokenizer
    ids = tok.encode(prompt_text, add_special=True, parse_special=True)
    engine.reset(0)
    decoder = IncrementalDecoder(tok)
    text = "".join(decoder.feed(t) for t in engine.generate(ids, n_predict=n, seq=0, sampling=SamplingParams(temp=0.0)))
    return text + decoder.flush()
