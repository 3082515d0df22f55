"""Models: hparams from GGUF metadata, shared layers, one small file per architecture.

Names are imported on first use (the settings module is needed without torch)."""

from importlib import import_module

_EXPORTS = {
    "ARCHITECTURES": ".registry",
    "build_model": ".registry",
    "CausalLM": ".layers",
    "LayerCache": ".layers",
    "TensorSource": ".layers",
    "HParams": ".hparams",
    "read_hparams": ".hparams",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
