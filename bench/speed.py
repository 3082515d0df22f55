"""Prompt-processing and generation speed of kiln, measured like `llama-bench -p 512 -n 128`.

    python bench/speed.py [-m FILE] [-t THREADS] [-r REPS] [-p 512] [-n 128]

pp: one batch of P tokens on an empty cache; tg: N tokens one at a time after
an empty cache. Prints a llama-bench style markdown table; results go to
bench/RESULTS.md by hand, with the date, the machine and the ik_llama.cpp figure.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kiln.runtime import Engine, Options


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model")
    ap.add_argument("-t", "--threads", type=int, default=0)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    args = ap.parse_args()
    engine = Engine.load(args.model, Options(threads=args.threads, ctx_size=args.n_prompt + args.n_gen + 8))
    vocab = engine.hparams.n_vocab
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (args.n_prompt,), generator=gen).tolist()
    engine.eval(prompt, seq=9)  # warm-up: dequantize the weights (every routed expert) once
    engine.reset(9)
    pp, tg = [], []
    for _ in range(args.repetitions):
        engine.reset(None)
        t0 = time.perf_counter()
        engine.eval(prompt, seq=0, all_logits=False)
        pp.append(args.n_prompt / (time.perf_counter() - t0))
        engine.reset(None)
        t0 = time.perf_counter()
        for i in range(args.n_gen):
            engine.eval([prompt[i]], seq=0, all_logits=False)
        tg.append(args.n_gen / (time.perf_counter() - t0))
    threads = torch.get_num_threads()
    print(f"| model | threads | test | t/s |")
    print(f"| --- | ---: | ---: | ---: |")
    for name, xs in ((f"pp{args.n_prompt}", pp), (f"tg{args.n_gen}", tg)):
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        print(f"| {engine.path.name} | {threads} | {name} | {statistics.mean(xs):.2f} ± {sd:.2f} |")


if __name__ == "__main__":
    main()
