"""The chat page at `/`, in headless Chromium: type a message, press Send, and the answer
streams in (several deltas), equal to the API's greedy answer, with tokens/s shown.

Skipped when no Chromium is installed, unless KILN_REQUIRE_CHROMIUM=1 (CI)."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.server.cdp import Browser, find_chromium

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        if os.environ.get("KILN_REQUIRE_CHROMIUM") == "1":
            pytest.fail("KILN_REQUIRE_CHROMIUM=1 but no chromium binary is on PATH")
        print("skipping the page test: no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH")
    b = Browser(binary)
    yield b
    b.close()


def wait(predicate, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("the page did not get there")


STATE = """(() => {
  const boxes = document.querySelectorAll('.msg.assistant, .msg.error');
  const box = boxes[boxes.length - 1];
  return box ? JSON.stringify({text: box.querySelector('.content') ? box.querySelector('.content').textContent : box.textContent,
                               chunks: box.dataset.chunks, done: box.dataset.done, error: box.className.includes('error'),
                               stats: document.getElementById('stats').textContent}) : null;
})()"""


@pytest.mark.slow
def test_page_streams_an_answer(served, browser):
    status, api = served.post("/v1/chat/completions", {
        "messages": [{"role": "user", "content": QUESTION}], "temperature": 0, "max_tokens": 12})
    assert status == 200
    expected = api["choices"][0]["message"]["content"]
    browser.call("Page.enable")
    browser.call("Page.navigate", url=served.base_url + "/")
    wait(lambda: browser.evaluate("document.readyState === 'complete' && !!document.getElementById('send')"))
    assert "kiln" in browser.evaluate("document.title")
    wait(lambda: browser.evaluate("document.getElementById('model').textContent") == served.ctx.model_id)
    browser.evaluate(f"""(() => {{
        document.getElementById('temperature').value = '0';
        document.getElementById('max_tokens').value = '12';
        document.getElementById('input').value = {json.dumps(QUESTION)};
        document.getElementById('send').click();
    }})()""")
    seen = set()

    def finished():
        state = browser.evaluate(STATE)
        if state:
            s = json.loads(state)
            seen.add(s["text"])
            return s if s["done"] == "true" else None
        return None

    final = wait(finished)
    assert not final["error"], final
    assert final["text"] == expected and expected
    assert int(final["chunks"]) >= 2  # the answer arrived as a stream of deltas, shown one by one
    assert "t/s" in final["stats"]
    assert browser.evaluate("document.querySelector('.msg.user').textContent") == QUESTION
