"""Architecture name (GGUF `general.architecture`) -> model class."""

from __future__ import annotations

from ..errors import ModelError
from .arch.deepseek2 import Deepseek2
from .arch.gemma3 import Gemma3
from .arch.glm4moe import Glm4Moe
from .arch.llama import Llama
from .arch.qwen2 import Qwen2
from .arch.qwen3 import Qwen3
from .arch.qwen3moe import Qwen3Moe
from .hparams import HParams
from .layers import CausalLM, TensorSource
from .settings import ComputeSettings

ARCHITECTURES: dict[str, type[CausalLM]] = {
    "llama": Llama,
    "qwen2": Qwen2,
    "qwen3": Qwen3,
    "gemma3": Gemma3,
    "deepseek2": Deepseek2,
    "qwen3moe": Qwen3Moe,
    "glm4moe": Glm4Moe,
}


def build_model(
    hp: HParams, tensors: TensorSource, source: str = "the model file", settings: ComputeSettings | None = None
) -> CausalLM:
    cls = ARCHITECTURES.get(hp.arch)
    if cls is None:
        raise ModelError(
            f"{source}: unknown architecture {hp.arch!r}; kiln runs {', '.join(sorted(ARCHITECTURES))}"
        )
    return cls(hp, tensors, settings)
