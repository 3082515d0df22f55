"""`kiln serve` as users start it: the CLI flags, `--api-key` (401 without it), `--alias`,
`--no-webui`, and llama-server's log lines (listening, kv cache rm, print_timings)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest


def call(url: str, body=None, key: str | None = None, header: str = "Authorization"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if key is not None:
        req.add_header(header, f"Bearer {key}" if header == "Authorization" else key)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def cli_server(smollm2, tmp_path_factory):
    template = tmp_path_factory.mktemp("tmpl") / "chat.jinja"
    template.write_text(TEMPLATE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "server", "-m", str(smollm2), "--port", "0", "-c", "512",
         "--parallel", "1", "--api-key", "sekrit", "--alias", "smol", "--no-webui", "--temp", "0",
         "--chat-template-file", str(template)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    port = None
    end = time.monotonic() + 180
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r'HTTP server listening .* port="(\d+)"', line)
        if m:
            port = int(m.group(1))
        if "model loaded" in line:
            break
    if port is None:
        proc.kill()
        raise AssertionError("kiln serve did not start:\n" + "".join(lines))
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    yield f"http://127.0.0.1:{port}", lines, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_api_key(cli_server):
    url, lines, _ = cli_server
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "model": "smol"}
    status, text = call(url + "/v1/chat/completions", body)
    assert status == 401
    assert json.loads(text) == {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}}
    assert call(url + "/v1/chat/completions", body, key="wrong")[0] == 401
    assert call(url + "/metrics")[0] == 401
    assert call(url + "/health")[0] == 200  # public, as in llama-server
    status, text = call(url + "/v1/models")
    assert status == 200 and json.loads(text)["data"][0]["id"] == "smol"
    status, text = call(url + "/v1/chat/completions", body, key="sekrit")
    assert status == 200 and json.loads(text)["model"] == "smol"
    assert call(url + "/completion", {"prompt": "Hi", "n_predict": 2}, key="sekrit", header="X-Api-Key")[0] == 200
    assert call(url + "/", key="sekrit")[0] == 404  # --no-webui
    # --chat-template-file replaces the model's template
    status, text = call(url + "/apply-template", {"messages": [{"role": "user", "content": "Hi"}]}, key="sekrit")
    assert json.loads(text)["prompt"] == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    status, text = call(url + "/props", key="sekrit")
    assert json.loads(text)["chat_template"] == TEMPLATE


@pytest.mark.slow
def test_log_lines(cli_server):
    url, lines, proc = cli_server
    assert call(url + "/completion", {"prompt": "Hello there", "n_predict": 2}, key="sekrit")[0] == 200
    end = time.monotonic() + 30
    while time.monotonic() < end and not any("total time" in x for x in lines):
        time.sleep(0.05)
    text = "".join(lines)
    assert "KV self size" in text
    assert re.search(r"INFO \[ *update_slots\] kv cache rm \[p0, end\) \| .*id_slot=0 id_task=\d+ p0=\d+", text)
    assert re.search(r"prompt eval time = +[\d.]+ ms / +\d+ tokens \( *[\d.]+ ms per token, +[\d.]+ tokens per second\)", text)
    assert re.search(r"       eval time = +[\d.]+ ms / +2 tokens", text)
    assert "n_slots=1" in text and "n_ctx_slot=512" in text
