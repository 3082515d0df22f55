"""The measurement loop of `kiln bench`, llama-bench's: per test an untimed warm-up (one
prompt token, one generated token), then `-r` repetitions, each from an empty KV cache:

- the `-d` depth tokens (untimed), then the clock starts;
- a prompt of random token ids (BOS first when the model adds one) in `-b` chunks (the
  engine cuts each into `-ub` micro-batches), only the last token's logits computed;
- `gp` tests restart the clock here: only the generation is timed;
- generation one token at a time, each a random id (the first one BOS when the model adds it).

The clock is a callable returning seconds (time.perf_counter by default), so that tests can
drive it; samples are integer nanoseconds, as llama-bench's. t/s of a sample is
n_tokens / time; the table shows their mean and sample standard deviation (n - 1).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..kernels.cpu.linear import set_threads as set_cpu_threads
from .bench_params import Instance

Clock = Callable[[], float]


def set_all_threads(n: int) -> None:
    """torch's pool and the CPU kernels' (generation and batch) to n threads."""
    torch.set_num_threads(n)
    set_cpu_threads(n, n)


@dataclass
class Runner:
    """An engine with what the loop needs around it."""

    engine: object  # kiln.runtime.Engine or a stand-in with eval() and reset()
    n_vocab: int
    first_token: int | None  # BOS when the model adds one, else None (a random token)
    clock: Clock = time.perf_counter
    set_threads: Callable[[int], None] = set_all_threads
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def _token(self) -> int:
        return self.rng.randrange(self.n_vocab)

    def prompt(self, n: int, n_batch: int) -> None:
        done = 0
        while done < n:
            k = min(n - done, n_batch)
            first = self.first_token if done == 0 and self.first_token is not None else self._token()
            self.engine.eval([first] + [self._token() for _ in range(k - 1)], all_logits=False)
            done += k

    def generate(self, n: int) -> None:
        token = self.first_token if self.first_token is not None else self._token()
        for _ in range(n):
            self.engine.eval([token], all_logits=False)
            token = self._token()

    def measure(self, inst: Instance, reps: int, warmup: bool) -> list[int]:
        """The nanoseconds of each repetition of one test."""
        test, n_batch = inst.test, inst.settings["n_batch"]
        gen_threads, batch_threads = inst.settings["n_threads"]
        self.engine.reset(None)
        if warmup:
            if test.n_prompt > 0:  # as llama-bench: a short batch, which also compiles the batch kernels
                self.set_threads(batch_threads)
                self.prompt(min(32, test.n_prompt, n_batch), n_batch)
            if test.n_gen > 0:
                self.set_threads(gen_threads)
                self.generate(1)
        samples = []
        for _ in range(reps):
            self.engine.reset(None)
            self.set_threads(batch_threads)
            if test.n_depth > 0:
                self.prompt(test.n_depth, n_batch)
            start = self.clock()
            if test.n_prompt > 0:
                self.prompt(test.n_prompt, n_batch)
            if test.kind == "gp":
                start = self.clock()
            if test.n_gen > 0:
                self.set_threads(gen_threads)
                self.generate(test.n_gen)
            samples.append(max(1, round((self.clock() - start) * 1e9)))
        return samples


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def stdev(values: list[float]) -> float:
    """Sample standard deviation (n - 1), 0 for fewer than two values, as llama-bench."""
    if len(values) <= 1:
        return 0.0
    m = mean(values)
    return math.sqrt(max(0.0, sum((v - m) ** 2 for v in values) / (len(values) - 1)))


def stdev_ns(samples_ns: list[int]) -> int:
    """llama-bench's stddev_ns: the same formula in integer arithmetic (ik_llama.cpp's uint64, without
    its overflow past ~4 s samples), so that the figure matches its to the nanosecond."""
    n = len(samples_ns)
    if n <= 1:
        return 0
    m = sum(samples_ns) // n
    return int(math.sqrt(max(0, sum(v * v for v in samples_ns) // (n - 1) - m * m * n // (n - 1))))


def tokens_per_second(samples_ns: list[int], n_tokens: int) -> list[float]:
    return [1e9 * n_tokens / ns for ns in samples_ns]
