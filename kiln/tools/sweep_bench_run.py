"""The loop of `kiln sweep-bench`, llama-sweep-bench's: the KV cache is filled `-ub` tokens at
a time up to `-c`, and at each depth N_KV:

1. TG tokens are generated one at a time after the N_KV tokens in the cache (timed), then
   removed from the cache;
2. a prompt of PP = -ub random tokens is processed (timed) and stays: the next row starts
   PP tokens deeper.

TG is `-n` when given, else -ub / 4. The first row is repeated `-nrep` times (each
repetition first rewinds the cache to N_KV) and its times are the means; `--sweep-stride K`
measures every K-th row only (the others still fill the cache). A row whose prompt would not
fit in the context is not run. Before the rows: a one-token warm-up (BOS), and with `-wb` a
warm-up batch of -ub tokens; then the cache is cleared.

The clock is a callable returning seconds, so that tests can drive it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import OptionError

Clock = Callable[[], float]


@dataclass(frozen=True)
class SweepConfig:
    n_kv_max: int  # the context (-c)
    n_batch: int
    n_ubatch: int
    n_gen: int  # TG
    n_rep: int = 1
    stride: int = 1
    warmup: bool = True
    batch_warmup: bool = False

    @property
    def n_prompt(self) -> int:  # PP
        return self.n_ubatch


@dataclass(frozen=True)
class SweepRow:
    pp: int
    tg: int
    n_kv: int
    t_pp: float  # seconds
    t_tg: float

    @property
    def speed_pp(self) -> float:
        return self.pp / self.t_pp

    @property
    def speed_tg(self) -> float:
        return self.tg / self.t_tg


def sweep_config(n_ctx: int, n_batch: int, n_ubatch: int, n_predict: int, n_rep: int = 1, stride: int = 1,
                 warmup: bool = True, batch_warmup: bool = False) -> SweepConfig:
    """Check the flags against each other; TG is -n when positive, else -ub / 4."""
    tg = n_predict if n_predict > 0 else n_ubatch // 4
    if n_ctx < n_ubatch:
        raise OptionError(f"-c {n_ctx} is smaller than -ub {n_ubatch}: sweep-bench fills the KV cache in -ub "
                          "chunks up to -c; raise -c or lower -ub")
    if tg < 1:
        raise OptionError(f"-ub {n_ubatch} leaves no tokens to generate (TG = -ub / 4 = 0): give -n N")
    if tg > n_ctx:
        raise OptionError(f"-n {tg} does not fit in the context -c {n_ctx}")
    if n_rep < 1 or stride < 1:
        raise OptionError("-nrep and --sweep-stride must be at least 1")
    return SweepConfig(n_ctx, n_batch, n_ubatch, tg, n_rep, stride, warmup, batch_warmup)


def _decode(engine, tokens: list[int], n_batch: int) -> None:
    """Evaluate in -b chunks (the engine cuts them into -ub micro-batches); only the last
    token's logits are computed."""
    for i in range(0, len(tokens), n_batch):
        engine.eval(tokens[i : i + n_batch], all_logits=False)


def run_sweep(engine, cfg: SweepConfig, n_vocab: int, bos: int, clock: Clock = time.perf_counter,
              rng: random.Random | None = None) -> Iterator[SweepRow]:
    """Yield one row per measured depth, as it is measured."""
    rng = rng or random.Random(0)
    pp, tg = cfg.n_prompt, cfg.n_gen
    engine.reset(None)
    if cfg.warmup:
        _decode(engine, [bos], cfg.n_batch)
    if cfg.batch_warmup:
        engine.reset(None)
        _decode(engine, [rng.randrange(n_vocab) for _ in range(cfg.n_ubatch)], cfg.n_ubatch)
    engine.reset(None)
    for i_loop, n_kv in enumerate(range(0, cfg.n_kv_max, cfg.n_ubatch)):
        if n_kv + pp > cfg.n_kv_max or n_kv + tg > cfg.n_kv_max:
            break
        measure = i_loop % cfg.stride == 0
        nrep = cfg.n_rep if measure and i_loop == 0 else 1
        t_tg = 0.0
        if measure:
            start = clock()
            for _ in range(nrep):
                engine.truncate(n_kv)
                for _ in range(tg):
                    engine.eval([rng.randrange(n_vocab)], all_logits=True)
            t_tg = (clock() - start) / nrep
        else:
            for _ in range(tg):  # keep the token stream of a stride-1 sweep
                rng.randrange(n_vocab)
        start = clock()
        for _ in range(nrep):
            engine.truncate(n_kv)
            _decode(engine, [rng.randrange(n_vocab) for _ in range(pp)], cfg.n_batch)
        t_pp = (clock() - start) / nrep
        if measure:
            yield SweepRow(pp, tg, n_kv, max(t_pp, 1e-9), max(t_tg, 1e-9))
