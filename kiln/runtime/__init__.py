"""Runtime: options, loading, KV cache, batching, sampling, and the Engine API.

Names are imported on first use, so that tools that need only `Options` (quantize, split)
do not load torch."""

from importlib import import_module

_EXPORTS = {
    "Engine": ".engine",
    "BatchItem": ".engine",
    "Options": ".options",
    "Sampler": ".sampling",
    "SamplingParams": ".sampling",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
