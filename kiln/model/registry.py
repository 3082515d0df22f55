"""Architecture name (GGUF `general.architecture`) -> model class."""

from __future__ import annotations

from ..errors import ModelError
from .arch.gemma3 import Gemma3
from .arch.llama import Llama
from .arch.qwen2 import Qwen2
from .arch.qwen3 import Qwen3
from .hparams import HParams
from .layers import CausalLM, TensorSource

ARCHITECTURES: dict[str, type[CausalLM]] = {
    "llama": Llama,
    "qwen2": Qwen2,
    "qwen3": Qwen3,
    "gemma3": Gemma3,
}


def build_model(hp: HParams, tensors: TensorSource, source: str = "the model file") -> CausalLM:
    cls = ARCHITECTURES.get(hp.arch)
    if cls is None:
        raise ModelError(
            f"{source}: unknown architecture {hp.arch!r}; kiln runs {', '.join(sorted(ARCHITECTURES))}"
        )
    return cls(hp, tensors)
