"""Runtime: options, loading, KV cache, batching, sampling, and the Engine API."""

from .engine import Engine
from .options import Options
from .sampling import Sampler, SamplingParams

__all__ = ["Engine", "Options", "Sampler", "SamplingParams"]
