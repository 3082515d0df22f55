"""What `kiln quantize` prints: the `--dry-run` plan (one line per tensor, then the
predicted size, bits per weight and the bytes by placement class) and the summary after a
real run, in llama-quantize's words where it has them."""

from __future__ import annotations

from pathlib import Path

from .quantize_plan import Plan

MIB = 1024.0 * 1024.0
GIB = MIB * 1024.0


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def print_dry_run(plan: Plan, sizes: list[tuple[Path, int]]) -> None:
    width = max((len(t.name) for t in plan.tensors), default=10)
    print(f"{'tensor':<{width}}  {'shape':>18}  {'from':>8}  {'to':>9}  {'MiB':>10}  note")
    for t in plan.tensors:
        to = t.dst_type if t.action != "copy" else f"={t.dst_type}"
        print(f"{t.name:<{width}}  {_shape(t.shape):>18}  {t.src_type:>8}  {to:>9}  {t.bytes_out / MIB:10.3f}  "
              f"{'; '.join(t.notes)}")
    print()
    total = sum(n for _, n in sizes)
    bpw = 8.0 * plan.bytes_out / max(plan.n_elements, 1)
    print(f"file type: {plan.file_type or 'repack only'}")
    for path, n in sizes:
        print(f"output: {path}: {n} bytes ({n / GIB:.3f} GiB)")
    print(f"predicted size: {total} bytes ({total / GIB:.3f} GiB), {bpw:.4f} bits per weight "
          f"over {plan.n_elements} weights (input {plan.bytes_in / GIB:.3f} GiB)")
    for placement, n in sorted(plan.bytes_by_placement().items()):
        print(f"  {placement}: {n / GIB:.3f} GiB ({100.0 * n / max(plan.bytes_out, 1):.1f}%)")
    counts = {}
    for t in plan.tensors:
        counts[t.action] = counts.get(t.action, 0) + 1
    print("tensors: " + ", ".join(f"{n} {action}" for action, n in sorted(counts.items())))
    if plan.n_fallback:
        print(f"WARNING: {plan.n_fallback} tensor(s) required fallback quantization")


def print_summary(plan: Plan, sizes: list[tuple[Path, int]]) -> None:
    print(f"model size  = {plan.bytes_in / MIB:8.2f} MB")
    print(f"quant size  = {plan.bytes_out / MIB:8.2f} MB")
    if plan.n_fallback:
        print(f"WARNING: {plan.n_fallback} tensor(s) required fallback quantization")
    for path, n in sizes:
        print(f"wrote {path} ({n} bytes)")
