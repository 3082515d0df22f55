"""`ComputeSettings`: the run-time choices that change how a model computes, not what.

They come from ik_llama.cpp's flags (`-mla`, `-amb`, `-fmoe`, `-ser`, `-fa`); the
runtime fills them from `Options`. The defaults are ik_llama.cpp's (common.h).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class ComputeSettings:
    # -mla: 0 = per-head K and V cache; 1 = latent cache, absorbed attention everywhere;
    # 2, 3 = latent cache, prompt batches of >= MLA_DECOMPRESS_MIN_TOKENS decompressed
    # through wkv_b (ik_llama.cpp's -mla 3 with -fa), absorbed attention otherwise.
    mla: int = 3
    # -amb, in bytes: the K*Q score buffer of one attention chunk; 0 = no limit
    attn_max_bytes: int = 256 * MIB
    fused_moe: bool = True  # -fmoe: up and gate of the experts in one matrix product
    ser_min_experts: int = -1  # -ser K,T: keep at least K experts per token ...
    ser_threshold: float = 0.0  # ... and drop the others whose routing score is below T x the best
    flash_attn: bool = True  # -fa

    @property
    def ser_active(self) -> bool:
        return self.ser_min_experts > 0 and self.ser_threshold > 0


# ik_llama.cpp decompresses the latent cache for prompt batches from 128 tokens (pp_opt)
MLA_DECOMPRESS_MIN_TOKENS = 128
