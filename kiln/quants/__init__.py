"""Quant types: the registry (id, name, block size, bytes per block) and one module per family
with dequantize, quantize and repack."""

from .registry import QUANT_TYPES, REQUIRES_IMATRIX, QuantType, dequantize, quant_type, quantize, repack

__all__ = ["QUANT_TYPES", "REQUIRES_IMATRIX", "QuantType", "dequantize", "quant_type", "quantize", "repack"]
