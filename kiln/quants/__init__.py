"""Quant types: the registry (id, name, block size, bytes per block) and one module per family
with dequantize (and, later, quantize and repack)."""

from .registry import QUANT_TYPES, QuantType, dequantize, quant_type

__all__ = ["QUANT_TYPES", "QuantType", "dequantize", "quant_type"]
