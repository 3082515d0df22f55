"""Continuous batching: 8 concurrent clients on 4 slots all get the greedy answers that the
runtime's own generation loop gives for their prompts alone; slots share forward passes, and a
new request's prompt is evaluated in the same pass as the next tokens of the others."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.server.conftest import greedy

QUESTIONS = [
    "Name a color.", "What is 2+2?", "Say hello.", "Name a fruit.",
    "What is the sun?", "Name an animal.", "Count to three.", "What is water?",
]
N = [4, 9, 5, 10, 6, 11, 7, 8]  # different lengths, so slots free up (and refill) at different times


@pytest.mark.slow
def test_eight_clients_four_slots_greedy(served, oracle_engine, monkeypatch):
    engine = served.ctx.engine
    batches: list[list[tuple[int, int]]] = []  # per forward pass: (slot, tokens evaluated)
    real_eval_batch = engine.eval_batch

    def spy(items):
        batches.append([(it.seq, len(it.tokens)) for it in items])
        return real_eval_batch(items)

    monkeypatch.setattr(engine, "eval_batch", spy)

    def ask(k: int):
        return served.post("/v1/chat/completions", {
            "messages": [{"role": "user", "content": QUESTIONS[k]}], "temperature": 0, "max_tokens": N[k],
            "cache_prompt": False,
        })

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(8)))
    for k, (status, body) in enumerate(answers):
        assert status == 200, body
        prompt = served.ctx.template.render([{"role": "user", "content": QUESTIONS[k]}], add_generation_prompt=True)
        assert body["choices"][0]["message"]["content"] == greedy(oracle_engine, prompt, N[k]).strip(), QUESTIONS[k]
    # several slots were decoded in one forward pass, and never more than there are slots
    assert max(len(b) for b in batches) >= 2
    assert all(len(b) == len({s for s, _ in b}) <= 4 for b in batches)
    assert {s for b in batches for s, _ in b} == {0, 1, 2, 3}
    # a prompt (many tokens) and a generated token (one) of other slots in the same pass
    assert any(any(n > 1 for _, n in b) and any(n == 1 for _, n in b) for b in batches)
    metrics = served.get("/metrics")[1]
    assert "llamacpp:batch_sequences_max" in metrics
    value = float(next(line.split()[1] for line in metrics.splitlines()
                       if line.startswith("llamacpp:batch_sequences_max")))
    assert 2 <= value <= 4
