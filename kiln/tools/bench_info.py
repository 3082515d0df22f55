"""What `kiln bench` reports about the model and the machine, as llama-bench does.

The model description follows llama_model_desc: `ARCH SIZE FTYPE`, e.g. `llama 135M Q4_1`.
SIZE is the file's `general.size_label` when it has one, else a label from the parameter
count (ik_llama.cpp prints its own per-architecture table there, `?B` when the layer count
is not in it). FTYPE is ik_llama.cpp's name of `general.file_type` (`Q4_K - Medium`,
`IQ4_KS - 4.25 bpw`); a file without one gets the most common matrix type and ` (guessed)`.
Size and parameter count are llama-bench's: the sum over the model's tensors, where a model
with tied embeddings (no output.weight) counts token_embd.weight twice, as ik_llama.cpp's
duplicated output tensor does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..gguf import GGUFFile

# LLAMA_FTYPE_* -> llama_model_ftype_name (ik_llama.cpp's spelling)
FTYPE_NAMES = {
    0: "all F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K - Medium", 11: "Q3_K - Small", 12: "Q3_K - Medium", 13: "Q3_K - Large",
    14: "Q4_K - Small", 15: "Q4_K - Medium", 16: "Q5_K - Small", 17: "Q5_K - Medium", 18: "Q6_K",
    19: "IQ2_XXS - 2.0625 bpw", 20: "IQ2_XS - 2.3125 bpw", 21: "Q2_K - Small", 22: "IQ3_XS - 3.3 bpw",
    23: "IQ3_XXS - 3.0625 bpw", 24: "IQ1_S - 1.5625 bpw", 25: "IQ4_NL - 4.5 bpw", 26: "IQ3_S - 3.4375 bpw",
    27: "IQ3_S mix - 3.66 bpw", 28: "IQ2_S - 2.5 bpw", 29: "IQ2_M - 2.7 bpw", 30: "IQ4_XS - 4.25 bpw",
    31: "IQ1_M - 1.75 bpw", 32: "BF16", 33: "Q4_0_4_4", 34: "Q4_0_4_8", 35: "Q4_0_8_8",
    38: "MXFP4 - 4.25 bpw", 41: "Q1_0_G128 - 1.125 bpw",
    135: "Q6_0", 136: "IQ1_BN - 1.625 bpw Bitnet", 137: "IQ2_BN - 2.00 bpw Bitnet", 138: "IQ2_K - 2.375 bpw",
    139: "IQ3_K - 3.4325 bpw", 140: "IQ4_K - 4.5 bpw", 141: "IQ5_K - 5.5 bpw", 142: "IQ6_K - 6.6 bpw",
    145: "IQ4_KS - 4.25 bpw", 146: "IQ3_KL - 4 bpw", 147: "IQ2_KS - 2.1875 bpw", 148: "IQ4_KSS - 4.0 bpw",
    149: "Q8_KV", 150: "IQ5_KS - 5.25 bpw", 151: "IQ2_KT - 2.125 bpw", 152: "IQ3_KT - 3.125 bpw",
    153: "IQ4_KT - 4.0 bpw", 154: "IQ3_KS - 3.1875 bpw", 155: "IQ2_KL - 2.6875 bpw", 156: "IQ1_KT - 1.75 bpw",
    202: "Q4_0_R8 - 4.5 bpw", 207: "Q8_0_R8 - 8.5 bpw", 208: "Q5_0_R4 - 5.5 bpw", 210: "Q2_K_R4",
    211: "Q3_K_R4", 214: "Q4_K_R4", 216: "Q5_K_R4", 218: "Q6_K_R4", 219: "IQ2_XXS_R4 - 2.0625 bpw",
    220: "IQ2_XS_R4 - 2.3125 bpw", 223: "IQ3_XXS_R4 - 3.0625 bpw", 224: "IQ1_S_R4 - 1.5 bpw",
    225: "IQ4_NL_R4 - 4.5 bpw", 226: "IQ3_S_R4 - 3.4375 bpw", 229: "IQ2_M_R4 - 2.7 bpw",
    230: "IQ4_XS_R8 - 4.25 bpw", 231: "IQ1_M_R4 - 1.75 bpw", 232: "BF16_R16", 335: "Q6_0_R4 - 6.5 bpw",
    337: "IQ2_BN_R4 - 2.00 bpw Bitnet", 338: "IQ2_K_R4 - 2.375 bpw", 339: "IQ3_K_R4 - 3.4325 bpw",
    340: "IQ4_K_R4 - 4.5 bpw", 341: "IQ5_K_R4 - 5.5 bpw", 345: "IQ4_KS_R4 - 4.25 bpw",
    350: "IQ5_KS_R4 - 5.25 bpw", 351: "MXFP4_R8", 398: "Q8_KV_R8", 399: "Q8_K_R8",
}


@dataclass(frozen=True)
class ModelInfo:
    filename: str
    description: str  # llama_model_desc
    size: int  # bytes
    n_params: int


def size_label(n_params: int) -> str:
    """`135M`, `1.7B`, `8B`, `671B` from a parameter count."""
    if n_params < 1_000_000_000:
        return f"{n_params / 1e6:.0f}M"
    b = n_params / 1e9
    text = f"{b:.1f}" if b < 10 else f"{b:.0f}"
    return text.removesuffix(".0") + "B"


def ftype_name(gguf: GGUFFile) -> str:
    ftype = gguf.metadata.get("general.file_type")
    if ftype is not None:
        return FTYPE_NAMES.get(int(ftype), "unknown, may not work")
    matrices = Counter(t.type_name for t in gguf.tensors.values() if len(t.shape) >= 2)
    return (matrices.most_common(1)[0][0] if matrices else "unknown") + " (guessed)"


def model_info(path: str | Path) -> ModelInfo:
    with GGUFFile(path) as gguf:
        tensors = gguf.tensors
        size = sum(t.nbytes or 0 for t in tensors.values())
        n_params = sum(t.n_elements for t in tensors.values())
        file_params = n_params
        embd = tensors.get("token_embd.weight")
        if embd is not None and "output.weight" not in tensors:
            size += embd.nbytes or 0
            n_params += embd.n_elements
        arch = gguf.metadata.get("general.architecture", "unknown")
        label = gguf.metadata.get("general.size_label") or size_label(file_params)
        return ModelInfo(str(path), f"{arch} {label} {ftype_name(gguf)}", size, n_params)


def cpu_info() -> str:
    """The CPU's model name, as /proc/cpuinfo says it ('' elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
