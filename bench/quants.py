"""Dequantize and quantize throughput of every quant type kiln can write.

    python bench/quants.py [-t THREADS] [--rows 1024] [--cols 4096] [-r REPS] [TYPE ...]
    python bench/quants.py --gguf FILE [-t THREADS] TYPE ...   # like llama-quantize --pure FILE OUT TYPE

Input: a float32 matrix of gaussian values with 0.2% outliers x8 (like the golden
set's source) and a random chi-square imatrix. For each type: quantize (with the
imatrix, `n_threads` threads) and dequantize, best of REPS runs, as MB/s of float32
(rows x cols x 4 bytes, in for quantize, out for dequantize). Prints a markdown
table; copy it into bench/RESULTS.md with the date, the machine and the command.
With --gguf, every 2D f32 tensor of FILE is quantized without an imatrix (one run,
quantize only), the work `llama-quantize --pure FILE OUT TYPE THREADS` does.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kiln.quants import QUANT_TYPES, dequantize, quant_type, quantize


def source(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.02)
    outliers = rng.random((rows, cols)) < 0.002
    x[outliers] *= 8
    imatrix = rng.chisquare(1.0, cols).astype(np.float32)
    return x, imatrix


def best_time(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def quantize_file(path: str, names: list[str], threads: int) -> None:
    from kiln.gguf import GGUFFile

    with GGUFFile(path) as f:
        tensors = [
            (n, dequantize(i.type_id, f.tensor_bytes(n), i.shape, n)) for n, i in f.tensors.items() if len(i.shape) == 2
        ]
    mb = sum(x.nbytes for _, x in tensors) / 1e6
    print(f"| type | seconds | quantize MB/s |  ({path}: {mb:.1f} MB of f32, {threads} threads, no imatrix)")
    print("| --- | ---: | ---: |")
    for name in names:
        quantize(name, tensors[0][1][:8], None, n_threads=threads)  # compile
        t0 = time.perf_counter()
        for n, x in tensors:
            quantize(name, x, None, n, n_threads=threads)
        dt = time.perf_counter() - t0
        print(f"| {name} | {dt:.2f} | {mb / dt:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("types", nargs="*")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--gguf")
    args = ap.parse_args()
    if args.gguf:
        quantize_file(args.gguf, args.types, args.threads)
        return
    names = args.types or [
        t.name for t in QUANT_TYPES.values() if t.can_quantize and t.can_dequantize and t.name not in ("F32", "F64")
    ]
    x, imatrix = source(args.rows, args.cols)
    mb = x.nbytes / 1e6
    shape = (args.cols, args.rows)
    print(f"| type | bpw | quantize MB/s | dequantize MB/s |  ({args.rows}x{args.cols} f32, {args.threads} threads)")
    print("| --- | ---: | ---: | ---: |")
    for name in names:
        t = quant_type(name)
        quantize(name, x[:8], imatrix, name, n_threads=args.threads)  # compile
        raw = quantize(name, x, imatrix, name, n_threads=args.threads)
        tq = best_time(lambda: quantize(name, x, imatrix, name, n_threads=args.threads), args.repetitions)
        td = best_time(lambda: dequantize(name, raw, shape, name), args.repetitions)
        print(f"| {name} | {t.bits_per_weight():.3f} | {mb / tq:.1f} | {mb / td:.1f} |", flush=True)


if __name__ == "__main__":
    main()
