"""How fast the CPU kernels read a DeepSeek-V3-shaped model's routed experts in generation.

    python bench/cpu_experts.py [--layers 2] [--type IQ4_KS] [--threads 16] [--tokens 16]

Builds V3's real expert geometry (hidden 7168, 256 experts of 2048, 8 used per token) for a
few layers with random blocks of the chosen type (valid scales, random quants: the speed
does not depend on the values), then runs generation's expert work for one token at a
time exactly as the engine does (`dispatch.selected_experts`: gate, up, SiLU, down, each
one call over the 8 selected experts), and prints the expert bytes read per second
against the host's read bandwidth measured the same way (torch summing an 8 GiB tensor).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kiln.gguf.types import GGML_TYPES_BY_NAME  # noqa: E402
from kiln.kernels import dispatch  # noqa: E402
from kiln.kernels.cpu import linear as cpu_linear  # noqa: E402
from kiln.kernels.weights import QTensor  # noqa: E402
from kiln.quants import quantize  # noqa: E402

HIDDEN, FF, N_EXPERT, N_USED = 7168, 2048, 256, 8


def random_experts(name: str, type_name: str, K: int, n_out: int, rng: np.random.Generator) -> QTensor:
    """A 3D expert tensor of random blocks: one real quantized row's scales copied into every
    row (so every scale is sane), random bytes for everything else."""
    t = GGML_TYPES_BY_NAME[type_name]
    row_bytes = t.row_bytes(K)
    raw = np.frombuffer(rng.bytes(row_bytes * n_out * N_EXPERT), dtype=np.uint8).copy().reshape(-1, row_bytes)
    template = quantize(type_name, rng.standard_normal((1, K)).astype(np.float32) * 0.02, None, name).reshape(-1)
    if type_name == "IQ4_KS":  # f32 row scale, then per block: 8 scale bytes, 128 bytes of nibbles
        raw[:, :4] = template[:4]
        blocks = raw[:, 4:].reshape(raw.shape[0], -1, 136)
        blocks[:, :, :8] = template[4:].reshape(-1, 136)[:, :8]
    elif type_name == "Q8_0":  # f16 scale per 34-byte block
        blocks = raw.reshape(raw.shape[0], -1, 34)
        blocks[:, :, :2] = template.reshape(-1, 34)[:, :2]
    else:
        raise SystemExit(f"--type {type_name}: this script makes IQ4_KS or Q8_0 experts")
    return QTensor(name, raw.reshape(-1), t.id, (K, n_out, N_EXPERT))


def host_bandwidth(threads: int) -> float:
    torch.set_num_threads(threads)
    x = torch.ones(1 << 31, dtype=torch.float32)  # 8 GiB
    x.sum()
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        x.sum()
        best = max(best, x.numel() * 4 / (time.perf_counter() - t))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--type", default="IQ4_KS")
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--tokens", type=int, default=16)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    cpu_linear.set_threads(a.threads, a.threads)
    t0 = time.perf_counter()
    layers = [
        (random_experts(f"blk.{i}.ffn_gate_exps.weight", a.type, HIDDEN, FF, rng),
         random_experts(f"blk.{i}.ffn_up_exps.weight", a.type, HIDDEN, FF, rng),
         random_experts(f"blk.{i}.ffn_down_exps.weight", a.type, FF, HIDDEN, rng))
        for i in range(a.layers)
    ]
    per_token = sum(w.nbytes // N_EXPERT * N_USED for layer in layers for w in layer)
    print(f"{a.layers} layers of {a.type} experts, {sum(w.nbytes for l in layers for w in l) / 2**30:.1f} GiB, "
          f"made in {time.perf_counter() - t0:.0f} s; {per_token / 1e6:.1f} MB of experts read per token")
    x = torch.randn(N_USED, HIDDEN)

    def token() -> None:
        for gate, up, down in layers:
            experts = torch.from_numpy(rng.choice(N_EXPERT, N_USED, replace=False))
            h = dispatch.silu_gate(dispatch.selected_experts(x, gate, experts), dispatch.selected_experts(x, up, experts))
            dispatch.selected_experts(h, down, experts)

    token()  # compile
    t = time.perf_counter()
    for _ in range(a.tokens):
        token()
    dt = (time.perf_counter() - t) / a.tokens
    rate = per_token / dt
    bw = host_bandwidth(a.threads)
    print(f"experts: {dt * 1e3:.2f} ms per token, {rate / 1e9:.1f} GB/s; host read bandwidth (torch sum, "
          f"{a.threads} threads): {bw / 1e9:.1f} GB/s; ratio {rate / bw:.2f} (DESIGN.md's 72 GB/s: {rate / 72e9:.2f})")


if __name__ == "__main__":
    main()
