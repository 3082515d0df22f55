"""Counters of the server and their Prometheus text (`GET /metrics`), named as llama-server
names them (`llamacpp:prompt_tokens_total`, ...).

As in llama-server, the throughput gauges cover the time since the previous scrape (a
"bucket" that each `/metrics` call empties); the counters cover the server's life.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .tasks import Timings


@dataclass
class SlotUse:
    processing: int
    deferred: int
    kv_tokens: int
    n_ctx: int


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.t_start = int(time.time())
        self.prompt_tokens_total = 0
        self.prompt_ms_total = 0.0
        self.predicted_total = 0
        self.predicted_ms_total = 0.0
        self.bucket_prompt_tokens = 0
        self.bucket_prompt_ms = 0.0
        self.bucket_predicted = 0
        self.bucket_predicted_ms = 0.0
        self.n_decode_total = 0  # forward passes (batches)
        self.n_busy_slots_total = 0  # sum over batches of the sequences in each
        self.max_batch_sequences = 0
        self.requests_total = 0
        self.requests_cancelled = 0
        self.requests_failed = 0

    def on_batch(self, n_sequences: int) -> None:
        with self.lock:
            self.n_decode_total += 1
            self.n_busy_slots_total += n_sequences
            self.max_batch_sequences = max(self.max_batch_sequences, n_sequences)

    def on_prompt_done(self, n_tokens: int, ms: float) -> None:
        with self.lock:
            self.prompt_tokens_total += n_tokens
            self.prompt_ms_total += ms
            self.bucket_prompt_tokens += n_tokens
            self.bucket_prompt_ms += ms

    def on_finished(self, t: Timings) -> None:
        with self.lock:
            self.requests_total += 1
            self.predicted_total += t.predicted_n
            self.predicted_ms_total += t.predicted_ms
            self.bucket_predicted += t.predicted_n
            self.bucket_predicted_ms += t.predicted_ms

    def on_cancelled(self) -> None:
        with self.lock:
            self.requests_cancelled += 1

    def on_failed(self) -> None:
        with self.lock:
            self.requests_failed += 1

    def prometheus(self, use: SlotUse) -> str:
        """The Prometheus exposition text; empties the throughput bucket."""
        with self.lock:
            prompt_rate = 1e3 * self.bucket_prompt_tokens / self.bucket_prompt_ms if self.bucket_prompt_ms else 0.0
            gen_rate = 1e3 * self.bucket_predicted / self.bucket_predicted_ms if self.bucket_predicted_ms else 0.0
            self.bucket_prompt_tokens = self.bucket_predicted = 0
            self.bucket_prompt_ms = self.bucket_predicted_ms = 0.0
            metrics = [
                ("counter", "prompt_tokens_total", "Number of prompt tokens processed.", self.prompt_tokens_total),
                ("counter", "prompt_seconds_total", "Prompt process time", self.prompt_ms_total / 1e3),
                ("counter", "tokens_predicted_total", "Number of generation tokens processed.", self.predicted_total),
                ("counter", "tokens_predicted_seconds_total", "Predict process time", self.predicted_ms_total / 1e3),
                ("counter", "n_decode_total", "Total number of batches evaluated (forward passes).", self.n_decode_total),
                ("counter", "n_busy_slots_total", "Sum over batches of the slots decoded in each.", self.n_busy_slots_total),
                ("counter", "requests_total", "Number of completion requests finished.", self.requests_total),
                ("counter", "requests_cancelled_total", "Number of requests whose client went away.", self.requests_cancelled),
                ("counter", "requests_failed_total", "Number of requests that failed while running.", self.requests_failed),
                ("gauge", "prompt_tokens_seconds", "Average prompt throughput in tokens/s.", prompt_rate),
                ("gauge", "predicted_tokens_seconds", "Average generation throughput in tokens/s.", gen_rate),
                ("gauge", "n_busy_slots_per_decode", "Average number of slots decoded per batch.",
                 self.n_busy_slots_total / self.n_decode_total if self.n_decode_total else 0.0),
                ("gauge", "batch_sequences_max", "Most slots decoded in one batch so far.", self.max_batch_sequences),
                ("gauge", "kv_cache_usage_ratio", "KV-cache usage. 1 means 100 percent usage.",
                 use.kv_tokens / use.n_ctx if use.n_ctx else 0.0),
                ("gauge", "kv_cache_tokens", "KV-cache tokens.", use.kv_tokens),
                ("gauge", "requests_processing", "Number of request processing.", use.processing),
                ("gauge", "requests_deferred", "Number of request deferred.", use.deferred),
            ]
        lines = []
        for kind, name, help_text, value in metrics:
            lines += [f"# HELP llamacpp:{name} {help_text}", f"# TYPE llamacpp:{name} {kind}", f"llamacpp:{name} {value}"]
        return "\n".join(lines) + "\n"
