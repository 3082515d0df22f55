"""The ik_llama.cpp flags several subcommands share: the model, context and attention group
(`add_model_flags`) and the sampling group (`add_sampling_flags`)."""

from __future__ import annotations

import argparse


def add_model_flags(p: argparse.ArgumentParser, model_required: bool = False) -> None:
    g = p.add_argument_group("model and context")
    g.add_argument("-m", "--model", dest="model", required=model_required, help="GGUF file (first part of a split set is fine); default: SmolLM2-135M-Instruct Q4_1")
    g.add_argument("-c", "--ctx-size", dest="ctx_size", type=int, default=0, help="context size in tokens (0: the model's training context)")
    g.add_argument("-b", "--batch-size", dest="batch_size", type=int, default=2048, help="logical batch size for prompt processing")
    g.add_argument("-ub", "--ubatch-size", dest="ubatch_size", type=int, default=512, help="physical batch size for prompt processing")
    g.add_argument("-t", "--threads", dest="threads", type=int, default=0, help="CPU threads (0: all cores)")
    g.add_argument("-tb", "--threads-batch", dest="threads_batch", type=int, default=0, help="CPU threads for batches")
    g.add_argument("-ctk", "--cache-type-k", dest="cache_type_k", default="f16", help="K cache type (the latent cache with MLA): f32, f16, bf16, q8_0")
    g.add_argument("-ctv", "--cache-type-v", dest="cache_type_v", default="f16", help="V cache type: f32, f16, bf16, q8_0")
    g.add_argument("--no-mmap", dest="no_mmap", action="store_true", help="read the weights into memory instead of mapping the file")
    g.add_argument("-rtr", "--run-time-repack", dest="run_time_repack", action="store_true", help="read the weights into memory and prepare them all for the CPU kernels at load (docs/cpu.md)")
    g.add_argument("--numa", dest="numa", choices=("distribute", "isolate", "numactl"), help="thread placement on NUMA machines, as ik_llama.cpp's (docs/cpu.md)")
    m = p.add_argument_group("attention and experts")
    m.add_argument("-mla", "--mla-use", dest="mla", type=int, default=3, help="MLA mode for DeepSeek models: 0, 1, 2, 3 (default 3; see docs/moe.md)")
    m.add_argument("-amb", "--attention-max-batch", dest="attn_max_batch", type=int, default=256, help="max MiB of K*Q per attention chunk (0: no limit)")
    m.add_argument("-fmoe", "--fused-moe", dest="fused_moe", action="store_true", default=True, help="fuse the experts' up and gate products (default on)")
    m.add_argument("-no-fmoe", "--no-fused-moe", dest="fused_moe", action="store_false")
    m.add_argument("-ser", "--smart-expert-reduction", dest="ser", help="K,T: keep at least K experts, skip the others scoring below T x the best")
    m.add_argument("-fa", "--flash-attn", dest="flash_attn", nargs="?", const="on", default="on", help="accepted; kiln's attention is always exact")
    c = p.add_argument_group("accepted for ik_llama.cpp compatibility (not acted on by this version)")
    c.add_argument("-ngl", "--gpu-layers", "--n-gpu-layers", dest="n_gpu_layers", type=int, default=0)
    c.add_argument("-ot", "--override-tensor", dest="override_tensor", action="append", default=[])
    c.add_argument("-ts", "--tensor-split", dest="tensor_split")
    c.add_argument("-mg", "--main-gpu", dest="main_gpu", type=int, default=0)
    c.add_argument("-sm", "--split-mode", dest="split_mode")
    c.add_argument("-op", "--offload-policy", dest="offload_policy", action="append", default=[])


def add_sampling_flags(p: argparse.ArgumentParser, title: str = "generation") -> None:
    g = p.add_argument_group(title)
    g.add_argument("-n", "--n-predict", dest="n_predict", type=int, default=-1, help="tokens to generate (-1: until end of generation)")
    g.add_argument("-s", "--seed", dest="seed", type=int, default=-1, help="random seed (-1: random)")
    g.add_argument("--temp", dest="temp", type=float, default=0.8, help="temperature (0: greedy)")
    g.add_argument("--top-k", dest="top_k", type=int, default=40)
    g.add_argument("--top-p", dest="top_p", type=float, default=0.95)
    g.add_argument("--min-p", dest="min_p", type=float, default=0.05)
    g.add_argument("--repeat-penalty", dest="repeat_penalty", type=float, default=1.0)
    g.add_argument("--repeat-last-n", dest="repeat_last_n", type=int, default=64)
    g.add_argument("--ignore-eos", dest="ignore_eos", action="store_true")
