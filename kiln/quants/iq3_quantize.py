"""Quantization (float32 -> bytes) of IQ3_XXS and IQ3_S, with optional importance weights."""

QUANTIZERS: dict = {}
