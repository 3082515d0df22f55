"""Models: hparams from GGUF metadata, shared layers, one small file per architecture."""

from .hparams import HParams, read_hparams
from .layers import CausalLM, LayerCache, TensorSource
from .registry import ARCHITECTURES, build_model

__all__ = ["ARCHITECTURES", "CausalLM", "HParams", "LayerCache", "TensorSource", "build_model", "read_hparams"]
