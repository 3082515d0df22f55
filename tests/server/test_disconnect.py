"""A client that goes away cancels its generation and frees the slot."""

from __future__ import annotations

import http.client
import json
import time

import pytest


def metric(served, name: str) -> float:
    text = served.get("/metrics")[1]
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith(f"llamacpp:{name} ")))


def wait_for(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_frees_the_slot(served, stream):
    served.wait_idle()
    cancelled = metric(served, "requests_cancelled_total")
    conn = http.client.HTTPConnection(served.host, served.port, timeout=60)
    body = {"prompt": "Write a very long story about a dragon.", "n_predict": 1000, "ignore_eos": True,
            "temperature": 1.0, "stream": stream, "id_slot": 0}
    conn.request("POST", "/completion", body=json.dumps(body), headers={"Content-Type": "application/json"})
    assert wait_for(lambda: served.get("/slots")[1][0]["next_token"]["n_decoded"] >= 3)
    if stream:
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.readline().startswith(b"data: ")
    conn.sock.shutdown(2)
    conn.close()
    assert wait_for(lambda: metric(served, "requests_cancelled_total") == cancelled + 1)
    assert wait_for(lambda: served.get("/health")[1]["slots_processing"] == 0)
    slot = served.get("/slots")[1][0]
    assert not slot["is_processing"] and slot["n_past"] < 1000
