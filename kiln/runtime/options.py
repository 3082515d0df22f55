"""`Options`: every setting of kiln in one dataclass whose fields are ik_llama.cpp's CLI flags.

The CLI parses into it and nothing else does; the Engine and the tools read it.
Flags that only make sense for ik_llama.cpp's CUDA build, or that kiln does
not act on yet, are accepted and reported once (see `ignored_flags`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from ..errors import OptionError
from ..model.settings import MIB, ComputeSettings

KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0")
NUMA_MODES = ("distribute", "isolate", "numactl")


@dataclass
class Options:
    # model and context
    model: str | None = None  # -m; None: the default model (SmolLM2-135M-Instruct Q4_1)
    ctx_size: int = 0  # -c; 0: the model's training context
    batch_size: int = 2048  # -b
    ubatch_size: int = 512  # -ub
    threads: int = 0  # -t; 0: all cores
    threads_batch: int = 0  # -tb
    cache_type_k: str = "f16"  # -ctk
    cache_type_v: str = "f16"  # -ctv
    no_mmap: bool = False  # --no-mmap
    numa: str | None = None  # --numa distribute|isolate|numactl
    # one-call generation stack for single tokens (docs/cpu.md); KILN_BLOCK_STEPS=0 turns it
    # off, and `kiln serve --parallel N>1` does (answers then never depend on how requests
    # were batched: every pass takes the per-operation path, whose rows are independent)
    block_steps: bool = field(default_factory=lambda: os.environ.get("KILN_BLOCK_STEPS", "1") != "0")
    # generation
    prompt: str | None = None  # -p
    file: str | None = None  # -f
    n_predict: int = -1  # -n; -1: until end of generation or the context is full
    seed: int = -1  # -s; -1: random
    temp: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    ignore_eos: bool = False
    # accepted for compatibility; acted on by later issues
    n_gpu_layers: int = 0  # -ngl
    override_tensor: list[str] = field(default_factory=list)  # -ot
    tensor_split: str | None = None  # -ts
    main_gpu: int = 0  # -mg
    split_mode: str | None = None  # -sm
    flash_attn: bool = True  # -fa (accepted; kiln's attention is exact either way)
    # attention and experts (ik_llama.cpp's defaults)
    mla: int = 3  # -mla
    attn_max_batch: float = 256  # -amb, MiB (the Python API takes fractions of a MiB)
    fused_moe: bool = True  # -fmoe
    ser: str | None = None  # -ser K,T
    run_time_repack: bool = False  # -rtr: weights in memory, prepared for the CPU kernels at load
    offload_policy: list[str] = field(default_factory=list)  # -op
    # tools
    inputs: list[str] = field(default_factory=list)  # positional arguments of a tool (files, directories)
    outtype: str = "f16"  # convert --outtype
    mla_convention: str = "ik"  # convert --mla-convention
    system_prompt: str | None = None  # chat -sys
    chat_template: str | None = None  # chat --chat-template (a Jinja template overriding the file's)
    json: bool = False  # --json: machine-readable output
    verbose: bool = False  # -v

    def validate(self) -> None:
        for name in ("cache_type_k", "cache_type_v"):
            value = getattr(self, name)
            if value not in KV_CACHE_TYPES:
                flag = "-ctk" if name.endswith("k") else "-ctv"
                raise OptionError(f"{flag} {value}: unsupported KV cache type; use one of {', '.join(KV_CACHE_TYPES)}")
        if self.ctx_size < 0:
            raise OptionError(f"-c {self.ctx_size}: the context size cannot be negative (0 means the model's own)")
        if self.numa is not None and self.numa not in NUMA_MODES:
            raise OptionError(f"--numa {self.numa}: use one of {', '.join(NUMA_MODES)}")
        if self.batch_size < 1 or self.ubatch_size < 1:
            raise OptionError("-b and -ub must be at least 1")
        if self.temp < 0:
            raise OptionError(f"--temp {self.temp}: must be >= 0 (0 is greedy)")
        if not 0.0 <= self.top_p <= 1.0 or not 0.0 <= self.min_p <= 1.0:
            raise OptionError("--top-p and --min-p must lie between 0 and 1")
        if self.mla not in (0, 1, 2, 3):
            raise OptionError(f"-mla {self.mla}: use 0 (no MLA), 1, 2 or 3 (latent cache; see docs/moe.md)")
        if self.attn_max_batch < 0:
            raise OptionError(f"-amb {self.attn_max_batch}: must be >= 0 MiB (0: no limit)")
        self.ser_values()

    def ser_values(self) -> tuple[int, float]:
        """-ser K,T as (K, T); (-1, 0.0) when not set."""
        if self.ser is None:
            return -1, 0.0
        try:
            k, t = str(self.ser).split(",")
            return int(k), float(t)
        except ValueError:
            raise OptionError(f"-ser {self.ser}: expected K,T (e.g. -ser 6,0.5: keep at least 6 experts)") from None

    def compute_settings(self) -> ComputeSettings:
        """The `ComputeSettings` the model layer reads."""
        k, t = self.ser_values()
        return ComputeSettings(
            mla=self.mla,
            attn_max_bytes=int(self.attn_max_batch * MIB),
            fused_moe=self.fused_moe,
            ser_min_experts=k,
            ser_threshold=t,
            flash_attn=self.flash_attn,
        )

    def ignored_flags(self) -> list[str]:
        """Flags set to a non-default value that this version of kiln accepts but does not act on."""
        inert = {
            "n_gpu_layers": "-ngl",
            "override_tensor": "-ot",
            "tensor_split": "-ts",
            "main_gpu": "-mg",
            "split_mode": "-sm",
            "offload_policy": "-op",
        }
        defaults = {f.name: (f.default_factory() if callable(f.default_factory) else f.default) for f in fields(self)}
        return [flag for name, flag in inert.items() if getattr(self, name) != defaults[name]]
