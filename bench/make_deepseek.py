"""Write a small random DeepSeek-V3-shaped GGUF for speed comparisons with ik_llama.cpp.

    python bench/make_deepseek.py OUT_DIR        # -> OUT_DIR/deepseek-v3-f16.gguf

The real model's attention geometry (kv_lora_rank 512, rope 64, nope 128, v 128, so a
576-value latent row, which ik_llama.cpp's MLA kernels need), scaled down elsewhere:
hidden 1024, 16 heads, 4 layers (1 dense), 32 routed experts (4 used) of 512, one shared
expert, sigmoid gating with groups, f16 weights (~330 MB). Made with transformers and
`kiln convert` (ik_llama.cpp's tensor convention), so both engines read the same file.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tiny_moe_models import make_tiny_moe_model  # noqa: E402

SHAPE = dict(
    hidden_size=1024,
    intermediate_size=2048,
    num_attention_heads=16,
    num_key_value_heads=16,
    num_hidden_layers=4,
    q_lora_rank=384,
    kv_lora_rank=512,
    qk_rope_head_dim=64,
    qk_nope_head_dim=128,
    v_head_dim=128,
    n_routed_experts=32,
    num_experts_per_tok=4,
    moe_intermediate_size=512,
    n_group=4,
    topk_group=2,
    max_position_embeddings=4096,
)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    _, path = make_tiny_moe_model("deepseek-v3", out, outtype="f16", **SHAPE)
    print(path)


if __name__ == "__main__":
    main()
