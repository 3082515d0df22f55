"""Acceptance: the official `openai` client against the server, and greedy answers equal to
`kiln run --temp 0` on the same prompt rendered through the chat template."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

openai = pytest.importorskip("openai")

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
N = 12


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.base_url + "/v1", api_key="sk-no-key-required", max_retries=0)


@pytest.fixture(scope="module")
def model_id(client):
    models = client.models.list()
    return models.data[0].id


@pytest.fixture(scope="module")
def rendered(served):
    return served.ctx.template.render(MESSAGES, add_generation_prompt=True)


@pytest.fixture(scope="module")
def kiln_run_output(served, rendered):
    """`kiln run -p PROMPT --temp 0 -n N` in a subprocess: the oracle."""
    out = subprocess.run(
        [sys.executable, "-m", "kiln.cli", "run", "-m", str(served.ctx.path), "-p", rendered, "--temp", "0",
         "-n", str(N), "-c", "1024"],
        capture_output=True, text=True, timeout=300, check=True,
        env={**os.environ, "KILN_BLOCK_STEPS": "0"},  # as the served engine (--parallel > 1) computes
    )
    assert out.stdout.endswith("\n")
    return out.stdout[:-1]


@pytest.mark.slow
def test_chat_completion_equals_kiln_run(client, model_id, kiln_run_output):
    r = client.chat.completions.create(model=model_id, messages=MESSAGES, temperature=0, max_tokens=N)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == kiln_run_output.strip()
    assert kiln_run_output.strip()  # the model says something
    assert r.usage.completion_tokens <= N and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason in ("stop", "length")


@pytest.mark.slow
def test_streamed_chat_completion_equals_kiln_run(client, model_id, kiln_run_output):
    stream = client.chat.completions.create(model=model_id, messages=MESSAGES, temperature=0, max_tokens=N,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1  # streamed, not one piece
    assert "".join(pieces) == kiln_run_output.strip()
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"] or finals == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(pieces) + (finals == ["stop"])


@pytest.mark.slow
def test_text_completion_equals_kiln_run_exactly(client, model_id, rendered, kiln_run_output):
    """/v1/completions returns the text unstripped: byte for byte what kiln run prints."""
    r = client.completions.create(model=model_id, prompt=rendered, temperature=0, max_tokens=N)
    assert r.choices[0].text == kiln_run_output
    streamed = client.completions.create(model=model_id, prompt=rendered, temperature=0, max_tokens=N, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == kiln_run_output


def test_models_lists_the_served_model(client, served):
    models = client.models.list()
    assert [m.id for m in models.data] == [served.ctx.model_id]
    assert str(served.ctx.path) == served.ctx.model_id  # no --alias: the path, as llama-server


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=1)
    assert "no-such-model" in str(e.value)
